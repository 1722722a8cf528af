"""What a new node of a pool label is: its image, its node record, its `LaunchSpec` and the
runner's `LaunchOptions` (from provider, pool and label config and the request)."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nodepool_ng.config.models import PoolLabelConfig
from nodepool_ng.drivers.base import META_NODE_ID, META_POOL_NAME, META_PROVIDER_NAME, LaunchSpec
from nodepool_ng.launcher.runner import LaunchOptions
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.quota import Quota
from nodepool_ng.model.request import NodeRequest

if TYPE_CHECKING:
    from nodepool_ng.launcher.poolctx import PoolContext

log = logging.getLogger("nodepool_ng.launcher.pool")


@dataclass
class ImageInfo:
    """What the label's image contributes to the node and the launch."""

    image: str  # what the driver boots
    image_id: str  # the node's image_id field
    username: str | None = "zuul"
    python_path: str | None = "auto"
    shell_type: str | None = None
    connection_type: str = "ssh"
    connection_port: int = 22
    config_drive: bool | None = None

    def node_fields(self) -> dict[str, Any]:
        """The node record's fields that come from the image."""
        return {"image_id": self.image_id, "username": self.username,
                "python_path": self.python_path, "shell_type": self.shell_type,
                "connection_type": self.connection_type,
                "connection_port": self.connection_port}


def image_for(ctx: PoolContext, label: PoolLabelConfig) -> ImageInfo | None:
    """The label's image, or None when it is not available (no READY upload)."""
    provider = ctx.provider
    if label.cloud_image:
        ci = provider.cloud_image(label.cloud_image)
        if ci is None:
            return None
        return ImageInfo(
            image=ci.image_id or ci.image_name or ci.name,
            image_id=ci.name,
            username=ci.username or "zuul",
            python_path=ci.python_path,
            shell_type=ci.shell_type,
            connection_type=ci.connection_type,
            connection_port=ci.connection_port,
            config_drive=ci.config_drive,
        )
    if label.diskimage:
        upload = ctx.zk.ready_upload(label.diskimage, provider.name)
        if upload is None:
            return None
        pdi = provider.diskimage(label.diskimage)
        di = ctx.config.diskimages.get(label.diskimage)
        return ImageInfo(
            image=upload[1],
            image_id=upload[0],
            username=di.username if di else "zuul",
            python_path=di.python_path if di else "auto",
            shell_type=di.shell_type if di else None,
            connection_type=pdi.connection_type if pdi else "ssh",
            connection_port=pdi.connection_port if pdi else 22,
            config_drive=pdi.config_drive if pdi else None,
        )
    return None


def new_node(ctx: PoolContext, label: str, image: ImageInfo, request: NodeRequest,
             cost: Quota) -> Node:
    """The `init` record of a node to launch for `request` (no id yet)."""
    zones = ctx.pool.availability_zones
    node = Node(
        state=NodeState.INIT, provider=ctx.provider.name, pool=ctx.pool.name, type=[label],
        allocated_to=request.id, launcher=ctx.pool_id,
        cloud=ctx.provider.cloud, region=ctx.provider.region_name,
        az=random.choice(zones) if zones else None,
        attributes=dict(ctx.pool.node_attributes) or None,
        # As upstream: the node counts for this tenant (tenant-resource-limits).
        tenant_name=request.tenant_name, requestor=request.requestor,
        resources=cost.as_dict(), **image.node_fields(),
    )
    node.created_time = node.state_time
    return node


def spec_for(
    ctx: PoolContext, node: Node, label: PoolLabelConfig, image: ImageInfo, request: NodeRequest
) -> LaunchSpec:
    assert node.id is not None
    provider, pool = ctx.provider, ctx.pool
    metadata: dict[str, str] = {
        "groups": f"{provider.name},{image.image_id.rsplit('/', 1)[-1]},{label.name}",
    }
    metadata.update({k: str(v) for k, v in label.instance_properties.items()})
    for key, template in label.dynamic_instance_properties.items():
        try:
            metadata[key] = template.format(request=_RequestFormat(request))
        except Exception as e:  # a bad template must not break the launch
            log.warning("dynamic-instance-properties %s: %s", key, e)
    metadata[META_NODE_ID] = node.id
    metadata[META_POOL_NAME] = pool.name
    metadata[META_PROVIDER_NAME] = provider.name
    return LaunchSpec(
        hostname=f"np{node.id}",
        node_id=node.id,
        provider_name=provider.name,
        pool_name=pool.name,
        label_name=label.name,
        image=image.image,
        flavor_name=label.flavor_name,
        min_ram=label.min_ram,
        key_name=label.key_name,
        availability_zone=node.az,
        networks=tuple(pool.networks_for(label)),
        security_groups=tuple(pool.security_groups),
        auto_floating_ip=pool.auto_floating_ip,
        config_drive=image.config_drive,
        boot_from_volume=label.boot_from_volume,
        volume_size=label.volume_size if label.boot_from_volume else None,
        userdata=label.userdata,
        metadata=metadata,
    )


def options_for(
    ctx: PoolContext, label: PoolLabelConfig, image: ImageInfo, request: NodeRequest
) -> LaunchOptions:
    return LaunchOptions(
        host_key_checking=ctx.pool.host_key_checking_for(label),
        connection_type=image.connection_type,
        connection_port=image.connection_port,
        launch_timeout=float(ctx.provider.launch_timeout),
        boot_timeout=float(ctx.provider.boot_timeout),
        retries=max(1, ctx.provider.launch_retries),
        requestor=request.requestor,
    )


# `{request.<attr>}` in dynamic-instance-properties: upstream's name -> NodeRequest field.
_REQUEST_FORMAT_FIELDS = {
    "id": "id", "labels": "node_types", "requestor": "requestor",
    "requestor_data": "requestor_data", "relative_priority": "relative_priority",
    "event_id": "event_id", "created_time": "created_time", "tenant_name": "tenant_name",
}


class _RequestFormat:
    """`{request.<attr>}` for dynamic-instance-properties (upstream's attribute names)."""

    def __init__(self, request: NodeRequest) -> None:
        for name, attr in _REQUEST_FORMAT_FIELDS.items():
            setattr(self, name, getattr(request, attr))

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"request has no attribute {name!r}")

"""`PoolContext`: what a pool worker and its request handlers share.

Config of the provider-pool, its launcher-pool id, the ZooKeeper view, the provider runner,
quota bookkeeping (label costs, our usage, the cloud's headroom) and LaunchSpec building.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nodepool_ng.config.models import (
    Config,
    PoolConfig,
    PoolLabelConfig,
    ProviderConfig,
    StaticNodeConfig,
)
from nodepool_ng.drivers import registry
from nodepool_ng.drivers.base import (
    META_NODE_ID,
    META_POOL_NAME,
    META_PROVIDER_NAME,
    LaunchSpec,
    ProviderAdapter,
)
from nodepool_ng.launcher import quota as q
from nodepool_ng.launcher.assignment import PoolInfo
from nodepool_ng.launcher.ledger import PoolLedger
from nodepool_ng.launcher.runner import LaunchOptions, ProviderRunner
from nodepool_ng.launcher.stats import LauncherStats
from nodepool_ng.launcher.tenant_limits import TenantLimiter
from nodepool_ng.launcher.zkview import LauncherZK, change_idle_node, mark_deleting
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.quota import Quota
from nodepool_ng.model.request import NodeRequest

log = logging.getLogger("nodepool_ng.launcher.pool")

CLOUD_QUOTA_TTL = 5.0  # seconds; the cloud side of quota is re-read at most this often


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


@dataclass
class PoolContext:
    config: Config
    provider: ProviderConfig
    pool: PoolConfig
    pool_id: str
    zk: LauncherZK
    adapter: ProviderAdapter
    runner: ProviderRunner
    wake: Callable[[], None]
    stats: LauncherStats = field(default_factory=LauncherStats)
    cloud_quota_ttl: float = CLOUD_QUOTA_TTL
    tenants: TenantLimiter = field(default_factory=TenantLimiter)  # tenant-resource-limits
    # What this pool promised that the node cache does not show yet.
    ledger: PoolLedger = field(default_factory=PoolLedger)
    _label_costs: dict[str, Quota] = field(default_factory=dict)
    _cloud: tuple[float, Quota] | None = None
    _last_free: float = 0.0
    _refreshing: bool = False
    _quota_unreadable: bool = False  # the last read failed (logged once)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- identity --------------------------------------------------------------------------
    def info(self, paused: bool = False) -> PoolInfo:
        return PoolInfo(
            id=self.pool_id,
            provider_name=self.provider.name,
            name=self.pool.name,
            supported_labels=self.pool.label_names,
            priority=self.provider.pool_priority(self.pool),
            paused=paused,
        )

    def owns(self, node: Node) -> bool:
        return node.provider == self.provider.name and node.pool == self.pool.name

    def static_host(self, node: Node) -> StaticNodeConfig | None:
        """The configured host behind a node of this (static) pool."""
        node_host = registry.get(self.provider.driver).node_host
        return node_host(self.pool, node) if node_host is not None else None

    # -- images and specs ------------------------------------------------------------------
    def image_for(self, label: PoolLabelConfig) -> ImageInfo | None:
        """The label's image, or None when it is not available (no READY upload)."""
        if label.cloud_image:
            ci = self.provider.cloud_image(label.cloud_image)
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
            upload = self.zk.ready_upload(label.diskimage, self.provider.name)
            if upload is None:
                return None
            pdi = self.provider.diskimage(label.diskimage)
            di = self.config.diskimages.get(label.diskimage)
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

    def spec_for(
        self, node: Node, label: PoolLabelConfig, image: ImageInfo, request: NodeRequest
    ) -> LaunchSpec:
        assert node.id is not None
        metadata: dict[str, str] = {
            "groups": f"{self.provider.name},{image.image_id.rsplit('/', 1)[-1]},{label.name}",
        }
        metadata.update({k: str(v) for k, v in label.instance_properties.items()})
        for key, template in label.dynamic_instance_properties.items():
            try:
                metadata[key] = template.format(request=_RequestFormat(request))
            except Exception as e:  # a bad template must not break the launch
                log.warning("dynamic-instance-properties %s: %s", key, e)
        metadata[META_NODE_ID] = node.id
        metadata[META_POOL_NAME] = self.pool.name
        metadata[META_PROVIDER_NAME] = self.provider.name
        return LaunchSpec(
            hostname=f"np{node.id}",
            node_id=node.id,
            provider_name=self.provider.name,
            pool_name=self.pool.name,
            label_name=label.name,
            image=image.image,
            flavor_name=label.flavor_name,
            min_ram=label.min_ram,
            key_name=label.key_name,
            availability_zone=node.az,
            networks=tuple(self.pool.networks_for(label)),
            security_groups=tuple(self.pool.security_groups),
            auto_floating_ip=self.pool.auto_floating_ip,
            config_drive=image.config_drive,
            boot_from_volume=label.boot_from_volume,
            volume_size=label.volume_size if label.boot_from_volume else None,
            userdata=label.userdata,
            metadata=metadata,
        )

    def options_for(
        self, label: PoolLabelConfig, image: ImageInfo, request: NodeRequest
    ) -> LaunchOptions:
        return LaunchOptions(
            host_key_checking=self.pool.host_key_checking_for(label),
            connection_type=image.connection_type,
            connection_port=image.connection_port,
            launch_timeout=float(self.provider.launch_timeout),
            boot_timeout=float(self.provider.boot_timeout),
            retries=max(1, self.provider.launch_retries),
            requestor=request.requestor,
        )

    def pick_az(self) -> str | None:
        zones = self.pool.availability_zones
        return random.choice(zones) if zones else None

    # -- quota -----------------------------------------------------------------------------
    def label_cost(self, label_name: str) -> Quota:
        cost = self._label_costs.get(label_name)
        if cost is None:
            label = self.pool.label(label_name)
            if label is None:
                return Quota.of(instances=1)
            spec = LaunchSpec(
                hostname="",
                node_id="",
                provider_name=self.provider.name,
                pool_name=self.pool.name,
                label_name=label.name,
                image="",
                flavor_name=label.flavor_name,
                min_ram=label.min_ram,
                boot_from_volume=label.boot_from_volume,
                volume_size=label.volume_size if label.boot_from_volume else None,
            )
            try:
                cost = self.adapter.get_quota_for_label(spec)
            except Exception as e:
                log.warning("%s: cannot get the cost of label %s: %s", self.pool_id, label_name, e)
                return Quota.of(instances=1)
            self._label_costs[label_name] = cost
        return cost

    def reserve(self, label_name: str) -> int | None:
        """Promise quota for one new `label_name` node to an accept running in the background;
        a token, or None when the pool has no room (the accept would pause)."""
        if not self.has_room(label_name):
            return None
        return self.ledger.reserve(self.label_cost(label_name))

    def _usage(self, nodes: Iterable[Node], pool_only: bool) -> Quota:
        seen: set[str] = set()
        costs = []
        for node in nodes:
            if node.provider != self.provider.name or node.state is NodeState.DELETED:
                continue
            if node.id:
                seen.add(node.id)
            if pool_only and node.pool != self.pool.name:
                continue
            costs.append(_node_cost(node, self))
        costs.extend(self.ledger.pending_costs(seen))
        return Quota.total(costs)

    def cloud_limit(self) -> Quota:
        """The cloud's limits minus unmanaged usage, re-read at most every `cloud_quota_ttl`.

        Only the first read blocks; later ones refresh in the background and return the
        previous value meanwhile, so the pool worker never waits behind a burst of API calls
        (the value may be stale by up to a TTL plus one refresh either way)."""
        if self.pool.ignore_provider_quota:
            return Quota()
        now = time.monotonic()
        cloud = self._cloud
        if cloud is not None and now - cloud[0] < self.cloud_quota_ttl:
            return cloud[1]
        if cloud is not None:
            with self._lock:
                if self._refreshing:
                    return cloud[1]
                self._refreshing = True
            threading.Thread(target=self._refresh_cloud_limit, name=f"quota-{self.pool_id[-8:]}",
                             daemon=True).start()
            return cloud[1]
        return self._refresh_cloud_limit()

    def _refresh_cloud_limit(self) -> Quota:
        now = time.monotonic()
        try:
            limits = self.adapter.get_quota_limits()
            known = {n.id for n in self.zk.nodes() if n.id and n.provider == self.provider.name}
            unmanaged = q.unmanaged_usage(self.adapter.list_instances(), self.provider.name, known)
            headroom = q.cloud_headroom(limits, unmanaged)
        except Exception as e:
            # Once per outage: the driver backs off, so each TTL would repeat the same line.
            if not self._quota_unreadable:
                log.warning("%s: cannot read cloud quota (using the last known): %s",
                            self.pool_id, e)
            self._quota_unreadable = True
            headroom = self._cloud[1] if self._cloud else Quota()
        else:
            if self._quota_unreadable:
                log.info("%s: cloud quota readable again", self.pool_id)
            self._quota_unreadable = False
        self._cloud = (now, headroom)
        with self._lock:
            self._refreshing = False
        return headroom

    def invalidate_cloud_quota(self) -> None:
        self._cloud = None

    def decline_reason(self, request: NodeRequest) -> str | None:
        """Why this pool can never serve `request`, or None."""
        if not self.provider.launches_servers:
            return static_decline_reason(self.pool, request)
        if self.pool.max_servers is not None and self.pool.max_servers <= 0:
            return "pool is disabled by max-servers"
        total = Quota()
        for label_name in request.node_types:
            label = self.pool.label(label_name)
            if label is None:
                return f"label {label_name} is not served by this pool"
            if self.image_for(label) is None:
                return f"image of label {label_name} is not available"
            total = total + self.label_cost(label_name)
        if not q.fits_when_empty(
            total, self.pool.quota_limits(), self.cloud_limit(), self.pool.ignore_provider_quota
        ):
            return "request exceeds the pool or cloud quota"
        return None

    def has_room(self, label_name: str) -> bool:
        """Room to launch another `label_name` node (never in a static pool)."""
        if not self.provider.launches_servers:
            return False
        nodes = self.zk.nodes()
        return q.has_remaining(
            self.label_cost(label_name),
            self.pool.quota_limits(),
            self._usage(nodes, pool_only=True),
            self.cloud_limit(),
            self._usage(nodes, pool_only=False),
            self.pool.ignore_provider_quota,
        )

    def at_concurrency_limit(self) -> bool:
        in_flight = self.runner.active_launches + self.ledger.reservations
        limit = self.provider.max_concurrency
        return (limit >= 0 and in_flight >= limit) or not self.runner.launch_allowed(in_flight)

    def free_oldest_unused(self) -> None:
        """At quota: delete the oldest READY unallocated node of this pool (once in a while).
        Not in a static pool: its nodes are hosts, and every one of them is as good."""
        if not self.provider.launches_servers:
            return
        nodes = [n for n in self.zk.nodes() if self.owns(n)]
        if any(n.state is NodeState.DELETING for n in nodes):
            return  # room is coming
        if time.monotonic() - self._last_free < 1.0:
            return
        idle = sorted(
            (
                n
                for n in nodes
                if n.state is NodeState.READY and not n.allocated_to and not self.zk.node_locked(n)
            ),
            key=lambda n: n.state_time or 0.0,
        )
        for node in idle:
            if change_idle_node(self.zk, node.id or "", mark_deleting) is not None:
                log.info("%s: at quota, deleting oldest unused node %s", self.pool_id, node.id)
                self._last_free = time.monotonic()
                return


def static_decline_reason(pool: PoolConfig, request: NodeRequest) -> str | None:
    """Why a static pool can never serve `request` (upstream would keep such a request
    waiting forever): a label none of its hosts has, or more nodes than its hosts' slots can
    hold at once. Or a request that does not take existing nodes (`reuse: false`, as
    min-ready requests): a static pool has nothing else to give."""
    if not request.reuse:
        return "the request does not reuse nodes; a static pool only has registered ones"
    for label_name in request.node_types:
        if not any(label_name in h.labels for h in pool.nodes):
            return f"label {label_name} is not served by this pool"
    if not _slots_fit(list(request.node_types), pool.nodes):
        return (f"request wants {len(request.node_types)} nodes {sorted(request.node_types)}; "
                "this pool's hosts cannot hold them at once")
    return None


def _slots_fit(labels: list[str], hosts: tuple[StaticNodeConfig, ...]) -> bool:
    """Whether every wanted label gets a host slot of its own (bipartite matching with
    augmenting paths; requests and pools are small)."""
    slot_hosts = [h for h in hosts for _ in range(h.max_parallel_jobs)]
    holder: list[int | None] = [None] * len(slot_hosts)  # per slot: the label it holds

    def place(i: int, seen: set[int]) -> bool:
        for s, host in enumerate(slot_hosts):
            if labels[i] in host.labels and s not in seen:
                seen.add(s)
                held = holder[s]
                if held is None or place(held, seen):
                    holder[s] = i
                    return True
        return False

    return all(place(i, set()) for i in range(len(labels)))


def _node_cost(node: Node, ctx: PoolContext) -> Quota:
    if node.resources:
        return Quota({k: float(v) for k, v in node.resources.items()})
    return ctx.label_cost(node.label or "")


class _RequestFormat:
    """`{request.<attr>}` for dynamic-instance-properties (upstream's attribute names)."""

    def __init__(self, request: NodeRequest) -> None:
        self.id = request.id
        self.labels = request.node_types
        self.requestor = request.requestor
        self.requestor_data = request.requestor_data
        self.relative_priority = request.relative_priority
        self.event_id = request.event_id
        self.created_time = request.created_time
        self.tenant_name = request.tenant_name

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"request has no attribute {name!r}")

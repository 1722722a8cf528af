"""The small interface between the launcher/builder core and a cloud.

The core owns ZooKeeper, quota, retries, host-key scanning and leak cleanup. A driver only
talks to its cloud. Launches and deletes are state machines whose `advance()` never blocks for
long: the driver runs slow API calls in its own bounded executor and `advance()` checks on
them, so one runner thread per provider can drive hundreds of launches at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from nodepool_ng.model.quota import Quota

# Metadata keys every nodepool-created cloud resource carries (upstream-compatible).
META_NODE_ID = "nodepool_node_id"
META_POOL_NAME = "nodepool_pool_name"
META_PROVIDER_NAME = "nodepool_provider_name"
META_BUILD_ID = "nodepool_build_id"
META_UPLOAD_ID = "nodepool_upload_id"


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a driver needs to create one server. Built by the launcher from config."""

    hostname: str  # server name, "np<node id>"
    node_id: str
    provider_name: str
    pool_name: str
    label_name: str
    image: str  # cloud image name or id, or the external id of a diskimage upload
    flavor_name: str | None = None
    min_ram: int | None = None
    key_name: str | None = None
    availability_zone: str | None = None
    networks: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    auto_floating_ip: bool = True
    config_drive: bool | None = None
    boot_from_volume: bool = False
    volume_size: int | None = None
    userdata: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)  # includes META_* keys


@dataclass(frozen=True)
class Instance:
    """A server as the cloud reports it, with the addresses nodepool hands to Zuul."""

    external_id: str
    name: str
    status: str  # driver-neutral: "building", "ready", "error", "deleting"
    metadata: Mapping[str, str] = field(default_factory=dict)
    interface_ip: str | None = None
    public_ipv4: str | None = None
    private_ipv4: str | None = None
    public_ipv6: str | None = None
    host_id: str | None = None
    cloud: str | None = None
    region: str | None = None
    az: str | None = None
    fault: str | None = None  # the cloud's fault message when status is "error"
    resources: Quota | None = None  # flavor-derived cost, when known

    @property
    def node_id(self) -> str | None:
        return self.metadata.get(META_NODE_ID)

    @property
    def provider_name(self) -> str | None:
        return self.metadata.get(META_PROVIDER_NAME)


@dataclass(frozen=True)
class Resource:
    """A cloud resource other than a server that cleanup may need to delete.

    `leak_interval` is set by the driver on a resource its `leak_candidates()` reports:
    nothing claims it now (an unattached floating IP, a DOWN port no server uses, a volume
    left `available`), and the launcher deletes it once it is reported so in consecutive
    passes at least `leak_interval` seconds apart (0: two passes). A candidate whose
    metadata names a node (`nodepool_node_id`) is spared while that node's record exists.
    None: not the launcher's to delete (images and snapshots are the builder's).

    `listed_at` (time.monotonic()) is when the cloud was asked, for a driver that lists a
    kind less often than each pass and reports the last listing in between: the interval is
    measured between listings, and a resource is deleted only on a pass with a new listing.
    None: listed now."""

    kind: str  # the driver's name for it: "floatingip", "port", "image", "volume", ...
    external_id: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    status: str | None = None
    leak_interval: float | None = None
    listed_at: float | None = None


class StateMachine(Protocol):
    """One launch or delete. `advance()` returns quickly; call it until `complete`.

    A create machine's `advance()` returns the Instance once it is ACTIVE with its addresses
    (and None before). It raises QuotaExceeded when the cloud refuses for quota, LaunchError
    (or LaunchTimeout) on failure; the core then deletes what was made and may retry.
    `external_id` is set as soon as the cloud has assigned one, so a failed launch can be
    cleaned up and a crashed launcher's leftovers can be found.
    """

    complete: bool
    external_id: str | None

    def advance(self) -> Instance | None: ...


class ProviderAdapter(Protocol):
    """A cloud endpoint for one provider. Long-lived; survives config reloads when unchanged."""

    def get_create_state_machine(
        self, spec: LaunchSpec, log: logging.LoggerAdapter[logging.Logger] | logging.Logger
    ) -> StateMachine: ...

    def get_delete_state_machine(
        self, external_id: str, log: logging.LoggerAdapter[logging.Logger] | logging.Logger
    ) -> StateMachine: ...

    def list_instances(self) -> Iterable[Instance]:
        """Every server in the cloud (managed or not), for quota and leak cleanup."""
        ...

    def get_quota_limits(self) -> Quota:
        """The cloud's own limits (instances, cores, ram); unlimited where it has none."""
        ...

    def get_quota_for_label(self, spec: LaunchSpec) -> Quota:
        """What one server of this spec costs (instances=1, the flavor's cores and ram)."""
        ...

    def list_resources(self) -> Iterable[Resource]:
        """The provider's resources other than servers (floating IPs, ports, images,
        volumes... as the driver has them), with their metadata."""
        ...

    def leak_candidates(self) -> Iterable[Resource]:
        """The resources nothing claims now, each with its `leak_interval`, for the
        launcher's leak cleanup (what the provider's config asks to clean; [] for none).
        Called once per cleanup pass: list only what may be a candidate."""
        ...

    def delete_resource(self, resource: Resource) -> None: ...

    def get_console_log(self, external_id: str) -> str: ...

    def set_progress_listener(self, listener: Callable[[], None] | None) -> None:
        """`listener` is called (from any thread) whenever a machine may advance: an API
        call finished, a server list arrived. Lets the runner react at once, not poll."""
        ...

    def stop(self) -> None:
        """Shut down executors; called when the provider is removed or the daemon stops."""
        ...


class ImageAdapter(Protocol):
    """Image upload side of a cloud, used by the builder."""

    @property
    def image_format(self) -> str:
        """The disk format the cloud wants (openstacksdk cloud config `image_format`)."""
        ...

    def upload_image(self, name: str, filename: str, disk_format: str | None,
                     metadata: Mapping[str, str], timeout: float,
                     md5: str | None = None, sha256: str | None = None) -> str:
        """Upload and wait until usable; returns the external id. One attempt: raises
        TemporaryCloudError (worth retrying) or PermanentCloudError. `md5`/`sha256` are the
        file's checksums when known (the builder's checksum files)."""
        ...

    def delete_image(self, external_id: str) -> None: ...

    def list_images(self) -> Iterable[Resource]:
        """Images with their properties (nodepool_build_id, ...) as metadata."""
        ...

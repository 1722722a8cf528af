"""Validated configuration as frozen dataclasses.

Field names are the YAML keys in snake_case and defaults are upstream Nodepool's.
Everything compares by value, so after a reload `old.providers[name] == new.providers[name]`
tells whether a provider changed. Lists are tuples; dicts are plain dicts typed as `Mapping`
(read-only by convention) so instances stay copyable and picklable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from nodepool_ng.model.quota import CORES, INSTANCES, RAM, Quota

VOLUMES = "volumes"
VOLUME_GB = "volume-gb"

DEFAULT_CONNECTION_PORTS: Mapping[str, int] = {"ssh": 22, "winrm": 5986}


def default_connection_port(connection_type: str) -> int:
    return DEFAULT_CONNECTION_PORTS.get(connection_type, 22)


@dataclass(frozen=True)
class LabelConfig:
    name: str
    min_ready: int = 0
    max_ready_age: int = 0  # seconds; 0 = ready nodes never expire


@dataclass(frozen=True)
class ZooKeeperServerConfig:
    host: str
    port: int = 2281
    chroot: str | None = None


@dataclass(frozen=True)
class ZooKeeperTLSConfig:
    cert: str
    key: str
    ca: str


@dataclass(frozen=True)
class ApiTokenConfig:
    """`webapp.api-tokens[]`: one bearer token of the REST request API. `name` is the
    requestor of its node requests; `labels` None allows every label; `max_nodes` None: no
    limit on the nodes it holds and has requested at once."""

    name: str
    secret: str = field(repr=False)
    labels: tuple[str, ...] | None = None
    max_nodes: int | None = None


@dataclass(frozen=True)
class WebappConfig:
    port: int = 8005
    listen_address: str = "0.0.0.0"
    api_tokens: tuple[ApiTokenConfig, ...] = ()  # none: the REST request API is off


@dataclass(frozen=True)
class MqttTLSConfig:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class MqttConfig:
    """`mqtt`: where the daemons publish their events (doc/events.md)."""

    host: str
    port: int = 1883
    topic_prefix: str = "nodepool"
    qos: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: MqttTLSConfig | None = None


@dataclass(frozen=True)
class TenantResourceLimitConfig:
    """`tenant-resource-limits[]`: `limits` holds the `max-*` keys as written (any name)."""

    tenant_name: str
    limits: Mapping[str, int] = field(default_factory=dict)

    def quota(self) -> Quota:
        """As a Quota limit: max-servers -> instances, max-cores -> cores, max-X -> X."""
        names = {"max-servers": INSTANCES, "max-cores": CORES, "max-ram": RAM}
        out: dict[str, float | None] = {}
        for key, value in self.limits.items():
            name = names.get(key, key[4:] if key.startswith("max-") else key)
            out[name] = value
        return Quota.limits(
            cores=out.pop(CORES, None),
            instances=out.pop(INSTANCES, None),
            ram=out.pop(RAM, None),
            **out,
        )


@dataclass(frozen=True)
class DiskImageConfig:
    """A buildable top-level diskimage, after parent inheritance (abstract ones are dropped)."""

    name: str
    parent: str | None = None
    elements: tuple[str, ...] = ()
    release: str = ""
    env_vars: Mapping[str, str] = field(default_factory=dict)
    formats: tuple[str, ...] = ()  # explicit; empty = derived from the providers' image format
    keep_formats: tuple[str, ...] = ()
    delete_after_upload: bool = False
    rebuild_age: int = 86400
    build_timeout: int = 28800
    dib_cmd: str = "disk-image-create"
    pause: bool = False
    username: str = "zuul"
    python_path: str = "auto"
    shell_type: str | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)

    @property
    def elements_str(self) -> str:
        """Elements as diskimage-builder takes them (space separated)."""
        return " ".join(self.elements)


@dataclass(frozen=True)
class ProviderDiskImageConfig:
    name: str
    pause: bool = False
    meta: Mapping[str, str] = field(default_factory=dict)
    config_drive: bool | None = None
    connection_type: str = "ssh"
    connection_port: int = 22


@dataclass(frozen=True)
class CloudImageConfig:
    name: str
    image_id: str | None = None
    image_name: str | None = None
    config_drive: bool | None = None
    username: str | None = None
    python_path: str = "auto"
    shell_type: str | None = None
    connection_type: str = "ssh"
    connection_port: int = 22

    @property
    def external_name(self) -> str:
        """What to look up in the cloud: image-id, else image-name, else the name."""
        return self.image_id or self.image_name or self.name


@dataclass(frozen=True)
class PoolLabelConfig:
    name: str
    diskimage: str | None = None
    cloud_image: str | None = None
    flavor_name: str | None = None
    min_ram: int | None = None
    key_name: str | None = None
    console_log: bool = False
    boot_from_volume: bool = False
    volume_size: int = 50
    instance_properties: Mapping[str, str] = field(default_factory=dict)
    dynamic_instance_properties: Mapping[str, str] = field(default_factory=dict)
    userdata: str | None = None
    networks: tuple[str, ...] | None = None  # None = the pool's
    host_key_checking: bool | None = None  # None = the pool's


@dataclass(frozen=True)
class StaticNodeConfig:
    """One host of a static pool; `max_parallel_jobs` nodes are registered."""

    name: str  # hostname or address
    labels: tuple[str, ...]
    username: str = "zuul"
    timeout: int = 5  # seconds for the liveness check / host-key scan
    host_key_checking: bool = True
    host_key: tuple[str, ...] = ()  # keys known in advance ("<type> <base64>")
    connection_port: int = 22
    connection_type: str = "ssh"
    shell_type: str | None = None
    max_parallel_jobs: int = 1
    python_path: str = "auto"

    @property
    def identity(self) -> tuple[str, str, int]:
        """What names the host across config changes (upstream's node tuple)."""
        return (self.name, self.username, self.connection_port)


LabelT = TypeVar("LabelT", bound="NamedModel")


class PoolLookups(Generic[LabelT]):
    """The label look-ups every driver's pool model offers, written once."""

    labels: tuple[LabelT, ...]

    def label(self, name: str) -> LabelT | None:
        for label in self.labels:
            if label.name == name:
                return label
        return None

    @property
    def label_names(self) -> frozenset[str]:
        return frozenset(label.name for label in self.labels)


@dataclass(frozen=True)
class PoolConfig(PoolLookups[PoolLabelConfig]):
    name: str
    max_servers: int | None = None  # None = unlimited
    max_cores: int | None = None
    max_ram: int | None = None
    max_volumes: int | None = None
    max_volume_gb: int | None = None
    ignore_provider_quota: bool = False
    availability_zones: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    auto_floating_ip: bool = True
    host_key_checking: bool = True
    node_attributes: Mapping[str, object] = field(default_factory=dict)
    priority: int | None = None  # None = the provider's
    labels: tuple[PoolLabelConfig, ...] = ()
    nodes: tuple[StaticNodeConfig, ...] = ()  # static driver: the hosts (labels derive)

    def networks_for(self, label: PoolLabelConfig) -> tuple[str, ...]:
        return self.networks if label.networks is None else label.networks

    def host_key_checking_for(self, label: PoolLabelConfig) -> bool:
        if label.host_key_checking is None:
            return self.host_key_checking
        return label.host_key_checking

    def quota_limits(self) -> Quota:
        """The pool's own limits (unset = unlimited)."""
        return Quota.limits(
            cores=self.max_cores,
            instances=self.max_servers,
            ram=self.max_ram,
            **{VOLUMES: self.max_volumes, VOLUME_GB: self.max_volume_gb},
        )


PoolT = TypeVar("PoolT", bound="PoolModel")
DiskImageT = TypeVar("DiskImageT", bound="NamedModel")
CloudImageT = TypeVar("CloudImageT", bound="NamedModel")


class NamedModel(Protocol):
    @property
    def name(self) -> str: ...


class PoolModel(NamedModel, Protocol):
    @property
    def priority(self) -> int | None: ...
    def label(self, name: str) -> Any: ...
    @property
    def label_names(self) -> frozenset[str]: ...


class ProviderLookups(Generic[PoolT, DiskImageT, CloudImageT]):
    """The look-ups every driver's provider model offers, written once: a frozen dataclass
    subclasses this with its own pool, provider-diskimage and cloud-image models."""

    name: str
    priority: int
    pools: tuple[PoolT, ...]
    diskimages: tuple[DiskImageT, ...]
    cloud_images: tuple[CloudImageT, ...]

    def pool(self, name: str) -> PoolT:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(f"provider {self.name!r} has no pool {name!r}")

    def label(self, pool_name: str, label_name: str) -> Any:
        """The label `label_name` of pool `pool_name` (KeyError when there is none)."""
        label = self.pool(pool_name).label(label_name)
        if label is None:
            raise KeyError(f"provider {self.name!r} pool {pool_name!r} has no label "
                           f"{label_name!r}")
        return label

    def pool_priority(self, pool: PoolT) -> int:
        return self.priority if pool.priority is None else pool.priority

    @property
    def label_names(self) -> frozenset[str]:
        """Every label some pool of this provider can supply."""
        return frozenset(name for pool in self.pools for name in pool.label_names)

    def pools_for_label(self, label_name: str) -> tuple[PoolT, ...]:
        return tuple(pool for pool in self.pools if pool.label(label_name) is not None)

    def diskimage(self, name: str) -> DiskImageT | None:
        for image in self.diskimages:
            if image.name == name:
                return image
        return None

    def cloud_image(self, name: str) -> CloudImageT | None:
        for image in self.cloud_images:
            if image.name == name:
                return image
        return None


@dataclass(frozen=True)
class OpenStackProviderConfig(ProviderLookups[PoolConfig, ProviderDiskImageConfig,
                                              CloudImageConfig]):
    """The model of an OpenStack provider; static providers (no `cloud`) use it too."""

    name: str
    driver: str  # the registry's name: openstack or static (config.build sets it)
    cloud: str = ""  # required by the OpenStack schema; static providers have none
    region_name: str | None = None
    boot_timeout: int = 60
    launch_timeout: int = 3600
    launch_retries: int = 3
    image_upload_timeout: int = 3600
    rate: float = 1.0  # seconds between API calls
    max_concurrency: int = -1  # -1 = unlimited concurrent launches
    priority: int = 100
    image_name_format: str = "{image_name}-{timestamp}"
    clean_floating_ips: bool = False
    port_cleanup_interval: int = 600  # 0 disables
    post_upload_hook: str | None = None
    pools: tuple[PoolConfig, ...] = ()
    diskimages: tuple[ProviderDiskImageConfig, ...] = ()
    cloud_images: tuple[CloudImageConfig, ...] = ()

    launches_servers: bool = True  # False: registered hosts, never booted (the driver's)

    @property
    def rate_limit(self) -> float:
        """Requests per second for openstacksdk's `rate_limit` (upstream passes 1/rate)."""
        return 1.0 / self.rate


class ProviderConfig(Protocol):
    """What the core (launcher, builder, CLI) reads of any driver's provider model:
    `OpenStackProviderConfig` (openstack, static), drivers/aws/config.py's
    `AwsProviderConfig`, ... (`Config.providers` holds whatever the driver's
    `build_provider` made). Pools, labels and images are the driver's own models: the core
    reads the members they share with `PoolConfig`, `PoolLabelConfig` and the image
    models; where a driver has no such setting its model answers with an inert value."""

    @property
    def name(self) -> str: ...
    @property
    def driver(self) -> str: ...
    @property
    def cloud(self) -> str: ...
    @property
    def region_name(self) -> str | None: ...
    @property
    def boot_timeout(self) -> int: ...
    @property
    def launch_timeout(self) -> int: ...
    @property
    def launch_retries(self) -> int: ...
    @property
    def image_upload_timeout(self) -> int: ...
    @property
    def rate(self) -> float: ...
    @property
    def max_concurrency(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def image_name_format(self) -> str: ...
    @property
    def clean_floating_ips(self) -> bool: ...
    @property
    def port_cleanup_interval(self) -> int: ...
    @property
    def post_upload_hook(self) -> str | None: ...
    @property
    def pools(self) -> Sequence[Any]: ...
    @property
    def diskimages(self) -> Sequence[Any]: ...
    @property
    def cloud_images(self) -> Sequence[Any]: ...
    @property
    def launches_servers(self) -> bool: ...
    @property
    def label_names(self) -> frozenset[str]: ...
    def pool(self, name: str) -> Any: ...
    def pool_priority(self, pool: Any) -> int: ...
    def pools_for_label(self, label_name: str) -> Sequence[Any]: ...
    def diskimage(self, name: str) -> Any: ...
    def cloud_image(self, name: str) -> Any: ...


AnyProviderConfig = ProviderConfig  # the name the registry's first version used


@dataclass(frozen=True)
class Config:
    labels: Mapping[str, LabelConfig] = field(default_factory=dict)
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    diskimages: Mapping[str, DiskImageConfig] = field(default_factory=dict)
    zookeeper_servers: tuple[ZooKeeperServerConfig, ...] = ()
    zookeeper_tls: ZooKeeperTLSConfig | None = None
    zookeeper_timeout: float = 10.0
    webapp: WebappConfig = field(default_factory=WebappConfig)
    elements_dir: str | None = None
    images_dir: str | None = None
    build_log_dir: str = "/var/log/nodepool/builds"
    build_log_retention: int = 7  # logs kept per image; -1 keeps all
    max_hold_age: int | None = None  # seconds; None = held nodes never expire
    tenant_resource_limits: Mapping[str, TenantResourceLimitConfig] = field(default_factory=dict)
    mqtt: MqttConfig | None = None  # None: no events published

    def zookeeper_hosts(self) -> str:
        """kazoo's hosts string, e.g. `h1:2281,[::1]:2281/chroot`."""
        hosts = []
        chroot = None
        for server in self.zookeeper_servers:
            host = server.host
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            hosts.append(f"{host}:{server.port}")
            if chroot is None and server.chroot:
                chroot = server.chroot
        result = ",".join(hosts)
        if chroot:
            result += chroot if chroot.startswith("/") else "/" + chroot
        return result

    def providers_for_label(self, label_name: str) -> tuple[ProviderConfig, ...]:
        return tuple(p for p in self.providers.values() if label_name in p.label_names)

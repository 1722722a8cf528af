"""`nodepool.yaml` (upstream format): one schema, one loading path, frozen models.

    config = load_config("/etc/nodepool/nodepool.yaml", "/etc/nodepool/secure.conf")
    config.providers["cloud1"].pool("main").label("ubuntu")

Errors are `ConfigError` whose message starts with the field path
(`providers[1].pools[0].labels[2].flavor-name: ...`); `ConfigErrors.errors` lists them all.
"""

from nodepool_ng.config.loader import config_from_dicts, load_config
from nodepool_ng.config.models import (
    CloudImageConfig,
    Config,
    DiskImageConfig,
    LabelConfig,
    MqttConfig,
    MqttTLSConfig,
    OpenStackProviderConfig,
    PoolConfig,
    PoolLabelConfig,
    ProviderConfig,
    ProviderDiskImageConfig,
    TenantResourceLimitConfig,
    WebappConfig,
    ZooKeeperServerConfig,
    ZooKeeperTLSConfig,
)
from nodepool_ng.config.schema import ConfigErrors
from nodepool_ng.config.validate import validate_file
from nodepool_ng.config.watcher import ConfigWatcher
from nodepool_ng.errors import ConfigError

__all__ = [
    "CloudImageConfig",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "ConfigWatcher",
    "DiskImageConfig",
    "LabelConfig",
    "MqttConfig",
    "MqttTLSConfig",
    "OpenStackProviderConfig",
    "PoolConfig",
    "PoolLabelConfig",
    "ProviderConfig",
    "ProviderDiskImageConfig",
    "TenantResourceLimitConfig",
    "WebappConfig",
    "ZooKeeperServerConfig",
    "ZooKeeperTLSConfig",
    "config_from_dicts",
    "load_config",
    "validate_file",
]

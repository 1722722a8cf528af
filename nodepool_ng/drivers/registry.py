"""The one list of drivers: a provider's `driver:` value -> its `Driver` entry.

Each driver package declares its entry as `DRIVER` in its `driver.py`; this module only maps
names to those modules and imports one on first use. An entry's factories import the heavy
client libraries (openstacksdk, boto3) only when an adapter is made, so validating a config
stays cheap. The core (config, launcher, builder, CLI) reaches drivers only through here.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodepool_ng.config.models import ProviderConfig, StaticNodeConfig
    from nodepool_ng.drivers.base import ImageAdapter, ProviderAdapter
    from nodepool_ng.launcher.zkview import LauncherZK
    from nodepool_ng.model.node import Node
    from nodepool_ng.runtime.loop import Worker

Raw = Mapping[str, Any]
Errors = list[tuple[str, str]]

# Upstream: a provider without `driver:` is an OpenStack one.
DEFAULT_DRIVER = "openstack"

# driver name -> module whose `DRIVER` is its entry (imported on first use).
_MODULES: dict[str, str] = {
    "openstack": "nodepool_ng.drivers.openstack.driver",
    "static": "nodepool_ng.drivers.static.driver",
    "aws": "nodepool_ng.drivers.aws.driver",
}


@dataclass(frozen=True)
class AdapterOptions:
    """What the daemon or CLI knows that an adapter may use (each driver takes what it
    understands). `clouds_yaml`: openstacksdk's file instead of its search. `poll_interval`:
    how often the shared server list is refreshed while machines wait (None: the driver's
    default). `endpoint_url`: a cloud endpoint override (AWS; else AWS_ENDPOINT_URL)."""

    clouds_yaml: str | None = None
    poll_interval: float | None = None
    endpoint_url: str | None = None

    def kwargs(self, *names: str) -> dict[str, Any]:
        """The named options that are set, as keyword arguments for an adapter (unset
        ones leave the adapter's defaults)."""
        values = {name: getattr(self, name) for name in names}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class Driver:
    """What the core needs of one driver.

    - `schema`: voluptuous schema of one `providers[]` entry with `driver: <name>`.
    - `build_provider(raw)`: the provider model of a schema-valid entry.
    - `check_provider(index, provider, raw)`: semantic errors as (path, message) with the
      full path (`providers[i]...`); `raw` is the whole config (labels, diskimages).
    - `make_adapter(provider, options)`: the launcher's (and CLI's) `ProviderAdapter`.
    - `make_image_adapter(provider, options)`: the builder's `ImageAdapter`; None when the
      driver has no images to upload.
    - `upload_diskimage_arg`: the image adapter's `upload_image` takes `diskimage=` (the
      provider diskimage's name).
    - `launches_servers`: False when nodes are registered hosts (static), never booted.
    - `make_registrar(provider, zk, interval, paused)`: a worker keeping such hosts
      registered as nodes; `node_host(pool, node)`: the configured host behind a node;
      `is_alive(host)`: the check before such a node is handed out.
    """

    name: str
    schema: Callable[[Any], Any]
    build_provider: Callable[[Raw], ProviderConfig]
    check_provider: Callable[[int, Raw, Raw], Errors]
    make_adapter: Callable[[Any, AdapterOptions], ProviderAdapter]
    make_image_adapter: Callable[[Any, AdapterOptions], ImageAdapter] | None = None
    upload_diskimage_arg: bool = False
    launches_servers: bool = True
    make_registrar: Callable[[Any, LauncherZK, float, Callable[[], bool]], Worker] | None = None
    node_host: Callable[[Any, Node], StaticNodeConfig | None] | None = None
    is_alive: Callable[[StaticNodeConfig], bool] | None = None


_loaded: dict[str, Driver] = {}
_lock = threading.Lock()


def names() -> tuple[str, ...]:
    """Every known driver name."""
    return tuple(_MODULES)


def find(name: object) -> Driver | None:
    """The entry of driver `name`, or None when there is no such driver."""
    if not isinstance(name, str) or name not in _MODULES:
        return None
    with _lock:
        entry = _loaded.get(name)
        if entry is None:
            entry = importlib.import_module(_MODULES[name]).DRIVER
            assert isinstance(entry, Driver) and entry.name == name, _MODULES[name]
            _loaded[name] = entry
        return entry


def get(name: str) -> Driver:
    """The entry of driver `name`; KeyError for an unknown one (the config schema rejects
    those, so a loaded config never has one)."""
    entry = find(name)
    if entry is None:
        raise KeyError(f"unknown driver {name!r}")
    return entry

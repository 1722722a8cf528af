"""The registry entry of `driver: static`: registered hosts, never booted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodepool_ng.config import checks, schema
from nodepool_ng.config.build import build_provider
from nodepool_ng.config.models import PoolConfig, StaticNodeConfig
from nodepool_ng.drivers.base import ProviderAdapter
from nodepool_ng.drivers.registry import AdapterOptions, Driver
from nodepool_ng.drivers.static import StaticAdapter, is_alive
from nodepool_ng.model.node import Node
from nodepool_ng.runtime.loop import Worker


def make_adapter(provider: Any, options: AdapterOptions) -> ProviderAdapter:
    return StaticAdapter()  # nothing in a cloud: deleting a node is removing its record


def make_registrar(provider: Any, zk: Any, interval: float,
                   paused: Callable[[], bool]) -> Worker:
    from nodepool_ng.drivers.static.registrar import StaticRegistrar

    return StaticRegistrar(provider, zk, interval, paused)


def node_host(pool: PoolConfig, node: Node) -> StaticNodeConfig | None:
    """The configured host behind a node of a static pool."""
    from nodepool_ng.drivers.static.registrar import host_id

    return next((h for h in pool.nodes if h.identity == host_id(node)), None)


DRIVER = Driver(
    name="static",
    schema=schema.STATIC_PROVIDER,
    build_provider=build_provider,
    check_provider=checks.check_provider,
    make_adapter=make_adapter,
    launches_servers=False,
    make_registrar=make_registrar,
    node_host=node_host,
    is_alive=is_alive,
)

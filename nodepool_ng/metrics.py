"""Every statsd metric name nodepool_ng emits (spec §8), and the one statsd client factory.

Names are upstream Nodepool's; doc/metrics.md lists them for operators. Emitters
(`launcher/stats.py`, `builder/stats.py`) build keys only through these functions, so a
name exists in exactly one place. The client comes from env STATSD_HOST / STATSD_PORT;
without STATSD_HOST nothing is sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from nodepool_ng.model.node import NodeState

# `nodepool.nodes.<state>` and friends: one gauge per node state, upstream's order.
NODE_STATES = tuple(state.value for state in NodeState)
# `nodepool.builder.<host>.<name>` gauges.
BUILDER_GAUGES = ("current_builds", "current_uploads", "build_workers", "upload_workers")
# `nodepool.dib_image_build.<image>.status.<name>`: rc (gauge), duration (timer, ms),
# last_build (gauge, epoch seconds).
BUILD_STATUS = ("rc", "duration", "last_build")


def norm(value: str) -> str:
    """A key component: upstream replaces `.` and `:` (in requestors, host names)."""
    return value.replace(".", "_").replace(":", "_")


def _key(*parts: str) -> str:
    return ".".join(("nodepool", *parts))


def _provider(provider: str, *rest: str) -> str:
    return _key("provider", provider, *rest)


def _builder(hostname: str, *rest: str) -> str:
    return _key("builder", norm(hostname), *rest)


# -- launcher: launches (counter + timer) --------------------------------------------------
def launch(result: str) -> str:
    """result: `ready` or `error.<kind>`."""
    return _key("launch", result)


def launch_provider(provider: str, result: str) -> str:
    return _key("launch", "provider", provider, result)


def launch_provider_az(provider: str, az: str, result: str) -> str:
    return _key("launch", "provider", provider, az, result)


def launch_requestor(requestor: str, result: str) -> str:
    return _key("launch", "requestor", norm(requestor), result)


# -- launcher: node gauges (stats leader) --------------------------------------------------
def nodes(state: str) -> str:
    """state: one of NODE_STATES."""
    return _key("nodes", state)


def provider_nodes(provider: str, state: str) -> str:
    return _provider(provider, "nodes", state)


def label_nodes(label: str, state: str) -> str:
    return _key("label", label, "nodes", state)


def provider_max_servers(provider: str) -> str:
    return _provider(provider, "max_servers")


def addressable_requests(provider: str, pool: str) -> str:
    return _provider(provider, "pool", pool, "addressable_requests")


def tenant_limit(tenant: str, limit: str) -> str:
    return _key("tenant_limits", tenant, limit)


# -- launcher: cleanup and ZooKeeper health ------------------------------------------------
def leaked(provider: str, kind: str) -> str:
    """kind: instances, floatingips, ports."""
    return _provider(provider, "leaked", kind)


def launcher_zk(hostname: str, name: str) -> str:
    """name: e.g. client.connection_queue, node_cache.event_queue."""
    return _key("launcher", norm(hostname), "zk", name)


# -- builder -------------------------------------------------------------------------------
def dib_image_build_size(image: str, ext: str) -> str:
    return _key("dib_image_build", image, ext, "size")


def dib_image_build_status(image: str, name: str) -> str:
    """name: one of BUILD_STATUS."""
    return _key("dib_image_build", image, "status", name)


def image_update(image: str, provider: str) -> str:
    """Counter + timer (ms) per successful upload."""
    return _key("image_update", image, provider)


def image_build_requests() -> str:
    return _key("image_build_requests")


def image_image_build_requests(image: str) -> str:
    return _key("image", image, "image_build_requests")


def builder_gauge(hostname: str, name: str) -> str:
    """name: one of BUILDER_GAUGES."""
    return _builder(hostname, name)


def builder_build_state(hostname: str, image: str) -> str:
    return _builder(hostname, "image", image, "build", "state")


def builder_upload_state(hostname: str, image: str, provider: str) -> str:
    return _builder(hostname, "image", image, "provider", provider, "upload", "state")


# -- the client ----------------------------------------------------------------------------
class NullClient:
    """Used without STATSD_HOST: accepts everything, sends nothing."""

    def incr(self, key: str, count: int = 1) -> None:
        pass

    def timing(self, key: str, ms: float) -> None:
        pass

    def gauge(self, key: str, value: float) -> None:
        pass


def make_client(env: Mapping[str, str] | None = None) -> object:
    """A `statsd.StatsClient` for STATSD_HOST / STATSD_PORT (8125), else a NullClient."""
    env = os.environ if env is None else env
    host = env.get("STATSD_HOST")
    if not host:
        return NullClient()
    import statsd

    return statsd.StatsClient(host, int(env.get("STATSD_PORT", "8125")))

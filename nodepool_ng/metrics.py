"""Every metric nodepool_ng emits (upstream's statsd names first), and the one client factory.

Names are upstream Nodepool's statsd keys; doc/metrics.md lists them for operators, with
the Prometheus family each maps to. Emitters (`launcher/stats.py`, `builder/stats.py`, the
event observers) build keys only through these functions, so a figure is declared in exactly
one place: each function returns a `Key`, the statsd key (a `str`) that also carries its
Prometheus `Family` and label values.

`make_client()` returns the one client: every `incr` / `timing` / `gauge` goes to statsd
(env STATSD_HOST / STATSD_PORT; without STATSD_HOST nothing is sent) and to this process's
Prometheus registry (`nodepool_ng.prometheus`, served at the web app's `/metrics`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodepool_ng.model.node import NodeState

log = logging.getLogger("nodepool_ng.metrics")

# `nodepool.nodes.<state>` and friends: one gauge per node state, upstream's order.
NODE_STATES = tuple(state.value for state in NodeState)
# `nodepool.builder.<host>.<name>` gauges.
BUILDER_GAUGES = ("current_builds", "current_uploads", "build_workers", "upload_workers")
# `nodepool.dib_image_build.<image>.status.<name>`: rc (gauge), duration (timer, ms),
# last_build (gauge, epoch seconds).
BUILD_STATUS = ("rc", "duration", "last_build")
# `...build.state` / `...upload.state` gauge values (upstream's).
IMAGE_STATE_VALUES = {"idle": 0, "building": 1, "uploading": 2, "paused": 3}


@dataclass(frozen=True)
class Family:
    """A Prometheus family. Its name grows a suffix by how it is fed: `incr` -> a counter
    `<name>_total`, `timing` -> a histogram `<name>_duration_seconds`, `gauge` -> `<name>`.
    `statsd=False`: a figure with no upstream statsd name, sent to Prometheus only."""

    name: str
    labels: tuple[str, ...]
    doc: str
    statsd: bool = True


class Key(str):
    """A statsd key (the string) with the Prometheus family and label values it feeds."""

    family: Family
    values: tuple[str, ...]

    def __new__(cls, family: Family, values: tuple[str, ...], *parts: str) -> Key:
        if len(values) != len(family.labels):
            raise ValueError(f"{family.name}: {len(family.labels)} label values expected")
        key = super().__new__(cls, ".".join(("nodepool", *parts)))
        key.family = family
        key.values = values
        return key


def norm(value: str) -> str:
    """A key component: upstream replaces `.` and `:` (in requestors, host names)."""
    return value.replace(".", "_").replace(":", "_")


def _f(name: str, labels: tuple[str, ...], doc: str, statsd: bool = True) -> Family:
    return Family(f"nodepool_{name}", labels, doc, statsd)


# -- the families (doc/metrics.md maps each statsd key to one) -----------------------------
LAUNCH = _f("launch", ("result",), "Launch attempts by result (ready, error.<kind>)")
LAUNCH_PROVIDER = _f("launch_provider", ("provider", "result"), "Launch attempts by provider")
LAUNCH_PROVIDER_AZ = _f(
    "launch_provider_az", ("provider", "az", "result"), "Launch attempts by provider and AZ"
)
LAUNCH_REQUESTOR = _f(
    "launch_requestor", ("requestor", "result"), "Launch attempts by requestor"
)
NODES = _f("nodes", ("state",), "Nodes by state (stats leader)")
PROVIDER_NODES = _f("provider_nodes", ("provider", "state"), "Nodes by provider and state")
LABEL_NODES = _f("label_nodes", ("label", "state"), "Nodes by label and state")
PROVIDER_MAX_SERVERS = _f("provider_max_servers", ("provider",), "Sum of the pools' max-servers")
ADDRESSABLE_REQUESTS = _f(
    "provider_pool_addressable_requests", ("provider", "pool"), "Requests a pool can serve"
)
TENANT_LIMIT = _f("tenant_limit", ("tenant", "limit"), "Configured tenant resource limits")
LEAKED = _f("provider_leaked", ("provider", "resource"), "Leaked cloud resources removed")
LAUNCHER_ZK = _f("launcher_zk", ("host", "name"), "Launcher ZooKeeper queue sizes")
PROVIDER_HEALTH = _f(
    "provider_health", ("provider",), "Provider breaker: 0 healthy, 1 ramping, 2 open"
)
DIB_SIZE = _f("dib_image_build_size_bytes", ("image", "format"), "Size of a build's file")
DIB_RC = _f("dib_image_build_rc", ("image",), "Last build's result: 0 good, 1 failed")
DIB_DURATION = _f("dib_image_build", ("image",), "Image build durations")
DIB_LAST_BUILD = _f(
    "dib_image_build_last_build_timestamp_seconds", ("image",), "When the last build ended"
)
IMAGE_UPDATE = _f("image_update", ("image", "provider"), "Successful image uploads")
IMAGE_BUILD_REQUESTS = _f("image_build_requests", (), "Manual build requests outstanding")
IMAGE_IMAGE_BUILD_REQUESTS = _f(
    "image_image_build_requests", ("image",), "Manual build request outstanding (0 or 1)"
)
BUILDER = {
    name: _f(f"builder_{name}", ("host",), f"Builder {name.replace('_', ' ')}")
    for name in BUILDER_GAUGES
}
BUILD_STATE = _f(
    "builder_image_build_state", ("host", "image"), "0 idle, 1 building, 2 uploading, 3 paused"
)
UPLOAD_STATE = _f(
    "builder_image_upload_state",
    ("host", "image", "provider"),
    "0 idle, 1 building, 2 uploading, 3 paused",
)
# Prometheus only (no upstream statsd name).
REQUEST = _f(
    "request",
    ("label", "provider", "result"),
    "Node request latency: created -> fulfilled/failed, per label of the request",
    statsd=False,
)
API_ERRORS = _f(
    "provider_api_errors", ("provider", "operation"), "Failed cloud API calls", statsd=False
)
EVENTS_PUBLISHED = _f(
    "events_published", ("component",), "MQTT events handed to the broker", statsd=False
)
EVENTS_DROPPED = _f(
    "events_dropped", ("component", "reason"), "MQTT events dropped, not sent", statsd=False
)


# -- launcher: launches (counter + timer) --------------------------------------------------
def launch(result: str) -> Key:
    """result: `ready` or `error.<kind>`."""
    return Key(LAUNCH, (result,), "launch", result)


def launch_provider(provider: str, result: str) -> Key:
    return Key(LAUNCH_PROVIDER, (provider, result), "launch", "provider", provider, result)


def launch_provider_az(provider: str, az: str, result: str) -> Key:
    return Key(
        LAUNCH_PROVIDER_AZ, (provider, az, result), "launch", "provider", provider, az, result
    )


def launch_requestor(requestor: str, result: str) -> Key:
    return Key(
        LAUNCH_REQUESTOR, (requestor, result), "launch", "requestor", norm(requestor), result
    )


# -- launcher: node gauges (stats leader) --------------------------------------------------
def nodes(state: str) -> Key:
    """state: one of NODE_STATES."""
    return Key(NODES, (state,), "nodes", state)


def provider_nodes(provider: str, state: str) -> Key:
    return Key(PROVIDER_NODES, (provider, state), "provider", provider, "nodes", state)


def label_nodes(label: str, state: str) -> Key:
    return Key(LABEL_NODES, (label, state), "label", label, "nodes", state)


def provider_max_servers(provider: str) -> Key:
    return Key(PROVIDER_MAX_SERVERS, (provider,), "provider", provider, "max_servers")


def addressable_requests(provider: str, pool: str) -> Key:
    return Key(
        ADDRESSABLE_REQUESTS,
        (provider, pool),
        "provider",
        provider,
        "pool",
        pool,
        "addressable_requests",
    )


def tenant_limit(tenant: str, limit: str) -> Key:
    return Key(TENANT_LIMIT, (tenant, limit), "tenant_limits", tenant, limit)


def provider_health(provider: str) -> Key:
    """Gauge (not an upstream name): 0 healthy, 1 ramping, 2 open."""
    return Key(PROVIDER_HEALTH, (provider,), "provider", provider, "health")


# -- launcher: requests, cloud API errors (Prometheus only) --------------------------------
def request_latency(label: str, provider: str | None, result: str) -> Key:
    """Timer: a request's creation to its `result` (fulfilled, failed)."""
    provider = provider or ""
    return Key(REQUEST, (label, provider, result), "request", label, provider, result)


def api_error(provider: str, operation: str) -> Key:
    """Counter: a failed cloud API call (operation: launch, delete, probe, ...)."""
    return Key(API_ERRORS, (provider, operation), "provider", provider, "api_errors", operation)


# -- launcher: cleanup and ZooKeeper health ------------------------------------------------
def leaked(provider: str, kind: str) -> Key:
    """kind: instances, floatingips, ports."""
    return Key(LEAKED, (provider, kind), "provider", provider, "leaked", kind)


def launcher_zk(hostname: str, name: str) -> Key:
    """name: e.g. client.connection_queue, node_cache.event_queue."""
    return Key(LAUNCHER_ZK, (hostname, name), "launcher", norm(hostname), "zk", name)


# -- events (Prometheus only) --------------------------------------------------------------
def events_published(component: str) -> Key:
    """Counter: MQTT events handed to paho while connected."""
    return Key(EVENTS_PUBLISHED, (component,), "events", component, "published")


def events_dropped(component: str, reason: str) -> Key:
    """Counter: MQTT events dropped (reason: queue_full, not_connected, publish_failed)."""
    return Key(EVENTS_DROPPED, (component, reason), "events", component, "dropped", reason)


# -- builder -------------------------------------------------------------------------------
def dib_image_build_size(image: str, ext: str) -> Key:
    return Key(DIB_SIZE, (image, ext), "dib_image_build", image, ext, "size")


_BUILD_STATUS_FAMILIES = {"rc": DIB_RC, "duration": DIB_DURATION, "last_build": DIB_LAST_BUILD}


def dib_image_build_status(image: str, name: str) -> Key:
    """name: one of BUILD_STATUS."""
    return Key(_BUILD_STATUS_FAMILIES[name], (image,), "dib_image_build", image, "status", name)


def image_update(image: str, provider: str) -> Key:
    """Counter + timer (ms) per successful upload."""
    return Key(IMAGE_UPDATE, (image, provider), "image_update", image, provider)


def image_build_requests() -> Key:
    return Key(IMAGE_BUILD_REQUESTS, (), "image_build_requests")


def image_image_build_requests(image: str) -> Key:
    return Key(IMAGE_IMAGE_BUILD_REQUESTS, (image,), "image", image, "image_build_requests")


def builder_gauge(hostname: str, name: str) -> Key:
    """name: one of BUILDER_GAUGES."""
    return Key(BUILDER[name], (hostname,), "builder", norm(hostname), name)


def builder_build_state(hostname: str, image: str) -> Key:
    return Key(
        BUILD_STATE, (hostname, image), "builder", norm(hostname), "image", image, "build", "state"
    )


def builder_upload_state(hostname: str, image: str, provider: str) -> Key:
    return Key(
        UPLOAD_STATE,
        (hostname, image, provider),
        "builder",
        norm(hostname),
        "image",
        image,
        "provider",
        provider,
        "upload",
        "state",
    )


# -- the client ----------------------------------------------------------------------------
class NullClient:
    """Used without STATSD_HOST: accepts everything, sends nothing."""

    def incr(self, key: str, count: int = 1) -> None:
        pass

    def timing(self, key: str, ms: float) -> None:
        pass

    def gauge(self, key: str, value: float) -> None:
        pass


class TeeClient:
    """statsd's three calls, each sent to statsd and recorded in the Prometheus registry.

    A `Key` of a Prometheus-only family is not sent to statsd; a plain `str` key (no family)
    only to statsd. Prometheus failures are logged, never raised; statsd's are raised as a
    statsd client's would be (the emitters catch them)."""

    def __init__(self, statsd: Any, sink: Any) -> None:
        self.statsd = statsd
        self.sink = sink

    def _record(self, kind: str, key: str, value: float) -> None:
        if self.sink is None or not isinstance(key, Key):
            return
        try:
            getattr(self.sink, kind)(key, value)
        except Exception:
            log.debug("prometheus %s %s failed", kind, key, exc_info=True)

    def _to_statsd(self, key: str) -> bool:
        return not isinstance(key, Key) or key.family.statsd

    def incr(self, key: str, count: int = 1) -> None:
        self._record("incr", key, count)
        if self._to_statsd(key):
            self.statsd.incr(key, count)

    def timing(self, key: str, ms: float) -> None:
        self._record("timing", key, ms)
        if self._to_statsd(key):
            self.statsd.timing(key, ms)

    def gauge(self, key: str, value: float) -> None:
        self._record("gauge", key, value)
        if self._to_statsd(key):
            self.statsd.gauge(key, value)


def make_statsd(env: Mapping[str, str] | None = None) -> object:
    """A `statsd.StatsClient` for STATSD_HOST / STATSD_PORT (8125), else a NullClient."""
    env = os.environ if env is None else env
    host = env.get("STATSD_HOST")
    if not host:
        return NullClient()
    import statsd

    return statsd.StatsClient(host, int(env.get("STATSD_PORT", "8125")))


def make_client(env: Mapping[str, str] | None = None) -> TeeClient:
    """The client every emitter uses: statsd (when STATSD_HOST is set) and Prometheus."""
    from nodepool_ng import prometheus

    return TeeClient(make_statsd(env), prometheus.SINK)

"""This process's Prometheus registry, fed through `metrics.TeeClient` (doc/metrics.md).

Every figure sent to statsd is also recorded here, in the family its `metrics.Key` names:
`incr` -> Counter, `timing` (ms) -> Histogram in seconds, `gauge` -> Gauge. Families are
created on first use, so `/metrics` shows what this process has emitted. The web app
serves `exposition()` at `/metrics`.
"""

from __future__ import annotations

import threading
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)


class Family(Protocol):
    """`metrics.Family` as seen from here (metrics imports this module, not the reverse)."""

    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> tuple[str, ...]: ...
    @property
    def doc(self) -> str: ...


class Key(Protocol):
    """`metrics.Key`: the family a statsd key feeds, and its label values."""

    @property
    def family(self) -> Family: ...
    @property
    def values(self) -> tuple[str, ...]: ...


# Seconds: launches take seconds to minutes, requests up to hours while quota is short,
# image builds up to hours.
BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)

_Metric = Counter | Gauge | Histogram


class PrometheusSink:
    """The Prometheus side of the statsd calls; one family object per (family, kind)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._metrics: dict[tuple[str, str], _Metric] = {}

    def _metric(self, family: Family, kind: str) -> _Metric:
        with self._lock:
            metric = self._metrics.get((family.name, kind))
            if metric is None:
                metric = self._make(family, kind)
                self._metrics[(family.name, kind)] = metric
            return metric

    def _make(self, family: Family, kind: str) -> _Metric:
        labels = family.labels
        if kind == "incr":
            return Counter(family.name, family.doc, labels, registry=self.registry)
        if kind == "timing":
            return Histogram(
                f"{family.name}_duration_seconds",
                family.doc,
                labels,
                registry=self.registry,
                buckets=BUCKETS,
            )
        return Gauge(family.name, family.doc, labels, registry=self.registry)

    def _child(self, key: Key, kind: str) -> _Metric:
        metric = self._metric(key.family, kind)
        return metric.labels(*key.values) if key.values else metric

    def incr(self, key: Key, count: float = 1) -> None:
        self._child(key, "incr").inc(count)  # type: ignore[union-attr]

    def timing(self, key: Key, ms: float) -> None:
        self._child(key, "timing").observe(ms / 1000.0)  # type: ignore[union-attr]

    def gauge(self, key: Key, value: float) -> None:
        self._child(key, "gauge").set(value)  # type: ignore[union-attr]


# No `_created` series: they double the output and no dashboard of ours reads them.
disable_created_metrics()


def _make_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


REGISTRY = _make_registry()
SINK = PrometheusSink(REGISTRY)


def exposition(registry: CollectorRegistry | None = None) -> tuple[str, bytes]:
    """(content type, body) of the text format for `registry` (default: this process's)."""
    return CONTENT_TYPE_LATEST, generate_latest(registry or REGISTRY)


# -- the REST request API (`nodepool_ng/api/`): Prometheus only, no upstream statsd name ----
# `token` is the API token's name (never its secret); "-" when the call carried none.
API_CALLS = Counter(
    "nodepool_api_requests", "REST request API calls by token and outcome (HTTP status)",
    ("token", "status"), registry=REGISTRY)
API_LEASES_HELD = Gauge(
    "nodepool_api_leases_held",
    "Fulfilled REST API leases whose nodes this launcher's lease keeper holds, by token",
    ("token",), registry=REGISTRY)
API_LEASE_EXPIRIES = Counter(
    "nodepool_api_lease_expiries", "REST API leases that lapsed (their nodes taken back or "
    "their request cancelled), by token", ("token",), registry=REGISTRY)

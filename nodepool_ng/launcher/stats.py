"""What the launcher reports to statsd; the names live in `nodepool_ng.metrics`.

The statsd client comes from env STATSD_HOST / STATSD_PORT; without STATSD_HOST nothing is
sent. Names are upstream's; a requestor's `.` and `:` become `_`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping

from nodepool_ng import metrics
from nodepool_ng.metrics import NODE_STATES, make_client

log = logging.getLogger("nodepool_ng.stats")


class LauncherStats:
    def __init__(self, client: object | None = None) -> None:
        self.client = client if client is not None else make_client()

    def _incr(self, key: str) -> None:
        try:
            self.client.incr(key)  # type: ignore[attr-defined]
        except Exception:  # stats must never break the launcher
            log.debug("statsd incr %s failed", key, exc_info=True)

    def _timing(self, key: str, ms: float) -> None:
        try:
            self.client.timing(key, ms)  # type: ignore[attr-defined]
        except Exception:
            log.debug("statsd timing %s failed", key, exc_info=True)

    def _gauge(self, key: str, value: float) -> None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # "5|g" like upstream, not "5.0|g"
        try:
            self.client.gauge(key, value)  # type: ignore[attr-defined]
        except Exception:
            log.debug("statsd gauge %s failed", key, exc_info=True)

    # -- launches --------------------------------------------------------------------------
    def launch(
        self, result: str, provider: str, az: str | None, requestor: str | None, ms: float
    ) -> None:
        """result: `ready` or `error.<kind>` (quota, unknown, servercreatetimeout, keyscan...)."""
        keys = [metrics.launch(result), metrics.launch_provider(provider, result)]
        if az:
            keys.append(metrics.launch_provider_az(provider, az, result))
        if requestor:
            keys.append(metrics.launch_requestor(requestor, result))
        for key in keys:
            self._timing(key, ms)
            self._incr(key)

    # -- provider health (launcher.health) --------------------------------------------------
    def provider_health(self, provider: str, state: str) -> None:
        """Gauge `nodepool.provider.<provider>.health`: 0 healthy, 1 ramping up, 2 open (no
        launches). Not an upstream name; sent when the state changes."""
        value = {"healthy": 0, "ramping": 1, "open": 2}.get(state)
        if value is not None:
            self._gauge(metrics.provider_health(provider), value)

    def api_error(self, provider: str, operation: str) -> None:
        """A failed cloud API call (operation: launch, delete, probe); Prometheus only:
        `nodepool_provider_api_errors_total{provider,operation}`."""
        self._incr(metrics.api_error(provider, operation))

    # -- nodes (stats leader) --------------------------------------------------------------
    def node_gauges(
        self,
        nodes: Iterable[tuple[str, str, Iterable[str]]],
        providers: Mapping[str, float | None],
    ) -> None:
        """nodes: (state, provider, labels). providers: name -> max_servers."""
        total: Counter[str] = Counter()
        per_provider: Counter[tuple[str, str]] = Counter()
        per_label: Counter[tuple[str, str]] = Counter()
        labels: set[str] = set()
        for state, provider, node_labels in nodes:
            total[state] += 1
            per_provider[(provider, state)] += 1
            for label in node_labels:
                labels.add(label)
                per_label[(label, state)] += 1
        for state in NODE_STATES:
            self._gauge(metrics.nodes(state), total[state])
            for provider in providers:
                self._gauge(
                    metrics.provider_nodes(provider, state), per_provider[(provider, state)]
                )
            for label in labels:
                self._gauge(metrics.label_nodes(label, state), per_label[(label, state)])
        for provider, max_servers in providers.items():
            if max_servers is not None:
                self._gauge(metrics.provider_max_servers(provider), max_servers)

    def addressable_requests(self, provider: str, pool: str, count: int) -> None:
        self._gauge(metrics.addressable_requests(provider, pool), count)

    # -- cleanup ---------------------------------------------------------------------------
    def leaked(self, provider: str, kind: str, count: int = 1) -> None:
        """kind: instances, floatingips, ports."""
        for _ in range(count):
            self._incr(metrics.leaked(provider, kind))

    def zk_queues(self, hostname: str, values: Mapping[str, int]) -> None:
        """values: e.g. {"client.connection_queue": n, "node_cache.event_queue": n}."""
        for name, value in values.items():
            self._gauge(metrics.launcher_zk(hostname, name), value)

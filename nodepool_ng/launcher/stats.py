"""Every statsd key the launcher emits (spec §8), in one place.

The statsd client comes from env STATSD_HOST / STATSD_PORT; without STATSD_HOST nothing is
sent. Names are upstream's; a requestor's `.` and `:` become `_`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping

log = logging.getLogger("nodepool_ng.stats")

NODE_STATES = (
    "init",
    "building",
    "testing",
    "ready",
    "in-use",
    "used",
    "hold",
    "deleting",
    "failed",
    "aborted",
    "deleted",
)


def _norm(value: str) -> str:
    return value.replace(".", "_").replace(":", "_")


class _NullClient:
    def incr(self, key: str, count: int = 1) -> None:
        pass

    def timing(self, key: str, ms: float) -> None:
        pass

    def gauge(self, key: str, value: float) -> None:
        pass


def make_client(env: Mapping[str, str] | None = None) -> object:
    env = os.environ if env is None else env
    host = env.get("STATSD_HOST")
    if not host:
        return _NullClient()
    import statsd

    return statsd.StatsClient(host, int(env.get("STATSD_PORT", "8125")))


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
        try:
            self.client.gauge(key, value)  # type: ignore[attr-defined]
        except Exception:
            log.debug("statsd gauge %s failed", key, exc_info=True)

    # -- launches --------------------------------------------------------------------------
    def launch(
        self, result: str, provider: str, az: str | None, requestor: str | None, ms: float
    ) -> None:
        """result: `ready` or `error.<kind>` (quota, unknown, servercreatetimeout, keyscan...)."""
        keys = [f"nodepool.launch.{result}", f"nodepool.launch.provider.{provider}.{result}"]
        if az:
            keys.append(f"nodepool.launch.provider.{provider}.{az}.{result}")
        if requestor:
            keys.append(f"nodepool.launch.requestor.{_norm(requestor)}.{result}")
        for key in keys:
            self._timing(key, ms)
            self._incr(key)

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
            self._gauge(f"nodepool.nodes.{state}", total[state])
            for provider in providers:
                self._gauge(
                    f"nodepool.provider.{provider}.nodes.{state}", per_provider[(provider, state)]
                )
            for label in labels:
                self._gauge(f"nodepool.label.{label}.nodes.{state}", per_label[(label, state)])
        for provider, max_servers in providers.items():
            if max_servers is not None:
                self._gauge(f"nodepool.provider.{provider}.max_servers", max_servers)

    def addressable_requests(self, provider: str, pool: str, count: int) -> None:
        self._gauge(f"nodepool.provider.{provider}.pool.{pool}.addressable_requests", count)

    # -- cleanup ---------------------------------------------------------------------------
    def leaked(self, provider: str, kind: str, count: int = 1) -> None:
        """kind: instances, floatingips, ports."""
        for _ in range(count):
            self._incr(f"nodepool.provider.{provider}.leaked.{kind}")

    def zk_queues(self, hostname: str, values: Mapping[str, int]) -> None:
        """values: e.g. {"client.connection_queue": n, "node_cache.event_queue": n}."""
        for name, value in values.items():
            self._gauge(f"nodepool.launcher.{_norm(hostname)}.zk.{name}", value)

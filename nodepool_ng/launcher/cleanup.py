"""`CleanupWorker`: the slow reconciliation passes, each isolated from the others.

* lost requests: `pending` but unlocked (its launcher died) -> nodes deallocated (`init`
  ones deleted), `nodes=[]`, back to `requested`, so a live pool serves it;
* max-ready-age: READY unallocated nodes older than their label's limit -> `deleting`;
* max-hold-age / `hold_expiration`: held nodes past their hold limit -> `deleting` (hold_age);
* stale `init` nodes nobody locked (a launcher died between create and lock) -> `deleting`;
* orphan node znodes: no data (no state), only a `lock` child, unlocked, seen so in two
  passes -> removed. They appear when someone's lock recipe (kazoo's `Lock` makes missing
  parents) locks a node that was just deleted; a node we create has its data from the first
  moment (one create with the JSON), so it is never like that;
* leaked servers: ours by metadata but without a node record, seen in two passes -> deleted;
* leaked resources: what a driver's `leak_candidates()` reports as nothing's (OpenStack:
  unattached floating IPs with `clean-floating-ips`, DOWN ports with
  `port-cleanup-interval`; AWS: volumes left `available`), reported in consecutive passes
  at least its `leak_interval` apart and its node (if it names one) without a record ->
  deleted; the core knows no resource kinds;
* old request lock dirs (8 h, upstream's LOCK_CLEANUP).

Woken at `interval` and when a pool component disappears (a launcher died). Each task
and each provider is isolated: one failing cloud listing skips that provider's part only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nodepool_ng.config.models import Config
from nodepool_ng.drivers.base import META_NODE_ID, Resource
from nodepool_ng.launcher import hold_age, tenant_limits
from nodepool_ng.launcher.runner import ProviderRunner
from nodepool_ng.launcher.stats import LauncherStats
from nodepool_ng.launcher.zkview import LauncherZK
from nodepool_ng.log import get_logger
from nodepool_ng.model.node import NodeState
from nodepool_ng.model.request import RequestState
from nodepool_ng.runtime.loop import Worker

STALE_INIT_AGE = 60.0

log = get_logger("nodepool_ng.launcher.cleanup")


class CleanupWorker(Worker):
    def __init__(
        self,
        zk: LauncherZK,
        config: Callable[[], Config],
        runners: Callable[[], dict[str, ProviderRunner]],
        active_requests: Callable[[], set[str]],
        stats: LauncherStats | None = None,
        interval: float = 60.0,
        paused: Callable[[], bool] | None = None,
        cleanup_lock_dirs: Callable[[], object] | None = None,
    ) -> None:
        super().__init__("CleanupWorker", interval=interval, paused=paused)
        self.zk = zk
        self._config = config
        self._runners = runners
        self._active_requests = active_requests
        self.stats = stats or LauncherStats()
        self._cleanup_lock_dirs = cleanup_lock_dirs
        self._leak_candidates: dict[str, set[str]] = {}  # provider -> external ids seen once
        # provider -> {(kind, external id): (first, last) listing that reported it}
        self._resource_candidates: dict[str, dict[tuple[str, str], tuple[float, float]]] = {}
        self._resource_errors: set[str] = set()  # providers whose listing failed (log once)
        self._list_errors: set[str] = set()  # providers whose server listing failed (log once)
        self._orphans: set[str] = set()  # data-less node ids seen in the last pass

    def run_once(self) -> float | None:
        for task in (
            self.reset_lost_requests,
            self.expire_ready_nodes,
            self.expire_held_nodes,
            self.delete_stale_init_nodes,
            self.delete_orphan_znodes,
            self.delete_leaked_instances,
            self.delete_leaked_resources,
        ):
            if self.stopped:
                break
            try:
                task()
            except Exception:
                log.exception("Cleanup task %s failed", task.__name__)
        # Tenant limit gauges: re-sent each pass (upstream: each pool pass).
        tenant_limits.report_limits(self.stats.client, self._config().tenant_resource_limits)
        if self._cleanup_lock_dirs is not None:
            try:
                self._cleanup_lock_dirs()
            except Exception as e:
                log.warning("Request lock dir cleanup failed: %s", e)
        return None

    # -- lost requests ---------------------------------------------------------------------
    def reset_lost_requests(self) -> None:
        mine = self._active_requests()
        for cached in self.zk.requests():
            rid = cached.id or ""
            if cached.state is not RequestState.PENDING or rid in mine:
                continue
            if self.zk.request_locked(rid):
                continue
            req = self.zk.lock_fresh_request(rid)
            if req is None:
                continue
            try:
                if req.state is not RequestState.PENDING:
                    continue
                for node in self.zk.nodes():
                    if node.allocated_to != rid or not node.id:
                        continue
                    fresh = self.zk.lock_fresh_node(node.id)
                    if fresh is None:
                        continue
                    try:
                        if fresh.allocated_to == rid:
                            fresh.allocated_to = None
                            if fresh.state is NodeState.INIT:
                                fresh.state = NodeState.DELETING
                            self.zk.store_node(fresh)
                    finally:
                        self.zk.unlock_node(fresh)
                req.nodes = []
                req.state = RequestState.REQUESTED
                self.zk.store_request(req)
                log.info("Reset lost request %s", rid)
            finally:
                self.zk.unlock_request(req)

    # -- node expiry -----------------------------------------------------------------------
    def _mark_deleting(
        self, node_id: str, still: Callable[[NodeState | None, str | None], bool], why: str
    ) -> None:
        node = self.zk.lock_fresh_node(node_id)
        if node is None:
            return
        try:
            if still(node.state, node.allocated_to):
                node.state = NodeState.DELETING
                self.zk.store_node(node)
                log.info("Node %s: %s", node_id, why)
        finally:
            self.zk.unlock_node(node)

    def expire_ready_nodes(self) -> None:
        config = self._config()
        now = time.time()
        ours = set(self._runners())
        for node in self.zk.nodes():
            label = config.labels.get(node.label or "")
            if (
                label is None
                or not label.max_ready_age
                or node.provider not in ours
                or node.state is not NodeState.READY
                or node.allocated_to
                or self.zk.node_locked(node)
                or now - (node.state_time or now) <= label.max_ready_age
            ):
                continue
            self._mark_deleting(
                node.id or "",
                lambda state, alloc: state is NodeState.READY and not alloc,
                f"older than max-ready-age {label.max_ready_age}s",
            )

    def expire_held_nodes(self) -> None:
        expired = hold_age.expired_holds(
            (n for n in self.zk.nodes() if not self.zk.node_locked(n)),
            self._config().max_hold_age, set(self._runners()), time.time())
        for node_id, limit in expired:
            self._mark_deleting(node_id, lambda state, alloc: state is NodeState.HOLD,
                                f"held longer than its hold limit of {limit:g}s")

    def delete_stale_init_nodes(self) -> None:
        now = time.time()
        ours = set(self._runners())
        for node in self.zk.nodes():
            if (
                node.state is NodeState.INIT
                and node.provider in ours
                and not self.zk.node_locked(node)
                and now - (node.state_time or now) > STALE_INIT_AGE
            ):
                self._mark_deleting(
                    node.id or "",
                    lambda state, alloc: state is NodeState.INIT,
                    "unlocked in init state (its launcher died)",
                )

    def delete_orphan_znodes(self) -> None:
        """`/nodepool/nodes/<id>` without data (only a `lock` child): nobody's record."""
        dataless = {n.id for n in self.zk.nodes() if n.id and n.state is None}
        for node_id in sorted(dataless & self._orphans):
            if self.stopped:
                break
            node = self.zk.lock_fresh_node(node_id)  # None: somebody holds it, or it is gone
            if node is None:
                continue
            try:
                if node.state is None:
                    # Holding the lock with nobody waiting: one transaction (else upstream's
                    # two steps, state `deleted` first).
                    self.zk.delete_node(node)
                    log.info("Removed orphan node znode %s (no data, unlocked)", node_id)
            finally:
                self.zk.unlock_node(node)
        self._orphans = dataless

    # -- leaks -----------------------------------------------------------------------------
    def delete_leaked_instances(self) -> None:
        known = {n.id for n in self.zk.nodes() if n.id}
        for provider, runner in self._runners().items():
            if self.stopped:
                break
            try:
                instances = list(runner.adapter.list_instances())
            except Exception as e:
                # This provider's part waits for the next pass; the others go on.
                if provider not in self._list_errors:
                    log.warning("Provider %s: cannot list servers for the leak check: %s",
                                provider, e)
                    self._list_errors.add(provider)
                continue
            if provider in self._list_errors:
                log.info("Provider %s: servers can be listed again", provider)
                self._list_errors.discard(provider)
            seen_before = self._leak_candidates.get(provider, set())
            leaked_now: set[str] = set()
            for inst in instances:
                if inst.provider_name != provider or not inst.node_id:
                    continue
                if inst.node_id in known or inst.status == "deleting":
                    continue
                leaked_now.add(inst.external_id)
                if inst.external_id in seen_before and self.zk.get_node(inst.node_id) is None:
                    log.info("Deleting leaked server %s (node %s)", inst.external_id, inst.node_id)
                    self.stats.leaked(provider, "instances")
                    runner.delete(inst.external_id, inst.node_id, lambda ok: None)
            # Seen once now: deleted next pass if still without a node.
            self._leak_candidates[provider] = leaked_now - seen_before

    def delete_leaked_resources(self) -> None:
        """What each driver reports as nothing's (`leak_candidates()`: floating IPs, ports,
        volumes, ... as the provider's config asks), deleted once reported in consecutive
        passes at least the resource's `leak_interval` apart and, when it names a node,
        while that node has no record. Per provider, errors isolated."""
        known: set[str] | None = None
        now = time.monotonic()
        for provider, runner in self._runners().items():
            if self.stopped:
                break
            try:
                candidates = list(runner.adapter.leak_candidates())
            except Exception as e:
                # Clouds without a network API cannot list ports: say so once, not every pass.
                if provider not in self._resource_errors:
                    log.warning("Provider %s: cannot list leaked resources: %s", provider, e)
                    self._resource_errors.add(provider)
                continue
            self._resource_errors.discard(provider)
            if candidates and known is None:
                known = {n.id for n in self.zk.nodes() if n.id}
            self._clean_resources(provider, runner, candidates, known or set(), now)

    def _clean_resources(self, provider: str, runner: ProviderRunner,
                         candidates: list[Resource], known: set[str], now: float) -> None:
        seen = self._resource_candidates.get(provider, {})
        still: dict[tuple[str, str], tuple[float, float]] = {}
        for res in candidates:
            if res.leak_interval is None:
                continue
            node_id = res.metadata.get(META_NODE_ID)
            if node_id and node_id in known:
                continue
            key = (res.kind, res.external_id)
            listed = now if res.listed_at is None else res.listed_at
            first, last = seen.get(key, (listed, listed))
            # Only a new listing confirms a candidate: never delete on a repeated old one.
            if listed <= last or listed - first < res.leak_interval:
                still[key] = (first, max(last, listed))
                continue
            if node_id and self.zk.get_node(node_id) is not None:
                continue
            if self._delete(runner, res, provider):
                self.stats.leaked(provider, res.kind + "s")
        self._resource_candidates[provider] = still

    def _delete(self, runner: ProviderRunner, resource: Resource, provider: str) -> bool:
        try:
            runner.adapter.delete_resource(resource)
        except Exception as e:
            log.warning(
                "Provider %s: could not delete leaked %s %s: %s",
                provider,
                resource.kind,
                resource.external_id,
                e,
            )
            return False
        log.info("Provider %s: deleted leaked %s %s", provider, resource.kind, resource.external_id)
        return True


"""`PoolQuota`: one pool's quota bookkeeping; `UnusedNodeFreer`: room at quota.

A label's cost (asked of the driver once), the pool's and the provider's usage (node records
plus what the pool's ledger promised that the cache does not show yet), the cloud's headroom
(its limits minus servers we do not manage; re-read at most every TTL), and from those:
room for another node, a reservation for an accept. The rules themselves are pure
(`quota.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from nodepool_ng.config.models import PoolConfig, ProviderConfig
from nodepool_ng.drivers.base import LaunchSpec, ProviderAdapter
from nodepool_ng.launcher import quota as q
from nodepool_ng.launcher.ledger import PoolLedger
from nodepool_ng.launcher.node_index import NodeIndex, UsageKey
from nodepool_ng.launcher.zkview import LauncherZK, change_idle_node, mark_deleting
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.quota import Quota

log = logging.getLogger("nodepool_ng.launcher.pool")

CLOUD_QUOTA_TTL = 5.0  # seconds; the cloud side of quota is re-read at most this often


@dataclass
class PoolQuota:
    provider: ProviderConfig
    pool: PoolConfig
    pool_id: str
    zk: LauncherZK
    adapter: ProviderAdapter
    ledger: PoolLedger  # what the pool promised that the node cache does not show yet
    cloud_quota_ttl: float = CLOUD_QUOTA_TTL
    # The node cache's index (usage groups): the launcher's, fed by the cache's events.
    index: NodeIndex = field(default_factory=NodeIndex)
    _label_costs: dict[str, Quota] = field(default_factory=dict)
    _cloud: tuple[float, Quota] | None = None
    _refreshing: bool = False
    _quota_unreadable: bool = False  # the last read failed (logged once)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def label_cost(self, label_name: str) -> Quota:
        cost = self._label_costs.get(label_name)
        if cost is None:
            label = self.pool.label(label_name)
            if label is None:
                return Quota.of(instances=1)
            spec = LaunchSpec(
                hostname="",
                node_id="",
                provider_name=self.provider.name,
                pool_name=self.pool.name,
                label_name=label.name,
                image="",
                flavor_name=label.flavor_name,
                min_ram=label.min_ram,
                boot_from_volume=label.boot_from_volume,
                volume_size=label.volume_size if label.boot_from_volume else None,
            )
            try:
                cost = self.adapter.get_quota_for_label(spec)
            except Exception as e:
                log.warning("%s: cannot get the cost of label %s: %s", self.pool_id,
                            label_name, e)
                return Quota.of(instances=1)
            self._label_costs[label_name] = cost
        return cost

    def reserve(self, label_name: str) -> int | None:
        """Promise quota for one new `label_name` node to an accept running in the background;
        a ledger token, or None when the pool has no room (the accept would pause)."""
        if not self.has_room(label_name):
            return None
        return self.ledger.reserve(self.label_cost(label_name))

    def has_room(self, label_name: str) -> bool:
        """Room to launch another `label_name` node (never in a static pool)."""
        if not self.provider.launches_servers:
            return False
        pool_usage, provider_usage = self.usage()
        return q.has_remaining(
            self.label_cost(label_name),
            self.pool.quota_limits(),
            pool_usage,
            self.cloud_limit(),
            provider_usage,
            self.pool.ignore_provider_quota,
        )

    def fits_when_empty(self, labels: Iterable[str]) -> bool:
        """Could the pool ever hold nodes of all `labels` at once (else: decline)?"""
        total = Quota.total(self.label_cost(label) for label in labels)
        return q.fits_when_empty(
            total, self.pool.quota_limits(), self.cloud_limit(), self.pool.ignore_provider_quota
        )

    def usage(self) -> tuple[Quota, Quota]:
        """(the pool's usage, the provider's usage): its nodes not DELETED (from the index,
        priced per usage group) plus what the ledger promised that the cache does not
        show yet."""
        mine, everyone = self.index.usage(self.provider.name, self.pool.name)
        pending = self.ledger.pending_costs(self.index.live_ids(self.provider.name))
        return (Quota.total([*(self._group_cost(key, n) for key, n in mine), *pending]),
                Quota.total([*(self._group_cost(key, n) for key, n in everyone), *pending]))

    def _group_cost(self, key: UsageKey, count: int) -> Quota:
        label, resources = key
        cost = Quota(dict(resources)) if resources else self.label_cost(label)
        return Quota({k: v * count for k, v in cost.resources.items()})

    def recount(self, nodes: Iterable[Node], pool_only: bool) -> Quota:
        """`usage` by walking `nodes` (the reference the index is tested against)."""
        seen: set[str] = set()
        costs = []
        for node in nodes:
            if node.provider != self.provider.name or node.state is NodeState.DELETED:
                continue
            if node.id:
                seen.add(node.id)
            if pool_only and node.pool != self.pool.name:
                continue
            costs.append(self._node_cost(node))
        costs.extend(self.ledger.pending_costs(seen))
        return Quota.total(costs)

    def _node_cost(self, node: Node) -> Quota:
        if node.resources:
            return Quota({k: float(v) for k, v in node.resources.items()})
        return self.label_cost(node.label or "")

    # -- the cloud's side --------------------------------------------------------------------
    def cloud_limit(self) -> Quota:
        """The cloud's limits minus unmanaged usage, re-read at most every `cloud_quota_ttl`.

        Only the first read blocks; later ones refresh in the background and return the
        previous value meanwhile, so the pool worker never waits behind a burst of API calls
        (the value may be stale by up to a TTL plus one refresh either way)."""
        if self.pool.ignore_provider_quota:
            return Quota()
        now = time.monotonic()
        cloud = self._cloud
        if cloud is not None and now - cloud[0] < self.cloud_quota_ttl:
            return cloud[1]
        if cloud is not None:
            with self._lock:
                if self._refreshing:
                    return cloud[1]
                self._refreshing = True
            threading.Thread(target=self._refresh_cloud_limit,
                             name=f"quota-{self.pool_id[-8:]}", daemon=True).start()
            return cloud[1]
        return self._refresh_cloud_limit()

    def _refresh_cloud_limit(self) -> Quota:
        now = time.monotonic()
        try:
            adapter, provider = self.adapter, self.provider.name
            limits = adapter.get_quota_limits()
            known = self.index.record_ids(provider)  # a view: no walk of the fleet
            unmanaged = q.unmanaged_usage(adapter.list_instances(), provider, known)
            headroom = q.cloud_headroom(limits, unmanaged)
        except Exception as e:
            # Once per outage: the driver backs off, so each TTL would repeat the same line.
            if not self._quota_unreadable:
                log.warning("%s: cannot read cloud quota (using the last known): %s",
                            self.pool_id, e)
            self._quota_unreadable = True
            headroom = self._cloud[1] if self._cloud else Quota()
        else:
            if self._quota_unreadable:
                log.info("%s: cloud quota readable again", self.pool_id)
            self._quota_unreadable = False
        self._cloud = (now, headroom)
        with self._lock:
            self._refreshing = False
        return headroom

    def invalidate_cloud_quota(self) -> None:
        self._cloud = None


@dataclass
class UnusedNodeFreer:
    """At quota: delete the oldest READY unallocated node of the pool, at most once a second
    and not while a node of the pool is being deleted already (room is coming). Not in a
    static pool: its nodes are hosts, and every one of them is as good."""

    zk: LauncherZK
    pool_id: str
    provider_name: str
    pool_name: str
    launches_servers: bool
    index: NodeIndex = field(default_factory=NodeIndex)
    _last_free: float = 0.0

    def free_oldest(self) -> None:
        if not self.launches_servers:
            return
        zk = self.zk
        if self.index.count(self.provider_name, self.pool_name, NodeState.DELETING):
            return  # room is coming
        if time.monotonic() - self._last_free < 1.0:
            return
        idle = sorted(
            (n for n in self.index.ready_free(self.provider_name, self.pool_name)
             if not zk.node_locked(n)),
            key=lambda n: n.state_time or 0.0,
        )
        for node in idle:
            if change_idle_node(zk, node.id or "", mark_deleting) is not None:
                log.info("%s: at quota, deleting oldest unused node %s", self.pool_id,
                         node.id)
                self._last_free = time.monotonic()
                return

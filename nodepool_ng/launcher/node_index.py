"""`NodeIndex`: what the launcher's per-request passes need from the node cache, kept up to
date from the cache's change events, so a pass costs what it reads, not the fleet's size.

The node cache calls its listeners `(node_id, node_or_None)` on every change of a node
record or of its lock contenders (`zk/cache.py` `RecordCache`), one event after the other on
the cache's thread, each with the record as the cache holds it now. The index keeps, per
node id, the facts it derived from the last event (never re-reading a shared record to
undo them), and from those:

- usage groups per provider and pool (nodes not `deleted`): (label, resources) -> count, so
  `PoolQuota` prices a group once instead of every node;
- the ids of each provider's nodes not `deleted` (the ledger's "the cache shows it");
- READY unallocated nodes by provider and pool (the freer), by provider, pool and label
  (`handler._claim_ready`), and their count per label over every provider (min-ready);
- node counts by provider, pool and state;
- the nodes the deleter looks at: unlocked, in a cleanup state or READY and allocated.

Each event replaces what the node's previous event contributed, so the index equals a
recount over the cache's current records whatever the order of changes; a cache resync
reaches it as the same per-record events (added, updated, removed). `rebuild` recounts from
a snapshot (a new ZooKeeper session). One lock; nothing is called while it is held.

Readers still check what changes without a record event reaching the index first (a lock
taken meanwhile: `LauncherZK.node_locked`) on the few nodes the index gives them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nodepool_ng.model.node import CLEANUP_STATES, Node, NodeState

# A usage group: (label, resources as sorted items, or None: priced by the label's cost).
UsageKey = tuple[str, tuple[tuple[str, float], ...] | None]


@dataclass(frozen=True)
class _Facts:
    provider: str | None
    pool: str | None
    state: NodeState | None
    labels: frozenset[str]  # set(node.type)
    usage_key: UsageKey
    ready_free: bool  # READY and not allocated
    for_deleter: bool


def usage_key(node: Node) -> UsageKey:
    """A node's usage group: what `PoolQuota` prices it by."""
    if node.resources:
        return (node.label or "", tuple(sorted((k, float(v)) for k, v in node.resources.items())))
    return (node.label or "", None)


def for_deleter(node: Node) -> bool:
    """The deleter looks at the node: unlocked, and to remove or to give back."""
    if node.lock_contenders:
        return False
    return node.state in CLEANUP_STATES or (
        node.state is NodeState.READY and bool(node.allocated_to))


def _facts(node: Node) -> _Facts:
    return _Facts(
        provider=node.provider,
        pool=node.pool,
        state=node.state,
        labels=frozenset(node.type),
        usage_key=usage_key(node),
        ready_free=node.state is NodeState.READY and not node.allocated_to,
        for_deleter=for_deleter(node),
    )


class NodeIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, Node] = {}
        self._facts: dict[str, _Facts] = {}
        # provider -> pool -> usage group -> count (nodes not DELETED)
        self._usage: dict[str | None, dict[str | None, Counter[UsageKey]]] = {}
        self._live: dict[str | None, set[str]] = {}  # provider -> ids not DELETED
        # (provider, pool, label) -> READY unallocated nodes by id
        self._ready: dict[tuple[str | None, str | None, str], dict[str, Node]] = {}
        self._ready_pool: dict[tuple[str | None, str | None], dict[str, Node]] = {}
        self._ready_labels: Counter[str] = Counter()  # label -> READY unallocated, anywhere
        self._states: Counter[tuple[str | None, str | None, NodeState | None]] = Counter()
        self._deleter: dict[str, Node] = {}

    @classmethod
    def of(cls, nodes: Iterable[Node]) -> NodeIndex:
        index = cls()
        index.rebuild(lambda: nodes)
        return index

    # -- writers: the node cache's events ------------------------------------------------------
    def on_node(self, node_id: str, node: Node | None) -> None:
        """A node cache event: `node` is the record now, None when it is gone."""
        with self._lock:
            self._drop(node_id)
            if node is not None:
                self._add(node_id, node)

    def rebuild(self, snapshot: Callable[[], Iterable[Node]]) -> None:
        """Recount from `snapshot()` (the cache's records), taken under the lock: the cache
        changes its copy before it calls its listeners, so an event for a change the
        snapshot missed (or already shows) waits for the lock and has the last word."""
        with self._lock:
            nodes = snapshot()
            self._nodes.clear()
            self._facts.clear()
            self._usage.clear()
            self._live.clear()
            self._ready.clear()
            self._ready_pool.clear()
            self._ready_labels.clear()
            self._states.clear()
            self._deleter.clear()
            for node in nodes:
                if node.id:
                    self._drop(node.id)
                    self._add(node.id, node)

    def _add(self, node_id: str, node: Node) -> None:
        facts = _facts(node)
        self._nodes[node_id] = node
        self._facts[node_id] = facts
        self._states[(facts.provider, facts.pool, facts.state)] += 1
        if facts.state is not NodeState.DELETED:
            self._usage.setdefault(facts.provider, {}).setdefault(
                facts.pool, Counter())[facts.usage_key] += 1
            self._live.setdefault(facts.provider, set()).add(node_id)
        if facts.ready_free:
            self._ready_pool.setdefault((facts.provider, facts.pool), {})[node_id] = node
            for label in facts.labels:
                self._ready.setdefault((facts.provider, facts.pool, label), {})[node_id] = node
                self._ready_labels[label] += 1
        if facts.for_deleter:
            self._deleter[node_id] = node

    def _drop(self, node_id: str) -> None:
        facts = self._facts.pop(node_id, None)
        self._nodes.pop(node_id, None)
        if facts is None:
            return
        _decrement(self._states, (facts.provider, facts.pool, facts.state))
        if facts.state is not NodeState.DELETED:
            pools = self._usage[facts.provider]
            _decrement(pools[facts.pool], facts.usage_key)
            if not pools[facts.pool]:
                del pools[facts.pool]
                if not pools:
                    del self._usage[facts.provider]
            live = self._live[facts.provider]
            live.discard(node_id)
            if not live:
                del self._live[facts.provider]
        if facts.ready_free:
            pool_key = (facts.provider, facts.pool)
            in_pool = self._ready_pool[pool_key]
            in_pool.pop(node_id, None)
            if not in_pool:
                del self._ready_pool[pool_key]
            for label in facts.labels:
                key = (facts.provider, facts.pool, label)
                ready = self._ready[key]
                ready.pop(node_id, None)
                if not ready:
                    del self._ready[key]
                _decrement(self._ready_labels, label)
        self._deleter.pop(node_id, None)

    # -- readers -------------------------------------------------------------------------------
    def get(self, node_id: str) -> Node | None:
        with self._lock:
            return self._nodes.get(node_id)

    def __contains__(self, node_id: object) -> bool:
        with self._lock:
            return node_id in self._nodes

    def __len__(self) -> int:
        with self._lock:
            return len(self._nodes)

    def usage(self, provider: str, pool: str
              ) -> tuple[list[tuple[UsageKey, int]], list[tuple[UsageKey, int]]]:
        """Usage groups with their counts of `provider`'s nodes not DELETED: (those of
        `pool`, those of every pool of the provider)."""
        with self._lock:
            pools = self._usage.get(provider, {})
            mine = list(pools.get(pool, Counter()).items())
            everyone: Counter[UsageKey] = Counter()
            for groups in pools.values():
                everyone.update(groups)
            return mine, list(everyone.items())

    def is_live(self, provider: str, node_id: str) -> bool:
        """`node_id` is a node of `provider` that is not DELETED."""
        with self._lock:
            return node_id in self._live.get(provider, ())

    def live_ids(self, provider: str) -> ProviderIds:
        """A container view of `is_live` for one provider."""
        return ProviderIds(self.is_live, provider)

    def has_record(self, provider: str, node_id: str) -> bool:
        """`node_id` is a node record of `provider`, in any state (DELETED too)."""
        with self._lock:
            facts = self._facts.get(node_id)
            return facts is not None and facts.provider == provider

    def record_ids(self, provider: str) -> ProviderIds:
        """A container view of `has_record` for one provider."""
        return ProviderIds(self.has_record, provider)

    def ready_free(self, provider: str, pool: str, label: str | None = None) -> list[Node]:
        """READY unallocated nodes of the pool (with `label`: that label's), by id."""
        with self._lock:
            if label is not None:
                found = dict(self._ready.get((provider, pool, label), {}))
            else:
                found = dict(self._ready_pool.get((provider, pool), {}))
        return [found[nid] for nid in sorted(found)]

    def ready_free_by_label(self) -> Counter[str]:
        """Label -> READY unallocated nodes that have it, over every provider."""
        with self._lock:
            return Counter(self._ready_labels)

    def count(self, provider: str, pool: str, state: NodeState) -> int:
        with self._lock:
            return self._states.get((provider, pool, state), 0)

    def deleter_nodes(self) -> list[Node]:
        """Unlocked nodes in a cleanup state, or READY and allocated (to a request that may
        be gone), as of their last event."""
        with self._lock:
            return list(self._deleter.values())


class ProviderIds:
    """`node_id in view`: one provider's node ids the index holds, as `test(provider, id)`
    says (`NodeIndex.live_ids`, `record_ids`). A view, not a copy: a membership test costs
    the same for a fleet of 10 or 2,000 (`PoolLedger.pending_costs`, the cloud-limit refresh).
    """

    def __init__(self, test: Callable[[str, str], bool], provider: str) -> None:
        self._test = test
        self._provider = provider

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, str) and self._test(self._provider, node_id)


def _decrement(counter: Counter[Any], key: Any) -> None:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]

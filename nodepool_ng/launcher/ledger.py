"""`PoolLedger`: what one pool has promised that the node cache does not show yet.

The pool worker decides in order and runs the ZooKeeper I/O of its accepts in the
background, so between a decision and the node cache showing its result the pool's usage
must still count it. The ledger alone keeps those promises, under one lock:

- a *reservation*: quota promised to one slot of an accept still running (a token);
- a *created node*: a node we created that the cache may not have shown yet (its cost);
- a *claim*: a cached READY node promised to one accept, so no other accept takes it;
- a *request in flight*: one the pool is accepting or handling, from the decision to accept
  until it is fulfilled, declined, given back or gone; with the nodes it holds (locked by us:
  the deleter leaves them alone even while a ZooKeeper session expiry took their locks) and
  what it was promised against its tenant's resource limits.

A reservation becomes its node's cost in one step (`note_created`), so quota is never
counted twice or not at all. A created node leaves the ledger at the first cache event about
it (`node_seen`: shown, changed or already gone), so the ledger converges to the nodes that
exist whatever their timing: a node created and deleted between two planning passes gives
its slot back as well.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from nodepool_ng.model.quota import Quota


@dataclass
class _InFlight:
    nodes: set[str] = field(default_factory=set)
    tenant: tuple[str, Quota] | None = None  # (tenant, cost) promised against its limits


class PoolLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reserved: dict[int, Quota] = {}
        # the sum of `_reserved`, kept as they come and go: a burst queues hundreds of
        # accepts, and every quota check of the pool reads the sum
        self._reserved_sum: Counter[str] = Counter()
        self._next_token = 0
        self._created: dict[str, Quota] = {}
        self._claimed: set[str] = set()
        self._requests: dict[str, _InFlight] = {}
        self._holders: Counter[str] = Counter()  # node id -> requests in flight holding it

    # -- quota -----------------------------------------------------------------------------
    def reserve(self, cost: Quota) -> int:
        """Promise `cost` to one slot of an accept running in the background; a token."""
        with self._lock:
            self._next_token += 1
            self._reserved[self._next_token] = cost
            self._reserved_sum.update(cost.resources)
            return self._next_token

    def unreserve(self, tokens: Iterable[int]) -> None:
        """Give back reservations that did not become nodes (no-op for those that did)."""
        with self._lock:
            for token in tokens:
                self._end_reservation(token)

    def note_created(self, node_id: str, cost: Quota, token: int | None = None) -> None:
        """A node we just created counts with `cost` until the cache has told us about it;
        its reservation, if any, ends in the same step."""
        with self._lock:
            self._created[node_id] = cost
            if token is not None:
                self._end_reservation(token)

    def _end_reservation(self, token: int) -> None:
        cost = self._reserved.pop(token, None)
        if cost is not None:
            self._reserved_sum.subtract(cost.resources)

    def node_seen(self, node_id: str) -> None:
        """The node cache reported `node_id` (present, changed or removed): from now on
        the cache alone accounts for it."""
        with self._lock:
            self._created.pop(node_id, None)

    def pending_costs(self, cached_ids: Container[str]) -> list[Quota]:
        """Costs of promises the cache does not show: reservations, and created nodes not
        in `cached_ids` (a node the cache already shows is counted there, not twice)."""
        with self._lock:
            created = [c for nid, c in self._created.items() if nid not in cached_ids]
            if self._reserved:
                created.append(Quota(dict(self._reserved_sum)))
            return created

    @property
    def reservations(self) -> int:
        with self._lock:
            return len(self._reserved)

    # -- ready nodes -----------------------------------------------------------------------
    def claim(self, node_id: str) -> bool:
        """Promise a cached READY node to one accept; False if already promised."""
        with self._lock:
            if node_id in self._claimed:
                return False
            self._claimed.add(node_id)
            return True

    def unclaim(self, node_ids: Iterable[str]) -> None:
        with self._lock:
            self._claimed.difference_update(node_ids)

    # -- requests in flight ----------------------------------------------------------------
    def open_request(self, request_id: str) -> None:
        """The pool decided to accept `request_id`: in flight until `close_request`."""
        with self._lock:
            self._requests.setdefault(request_id, _InFlight())

    def promise_tenant(self, request_id: str, tenant: str, cost: Quota) -> None:
        """Count `cost` against `tenant`'s limits until the request closes (`tenant_limits`)."""
        with self._lock:
            self._requests.setdefault(request_id, _InFlight()).tenant = (tenant, cost)

    def hold(self, request_id: str, node_id: str) -> None:
        """`request_id` holds (has locked) `node_id`."""
        with self._lock:
            nodes = self._requests.setdefault(request_id, _InFlight()).nodes
            if node_id not in nodes:
                nodes.add(node_id)
                self._holders[node_id] += 1

    def let_go(self, request_id: str, node_id: str) -> None:
        with self._lock:
            entry = self._requests.get(request_id)
            if entry is not None and node_id in entry.nodes:
                entry.nodes.discard(node_id)
                self._release(node_id)

    def close_request(self, request_id: str) -> None:
        """Done with `request_id`: its nodes and its tenant promise go with it."""
        with self._lock:
            entry = self._requests.pop(request_id, None)
            for node_id in entry.nodes if entry is not None else ():
                self._release(node_id)

    def _release(self, node_id: str) -> None:
        left = self._holders[node_id] - 1
        if left > 0:
            self._holders[node_id] = left
        else:
            del self._holders[node_id]

    def requests(self) -> set[str]:
        """Requests in flight (any thread: the cleanup leaves them alone)."""
        with self._lock:
            return set(self._requests)

    def held_nodes(self) -> set[str]:
        """Nodes our requests in flight hold (any thread: the deleter leaves them alone)."""
        with self._lock:
            return set(self._holders)

    def holds(self, node_id: str) -> bool:
        """A request in flight holds `node_id` (`held_nodes` without the copy)."""
        with self._lock:
            return node_id in self._holders

    def tenant_promises(self) -> dict[str, tuple[str, Quota]]:
        """Request id -> (tenant, cost) promised by requests in flight."""
        with self._lock:
            return {rid: e.tenant for rid, e in self._requests.items() if e.tenant is not None}

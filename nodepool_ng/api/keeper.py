"""`LeaseKeeper`: the launcher thread that keeps the REST API's leases (one in every
launcher; woken by the lease and request caches, and at the next expiry).

A lease is owned by the launcher whose keeper holds its lock
(`/nodepool/api-leases/<id>/lock`); every keeper takes the unowned, unfinished leases it
sees. The owner does on the client's behalf what Zuul does for a build:

- while the node request waits: mirror `pending`; once it is `fulfilled`, accept it (lock
  each node, check it is still allocated to the request, `in-use` with `user_data` naming
  the lease, then delete the request); a `failed` request fails the lease;
- while the lease is valid: keep the node locks;
- once it is returned or lapsed: nodes `used` and unlocked (the DeletedNodeWorker deletes
  them), the lease `released` (`expired`, if it lapsed). A request still waiting at expiry
  is deleted (Zuul's cancel).

When the owner dies its locks vanish with its session; another keeper takes the lease lock
and re-locks the nodes (the DeletedNodeWorker leaves unlocked `in-use` nodes of a valid lease
alone meanwhile). Finished leases are removed RETENTION seconds after they finished. An
API node request without a lease record ORPHAN_AGE after it was made (its API process died
between the two writes) is deleted: nobody would ever accept it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from nodepool_ng import prometheus
from nodepool_ng.errors import LockError, RecordNotFound, ZooKeeperError
from nodepool_ng.model.lease import (
    API_REQUESTOR_DATA,
    NODE_USER_DATA_KEY,
    WAITING_LEASE_STATES,
    Lease,
    LeaseState,
    lease_of_node,
)
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import NodeRequest, RequestState
from nodepool_ng.runtime.loop import Worker
from nodepool_ng.zk import locks
from nodepool_ng.zk.client import ConnectionState
from nodepool_ng.zk.leases import LeaseStore
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore

log = logging.getLogger("nodepool_ng.api.keeper")

RETENTION = 3600.0  # seconds a finished lease record stays (clients may still read it)
NODE_LOCK_TIMEOUT = 5.0  # waiting for a node lock (e.g. the deleter looking at it)
RETRY = 1.0  # seconds before trying again what could not be done now
ORPHAN_AGE = 60.0  # seconds an API node request may be without its lease record
ORPHAN_CHECK = 60.0  # seconds between looks for such requests


class _NotHandedOver(Exception):
    """A node of the fulfilled request is no longer the request's."""


@dataclass
class _Owned:
    """A lease whose lock we hold: our copy of it, and the node locks we hold for it."""

    lease: Lease
    nodes: dict[str, Node] = field(default_factory=dict)
    nodes_taken: bool = False  # every node of a fulfilled lease is locked (or gone)


class LeaseKeeper(Worker):
    def __init__(self, leases: LeaseStore, requests: RequestStore, nodes: NodeStore,
                 hostname: str, interval: float = 30.0,
                 paused: Callable[[], bool] | None = None,
                 retention: float = RETENTION) -> None:
        super().__init__("LeaseKeeper", interval=interval, paused=paused)
        self._leases = leases
        self._requests = requests
        self._nodes = nodes
        self._hostname = hostname
        self._retention = retention
        self._owned: dict[str, _Owned] = {}  # by lease id; the keeper's thread only
        self._session_lost = threading.Event()
        self._reported: set[str] = set()  # tokens with a leases-held gauge
        self._next_orphan_check = time.monotonic() + ORPHAN_CHECK

    # -- wake-ups (cache and session threads) --------------------------------------------------
    def on_lease(self, lease_id: str, lease: object) -> None:
        self.wake()

    def on_request(self, request_id: str, request: object) -> None:
        if self._leases.cached_lease(request_id) is not None:
            self.wake()

    def on_zk_state(self, state: ConnectionState) -> None:
        """An expired session took our locks: forget them (the next pass re-takes)."""
        if state is ConnectionState.LOST:
            self._session_lost.set()
            self.wake()

    def owned(self) -> list[str]:
        """Ids of the leases this keeper owns (tests, status)."""
        return sorted(self._owned)

    # -- the pass ------------------------------------------------------------------------------
    def run_once(self) -> float | None:
        if self._session_lost.is_set():
            self._session_lost.clear()
            self._forget_all()
        now = time.time()
        cached = {lease.id: lease for lease in self._leases.cached_leases() if lease.id}
        for lease_id in [i for i in self._owned if i not in cached]:
            self._record_gone(lease_id)
        delays: list[float] = []
        for lease in cached.values():
            if self.stopped:
                break
            try:
                delay = self._keep(lease, now)
            except (ZooKeeperError, LockError) as e:
                log.warning("Lease %s: %s; trying again", lease.id, e)
                delay = RETRY
            if delay is not None:
                delays.append(delay)
        self._report()
        if time.monotonic() >= self._next_orphan_check:
            self._next_orphan_check = time.monotonic() + ORPHAN_CHECK
            self._delete_orphans(set(cached), now)
        delays.append(self._next_orphan_check - time.monotonic())
        return max(0.05, min(delays))

    def _delete_orphans(self, lease_ids: set[str], now: float) -> None:
        for request in self._requests.cached_requests():
            if (request.requestor_data != API_REQUESTOR_DATA or request.id in lease_ids
                    or now - (request.created_time or now) < ORPHAN_AGE):
                continue
            try:
                if self._leases.exists(request.id or ""):
                    continue
                log.warning("Deleting node request %s of %s: it has no lease", request.id,
                            request.requestor)
                self._requests.delete(request.id or "")
            except ZooKeeperError as e:
                log.warning("Could not delete node request %s: %s", request.id, e)

    def _keep(self, cached: Lease, now: float) -> float | None:
        """Do what the lease needs now; the seconds until it needs something again."""
        lease_id = cached.id or ""
        owned = self._owned.get(lease_id)
        if cached.finished and cached.released:
            if owned is not None:
                self._let_go(owned)
            age = now - (cached.state_time or now)
            if age < self._retention:
                return self._retention - age
            self._remove(lease_id)
            return None
        if owned is None:
            if self._leases.cached_locked(lease_id):
                return None  # another keeper's; its lock going wakes us
            owned = self._take(lease_id)
            if owned is None:
                return None
        elif owned.lease.zk_version != cached.zk_version:
            self._leases.refresh(owned.lease)
        lease = owned.lease
        if lease.finished:
            return self._give_back(owned)
        if lease.state in WAITING_LEASE_STATES:
            return self._wait_for_request(owned, now)
        if lease.lapsed(now):
            return self._give_back(owned, expired=True)
        if not owned.nodes_taken and not self._retake(owned):
            return RETRY
        return lease.expires - now

    # -- owning a lease ------------------------------------------------------------------------
    def _take(self, lease_id: str) -> _Owned | None:
        lease = Lease(id=lease_id)
        try:
            self._leases.lock(lease, identifier=self._hostname)
        except LockError:
            return None
        try:
            self._leases.refresh(lease)
        except RecordNotFound:
            self._leases.unlock(lease)
            return None
        owned = self._owned[lease_id] = _Owned(lease)
        log.info("Keeping lease %s of %s (%s)", lease_id, lease.requestor,
                 lease.state.value if lease.state else "?")
        return owned

    def _let_go(self, owned: _Owned) -> None:
        self._leases.unlock(owned.lease)
        self._owned.pop(owned.lease.id or "", None)

    def _forget_all(self) -> None:
        for owned in self._owned.values():
            locks.forget(owned.lease.lock)
            for node in owned.nodes.values():
                locks.forget(node.lock)
        if self._owned:
            log.warning("ZooKeeper session lost: %d lease(s) to take again", len(self._owned))
        self._owned.clear()

    def _record_gone(self, lease_id: str) -> None:
        """The record vanished under us (an operator removed it): give its nodes back."""
        owned = self._owned.pop(lease_id)
        log.warning("Lease %s vanished; giving its nodes back", lease_id)
        self._release_nodes(owned)
        locks.forget(owned.lease.lock)

    def _remove(self, lease_id: str) -> None:
        lease = Lease(id=lease_id)
        try:
            self._leases.lock(lease, identifier=self._hostname)
        except LockError:
            return
        try:
            self._leases.delete(lease_id)
        finally:
            self._leases.unlock(lease)
        log.info("Removed finished lease %s", lease_id)

    def _update(self, owned: _Owned, change: Callable[[Lease], bool]) -> bool:
        def with_owner(lease: Lease) -> bool:
            if not change(lease):
                return False
            lease.owner = self._hostname
            return True

        return self._leases.update(owned.lease, with_owner)

    def _finish(self, owned: _Owned, state: LeaseState, reason: str | None) -> None:
        """A lease that holds no node ends (failed, or expired while waiting)."""
        def change(lease: Lease) -> bool:
            if lease.finished and lease.released:
                return False
            if not lease.finished:
                lease.state = state
                lease.failure_reason = reason
            lease.released = True
            return True

        self._update(owned, change)
        log.info("Lease %s %s%s", owned.lease.id, owned.lease.state,
                 f": {reason}" if reason else "")
        self._let_go(owned)

    # -- waiting for the request -----------------------------------------------------------------
    def _wait_for_request(self, owned: _Owned, now: float) -> float | None:
        lease = owned.lease
        lease_id = lease.id or ""
        if lease.lapsed(now):
            self._requests.delete(lease_id)
            self._finish(owned, LeaseState.EXPIRED,
                         "the lease ran out before its node request was fulfilled")
            prometheus.API_LEASE_EXPIRIES.labels(lease.requestor or "").inc()
            return None
        request = self._request(lease_id)
        if request is None:
            self._finish(owned, LeaseState.FAILED, "its node request is gone")
            return None
        if request.state is RequestState.FULFILLED:
            self._accept(owned, request)
            return RETRY if owned.lease.id in self._owned else None
        if request.state is RequestState.FAILED:
            self._finish(owned, LeaseState.FAILED, _failure_reason(request))
            self._requests.delete(lease_id)
            return None
        if request.state is RequestState.PENDING and lease.state is LeaseState.REQUESTED:
            self._update(owned, _mark_pending)
        return lease.expires - now

    def _request(self, request_id: str) -> NodeRequest | None:
        request = self._requests.cached_request(request_id)
        if request is not None:
            return request
        try:  # the cache may not have seen it yet
            return self._requests.get(request_id)
        except RecordNotFound:
            return None

    def _accept(self, owned: _Owned, request: NodeRequest) -> None:
        """Zuul's acceptNodes and the start of its job: lock the nodes, check them, in-use,
        then delete the request."""
        lease = owned.lease
        lease_id = lease.id or ""
        taken: list[Node] = []
        try:
            for node_id in request.nodes:
                node = Node(id=node_id)
                self._nodes.lock(node, blocking=True, timeout=NODE_LOCK_TIMEOUT,
                                 identifier=f"{self._hostname} lease {lease_id}")
                taken.append(node)
                self._nodes.refresh(node)
                ours = node.state is NodeState.IN_USE and lease_of_node(node.user_data) == lease_id
                if node.allocated_to != lease_id or not (node.state is NodeState.READY or ours):
                    raise _NotHandedOver(f"node {node_id} is {node.state} and allocated to "
                                         f"{node.allocated_to}")
            for node in taken:
                if node.state is not NodeState.IN_USE:
                    node.state = NodeState.IN_USE
                    node.user_data = {NODE_USER_DATA_KEY: lease_id, "requestor": lease.requestor}
                    self._nodes.store(node)
        except (LockError, RecordNotFound, _NotHandedOver) as e:
            self._release_nodes(_Owned(lease, {n.id or "": n for n in taken}))
            self._finish(owned, LeaseState.FAILED,
                         f"could not take the nodes of the fulfilled request: {e}")
            self._requests.delete(lease_id)
            return
        except ZooKeeperError:
            for node in taken:
                self._nodes.unlock(node)
            raise
        owned.nodes = {node.id or "": node for node in taken}
        owned.nodes_taken = True
        node_ids = [node.id or "" for node in taken]

        def fulfil(current: Lease) -> bool:
            if current.finished:
                return False  # returned meanwhile
            current.state = LeaseState.FULFILLED
            current.nodes = node_ids
            return True

        written = self._update(owned, fulfil)
        self._requests.delete(lease_id)
        if written:
            log.info("Lease %s fulfilled for %s: nodes %s", lease_id, lease.requestor,
                     ",".join(node_ids))
        else:
            self._give_back(owned)

    # -- holding and giving back -----------------------------------------------------------------
    def _retake(self, owned: _Owned) -> bool:
        """Lock every node of the lease not locked yet (we took the lease over). False when
        one could not be locked now (try again); gone or no longer ours: left out."""
        lease_id = owned.lease.id or ""
        for node_id in owned.lease.nodes:
            if node_id in owned.nodes:
                continue
            node = Node(id=node_id)
            try:
                self._nodes.lock(node, blocking=True, timeout=NODE_LOCK_TIMEOUT,
                                 identifier=f"{self._hostname} lease {lease_id}")
            except LockError:
                if self._nodes.exists(node_id):
                    return False
                continue
            try:
                self._nodes.refresh(node)
            except RecordNotFound:
                self._nodes.unlock(node)
                continue
            if node.state is not NodeState.IN_USE or lease_of_node(node.user_data) != lease_id:
                self._nodes.unlock(node)  # given back already, or not ours
                continue
            owned.nodes[node_id] = node
        owned.nodes_taken = True
        log.info("Lease %s: holding nodes %s", lease_id, ",".join(sorted(owned.nodes)))
        return True

    def _give_back(self, owned: _Owned, expired: bool = False) -> float | None:
        """Nodes `used` and unlocked, the lease released (`expired` if it lapsed)."""
        if not owned.nodes_taken and not self._retake(owned):
            return RETRY
        self._release_nodes(owned)

        def change(lease: Lease) -> bool:
            if lease.finished and lease.released:
                return False
            if not lease.finished:
                lease.state = LeaseState.EXPIRED if expired else LeaseState.RETURNED
            lease.released = True
            return True

        self._update(owned, change)
        lease = owned.lease
        if expired and lease.state is LeaseState.EXPIRED:
            prometheus.API_LEASE_EXPIRIES.labels(lease.requestor or "").inc()
        log.info("Lease %s %s: nodes given back", lease.id, lease.state)
        self._let_go(owned)
        return None

    def _release_nodes(self, owned: _Owned) -> None:
        for node in owned.nodes.values():
            try:
                if node.state is NodeState.IN_USE:
                    node.state = NodeState.USED
                    self._nodes.store(node)
            except (RecordNotFound, ZooKeeperError) as e:
                log.warning("Lease %s: could not mark node %s used: %s", owned.lease.id,
                            node.id, e)
            finally:
                self._nodes.unlock(node)
        owned.nodes.clear()

    def _report(self) -> None:
        held = Counter(o.lease.requestor or "" for o in self._owned.values()
                       if o.lease.state is LeaseState.FULFILLED)
        for token in self._reported | set(held):
            prometheus.API_LEASES_HELD.labels(token).set(held.get(token, 0))
        self._reported |= set(held)


def _mark_pending(lease: Lease) -> bool:
    if lease.state is not LeaseState.REQUESTED:
        return False
    lease.state = LeaseState.PENDING
    return True


def _failure_reason(request: NodeRequest) -> str:
    reason = request.extra.get("failure_reason")
    if isinstance(reason, str) and reason:
        return reason
    if request.declined_by:
        return f"declined by every pool that could serve it: {', '.join(request.declined_by)}"
    return "the node request failed"

"""`DeletedNodeWorker`: removes finished nodes, and frees READY nodes whose request is gone.

Woken by the node cache (and every `interval` as a safety net). An unlocked node in a cleanup
state (used, in-use, building, failed, aborted, deleting, deleted) is locked, re-read, marked
`deleting`, its server (and floating IPs: the driver's delete machine) deleted by the
provider runner, then its znode removed. The runner retries a failing server delete with
backoff; if it gives up (its timeout) or the server cannot even be looked up, the node is
unlocked and taken again only after a backoff of its own (exponential, with jitter), so a dead
cloud is not asked again on every pass.
Locked nodes are somebody's (ours while building, Zuul's while in use): never touched;
nor are nodes `busy` says our handlers hold (after a session expiry their locks are gone
until the pool worker re-takes them).

An unlocked `in-use` node held for a REST API lease that is still valid (`leased`: a
direct read of the lease its `user_data` names) is left alone and looked at again after
LEASE_RECHECK: its lease keeper died and another launcher's keeper is about to re-lock it.

Taking a node for deletion (lock, re-read, `deleting`) is ~6 ZooKeeper round trips; done one
node after the other that capped the launcher at a few deletions per 100 ms (and so at a
few requests/s once the pool is at quota), so they run on a small bounded executor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Container
from concurrent.futures import ThreadPoolExecutor

from nodepool_ng.launcher.health import Backoff
from nodepool_ng.launcher.node_index import NodeIndex
from nodepool_ng.launcher.runner import ProviderRunner
from nodepool_ng.launcher.zkview import LauncherZK
from nodepool_ng.log import get_logger
from nodepool_ng.model.node import CLEANUP_STATES, Node, NodeState
from nodepool_ng.runtime.loop import Worker

DELETE_STARTERS = 8  # nodes taken for deletion concurrently (ZooKeeper I/O, not CPU)
RETRY_BACKOFF = (2.0, 60.0)  # (base, cap) seconds before a node whose deletion failed
LEASE_RECHECK = 2.0  # seconds before looking again at an in-use node of a valid lease


class DeletedNodeWorker(Worker):
    def __init__(
        self,
        zk: LauncherZK,
        runners: Callable[[], dict[str, ProviderRunner]],
        interval: float = 5.0,
        paused: Callable[[], bool] | None = None,
        busy: Callable[[], Container[str]] | None = None,
        index: NodeIndex | None = None,
        leased: Callable[[Node], bool] | None = None,
    ) -> None:
        """`index`: the launcher's index of the node cache (None: recount `zk.nodes()` on
        every pass). `leased(node)`: the node is held for a valid REST API lease."""
        super().__init__("DeletedNodeWorker", interval=interval, paused=paused)
        self.zk = zk
        self._runners = runners
        self._busy = busy or set
        self._index = index
        self._in_progress: set[str] = set()
        self._queued: set[str] = set()  # being taken for deletion by a starter thread
        self._retries: dict[str, Backoff] = {}  # node id -> backoff after failed deletions
        self._leased = leased
        self._leased_until: dict[str, float] = {}  # node id -> monotonic time to look again
        self._lock = threading.Lock()
        self._starters: ThreadPoolExecutor | None = None

    def run_once(self) -> float | None:
        runners = self._runners()
        busy = self._busy()
        index = self._index if self._index is not None else NodeIndex.of(self.zk.nodes())
        with self._lock:  # forget the backoffs of nodes that are gone
            for node_id in [i for i in self._retries if i not in index]:
                del self._retries[node_id]
            waits = [r.wait() for r in self._retries.values() if not r.ready()]
            now = time.monotonic()
            for node_id in [i for i, t in self._leased_until.items() if t <= now]:
                del self._leased_until[node_id]
            waits += [t - now for t in self._leased_until.values()]
        # Only the nodes it may act on: unlocked, to remove or to give back (`NodeIndex`).
        for node in index.deleter_nodes():
            if self.stopped:
                break
            if (
                not node.id
                or node.provider not in runners
                or node.id in busy
                or self.zk.node_locked(node)
            ):
                continue
            with self._lock:
                if node.id in self._in_progress or node.id in self._queued:
                    continue
                retry = self._retries.get(node.id)
                if retry is not None and not retry.ready():
                    continue
                if node.id in self._leased_until:
                    continue
            if node.state in CLEANUP_STATES:
                self._submit_delete(node.id, runners[node.provider or ""])
            elif (
                node.state is NodeState.READY
                and node.allocated_to
                and self.zk.request_cached(node.allocated_to) is None
            ):
                self._deallocate(node.id, node.allocated_to)
        return min(waits) if waits else None

    def _submit_delete(self, node_id: str, runner: ProviderRunner) -> None:
        with self._lock:
            self._queued.add(node_id)
            if self._starters is None:
                self._starters = ThreadPoolExecutor(DELETE_STARTERS, "delete-start")

        def run() -> None:
            try:
                self._start_delete(node_id, runner)
            except Exception:
                get_logger("nodepool_ng.launcher.deleter", node_id=node_id).exception(
                    "Could not start deleting the node; retrying later")
            finally:
                with self._lock:
                    self._queued.discard(node_id)

        self._starters.submit(run)

    def on_stop(self) -> None:
        if self._starters is not None:
            self._starters.shutdown(wait=True, cancel_futures=True)

    def _start_delete(self, node_id: str, runner: ProviderRunner) -> None:
        node = self.zk.lock_fresh_node(node_id)
        if node is None:
            return
        log = get_logger("nodepool_ng.launcher.deleter", node_id=node_id, provider=node.provider)
        if node.state not in CLEANUP_STATES or self._keeps_for_lease(node):
            self.zk.unlock_node(node)
            return
        try:
            if node.state is not NodeState.DELETING:
                node.state = NodeState.DELETING
                self.zk.store_node(node)
        except Exception as e:
            log.warning("Could not mark node deleting: %s", e)
            self.zk.unlock_node(node)
            return
        with self._lock:
            self._in_progress.add(node_id)
        if not node.external_id:
            # A launcher may have died after the cloud created the server but before the id
            # was recorded: find it by its owner metadata.
            try:
                node.external_id = self._find_server(runner, node)
            except Exception as e:
                # Unknown whether a server exists: keep the record (and retry later) rather
                # than leak one.
                log.warning("Could not list servers to find the node's server: %s", e)
                self._finish(node, False)
                return
        if node.external_id:
            log.info("Deleting server %s", node.external_id)
            # Removing the record is ZooKeeper I/O: keep it off the runner's thread.
            runner.delete(node.external_id, node_id, lambda ok: self._finish_later(node, ok))
        else:
            self._finish(node, True)

    def _keeps_for_lease(self, node: Node) -> bool:
        """An in-use node of a valid lease (or one we cannot tell): not to delete now."""
        if self._leased is None or node.state is not NodeState.IN_USE:
            return False
        try:
            keep = self._leased(node)
        except Exception as e:
            get_logger("nodepool_ng.launcher.deleter", node_id=node.id).warning(
                "Could not read the node's lease: %s", e)
            keep = True
        if keep:
            with self._lock:
                self._leased_until[node.id or ""] = time.monotonic() + LEASE_RECHECK
            self.wake()  # the next pass computes when to look again
        return keep

    def _find_server(self, runner: ProviderRunner, node: Node) -> str | None:
        for inst in runner.adapter.list_instances():
            if inst.node_id == node.id and inst.provider_name == node.provider:
                return inst.external_id
        return None

    def _finish_later(self, node: Node, ok: bool) -> None:
        starters = self._starters
        try:
            if starters is not None:
                starters.submit(self._finish, node, ok)
                return
        except RuntimeError:  # shut down: finish here
            pass
        self._finish(node, ok)

    def _finish(self, node: Node, ok: bool) -> None:
        """Called by the runner (or directly) once the server is gone or deleting failed."""
        log = get_logger("nodepool_ng.launcher.deleter", node_id=node.id, provider=node.provider)
        delay = 0.0
        try:
            if ok:
                self.zk.delete_node(node)
                log.info("Deleted node")
        except Exception as e:
            log.warning("Could not remove node record: %s", e)
        finally:
            self.zk.unlock_node(node)
            with self._lock:
                self._in_progress.discard(node.id or "")
                if not ok:
                    retry = self._retries.setdefault(node.id or "", Backoff(*RETRY_BACKOFF))
                    delay = retry.failed()
            if not ok:
                log.warning("Server deletion failed; trying again in %.0fs", delay)
                self.wake()  # the next pass computes when to look again

    def _deallocate(self, node_id: str, request_id: str) -> None:
        """READY node allocated to a request that no longer exists: give it back."""
        if self.zk.request_exists(request_id):
            return  # the cache lags; the request is there
        node = self.zk.lock_fresh_node(node_id)
        if node is None:
            return
        try:
            if (
                node.state is NodeState.READY
                and node.allocated_to == request_id
                and not self.zk.request_exists(request_id)
            ):
                node.allocated_to = None
                self.zk.store_node(node)
                get_logger("nodepool_ng.launcher.deleter", node_id=node_id).info(
                    "Deallocated from vanished request %s", request_id
                )
        finally:
            self.zk.unlock_node(node)

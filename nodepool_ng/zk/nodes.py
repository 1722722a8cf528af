"""NodeStore: the `/nodepool/nodes` records, their locks, and a watch-driven cache."""

from __future__ import annotations

import logging
import time
from typing import Any

from kazoo.exceptions import BadVersionError

from nodepool_ng.errors import LockError, RecordNotFound, ZooKeeperError
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.zk import locks, paths
from nodepool_ng.zk.cache import CachedStore, RecordCache
from nodepool_ng.zk.client import ZooKeeperClient

log = logging.getLogger("nodepool_ng.zk.nodes")


def _parse(path: str) -> tuple[str, str | None] | None:
    parsed = paths.parse_node_path(path)
    if parsed is None:
        return None
    node_id, is_lock, contender = parsed
    if not is_lock:
        return node_id, None
    if contender is None:
        return None  # the lock dir itself
    return node_id, contender


def _stamp(node: Node, version: int | None, contenders: frozenset[str]) -> None:
    if version is not None:
        node.zk_version = version
    node.lock_contenders = contenders


class NodeStore(CachedStore[Node]):
    """Create, read, write, lock and delete nodes. Call `start_cache()` for cached listing."""

    def __init__(self, client: ZooKeeperClient) -> None:
        super().__init__(client, RecordCache(
            client, paths.NODES_ROOT, _parse, Node.from_json, _stamp
        ))

    # -- cache -------------------------------------------------------------------------------
    def cached_nodes(self) -> list[Node]:
        """Snapshot of all cached nodes (no ZooKeeper round trip). Read-only objects."""
        return self.cache.values()

    def cached_node(self, node_id: str) -> Node | None:
        """One cached node or None."""
        return self.cache.get(node_id)

    # -- records -----------------------------------------------------------------------------
    def create(self, node: Node) -> str:
        """Store a new node under a fresh 10-digit sequence id; sets and returns `node.id`.

        `created_time` defaults to `state_time`, as upstream does on first store.
        """
        if node.state is None:
            node.set_state(NodeState.INIT)
        if node.created_time is None:
            node.created_time = node.state_time or time.time()
        created = self.client.create(
            paths.NODES_ROOT + "/", node.to_json(), sequence=True, what="new node"
        )
        node.id = created.rsplit("/", 1)[-1]
        node.zk_version = 0
        return node.id

    def get(self, node_id: str) -> Node:
        """Read a node from ZooKeeper (not the cache). RecordNotFound if gone."""
        data, stat = self.client.get(paths.node_path(node_id), what=f"node {node_id}")
        try:
            node = Node.from_json(node_id, data)
        except ValueError as e:
            raise ZooKeeperError(str(e)) from e
        node.zk_version = stat.version
        return node

    def exists(self, node_id: str) -> bool:
        """True if the node znode exists."""
        return self.client.exists(paths.node_path(node_id)) is not None

    def refresh(self, node: Node) -> Node:
        """Re-read `node` from ZooKeeper in place (keeps its lock); returns it."""
        if node.id is None:
            raise ValueError("node has no id")
        fresh = self.get(node.id)
        lock = node.lock
        for name in node.__dataclass_fields__:
            if name not in ("lock", "lock_contenders"):
                object.__setattr__(node, name, getattr(fresh, name))
        node.lock = lock
        return node

    def store(self, node: Node, check_version: bool = False) -> None:
        """Write `node` (must exist). With `check_version`, fail with ZooKeeperError if it
        changed since it was read."""
        if node.id is None:
            raise ValueError("node has no id; use create()")
        version = node.zk_version if check_version else -1
        path, data = paths.node_path(node.id), node.to_json()
        try:
            stat = self._write_through(path, data, lambda: self.client.set(
                path, data, version, what=f"node {node.id}"))
        except BadVersionError as e:
            raise ZooKeeperError(f"node {node.id}: changed since read") from e
        node.zk_version = stat.version

    def delete(self, node: Node | str) -> None:
        """Remove the node and its lock dir.

        Holding the node's lock with nobody waiting for it (the usual case), that is one
        transaction: no moment exists in which someone else could lock a half-deleted node.
        Otherwise upstream's two steps: write state `deleted`, then remove the znode tree
        (lock first), so a process winning the lock in between sees `deleted`.
        """
        node_id = node if isinstance(node, str) else node.id
        if node_id is None:
            raise ValueError("node has no id")
        if isinstance(node, Node) and self._delete_locked(node):
            return
        try:
            current = node if isinstance(node, Node) else self.get(node_id)
            current.set_state(NodeState.DELETED)
            self.store(current)
        except RecordNotFound:
            return
        self.client.delete(paths.node_path(node_id), recursive=True, what=f"node {node_id}")

    def _delete_locked(self, node: Node) -> bool:
        lock = node.lock
        contender = lock.contender_path if isinstance(lock, locks.ZkLock) else None
        if contender is None or node.id is None:
            return False
        txn = self.client.kazoo.transaction()
        txn.delete(contender)
        txn.delete(paths.node_lock_path(node.id))
        txn.delete(paths.node_path(node.id))
        results = self.client.call(f"node {node.id}", txn.commit_async)
        if any(isinstance(r, Exception) for r in results):
            return False  # e.g. someone waits for the lock (NotEmpty): two steps then
        locks.forget(lock)
        node.set_state(NodeState.DELETED)  # what the object now describes
        return True

    def ids(self) -> list[str]:
        """Node ids in ZooKeeper (direct read), sorted."""
        return sorted(c for c in self.client.get_children(paths.NODES_ROOT) if c != paths.LOCK)

    def read_all(self) -> list[Node]:
        """All nodes read directly from ZooKeeper (for the CLI; daemons use the cache)."""
        out = []
        for node_id in self.ids():
            try:
                out.append(self.get(node_id))
            except RecordNotFound:
                continue
        return out

    # -- locks -------------------------------------------------------------------------------
    def lock(
        self,
        node: Node,
        blocking: bool = False,
        timeout: float | None = None,
        identifier: str | None = None,
    ) -> None:
        """Take the node lock (`/nodepool/nodes/<id>/lock`); LockError if not taken.

        Non-blocking by default. Keeps the lock on `node.lock`. Re-read the node afterwards
        (`refresh`) and re-check its state: another process may have changed it.
        """
        if node.id is None:
            raise ValueError("node has no id")
        if node.lock is not None and node.lock.is_acquired:
            raise LockError(f"node {node.id}: already locked by this process")
        lock = self._new_lock(node.id, identifier)
        try:
            locks.acquire(self.client, lock, blocking=blocking, timeout=timeout,
                          what=f"node {node.id}", new_dir=node.zk_version == 0)
        except RecordNotFound as e:
            raise LockError(f"node {node.id}: gone") from e
        node.lock = lock

    def _new_lock(self, node_id: str, identifier: str | None) -> locks.ZkLock:
        # The lock dir's parent is the node: a missing parent means the node is gone.
        return locks.make_lock(self.client, paths.node_lock_path(node_id), identifier,
                               make_parents=False)

    def lock_and_store(self, node: Node, identifier: str | None = None) -> None:
        """Lock a node this process just created and write it, in one round trip when its
        lock dir does not exist yet (the usual case: nobody else has tried to lock it)."""
        if node.id is None:
            raise ValueError("node has no id")
        lock = self._new_lock(node.id, identifier)
        path, data = paths.node_path(node.id), node.to_json()
        written: list[Any] = []

        def lock_with_write() -> Any:
            # The write rides along only when the lock is taken in one transaction.
            written.extend(locks.acquire(self.client, lock, what=f"node {node.id}",
                                         new_dir=True,
                                         extra_ops=[("set", path, data, node.zk_version)]))
            return written[0] if written else None

        try:
            self._write_through(path, data, lock_with_write)
        except RecordNotFound as e:
            raise LockError(f"node {node.id}: gone") from e
        node.lock = lock
        if written:
            node.zk_version = written[0].version
        else:
            self.store(node)

    def unlock(self, node: Node) -> None:
        """Release the node lock if this object holds it."""
        locks.release(node.lock)
        node.lock = None

    def is_locked(self, node_id: str) -> bool:
        """True if anyone holds (or waits for) the node lock (direct read)."""
        return locks.is_locked(self.client, paths.node_lock_path(node_id))

    def lock_contenders(self, node_id: str) -> list[str]:
        """Contender znode names of the node lock, holder first (direct read)."""
        return locks.contenders(self.client, paths.node_lock_path(node_id))

    def force_unlock(self, node_id: str) -> bool:
        """Remove the holder's lock znode (admin use); True if there was one."""
        return locks.force_unlock(self.client, paths.node_lock_path(node_id))


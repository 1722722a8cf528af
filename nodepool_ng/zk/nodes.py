"""NodeStore: the `/nodepool/nodes` records, their locks, and a watch-driven cache."""

from __future__ import annotations

import logging
import time
from typing import Any

from nodepool_ng.errors import LockError, RecordNotFound
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.zk import locks, paths
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.records import RecordKind, RecordStore

log = logging.getLogger("nodepool_ng.zk.nodes")


def _parse(path: str) -> tuple[str, str | None] | None:
    return paths.cache_key(paths.parse_node_path(path))


NODES = RecordKind("node", Node, paths.node_path)


class NodeStore(RecordStore[Node]):
    """Create, read, write, lock and delete nodes. Call `start_cache()` for cached listing.

    `get(node_id)`, `exists(node_id)`, `refresh(node)`, `store(node, check_version)`,
    `ids()`, `unlock(node)` and `is_locked(node_id)` come from RecordStore."""

    def __init__(self, client: ZooKeeperClient) -> None:
        super().__init__(client, NODES, paths.NODES_ROOT, _parse, paths.node_lock_path,
                         lock_parents=False)

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
        return self._created(node, created)

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

    def read_all(self) -> list[Node]:
        """All nodes read directly from ZooKeeper (for the CLI; daemons use the cache)."""
        return self._read_children(NODES, paths.NODES_ROOT)

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
        self._take_lock(node, blocking, timeout, identifier, new_dir=node.zk_version == 0)

    def lock_and_store(self, node: Node, identifier: str | None = None) -> None:
        """Lock a node this process just created and write it, in one round trip when its
        lock dir does not exist yet (the usual case: nobody else has tried to lock it)."""
        (node_id,) = NODES.key(node)
        lock = self._new_lock(node_id, identifier)
        path, data = paths.node_path(node_id), node.to_json()
        written: list[Any] = []

        def lock_with_write() -> Any:
            # The write rides along only when the lock is taken in one transaction.
            written.extend(locks.acquire(self.client, lock, what=f"node {node_id}",
                                         new_dir=True,
                                         extra_ops=[("set", path, data, node.zk_version)]))
            return written[0] if written else None

        try:
            self._write_through(path, data, lock_with_write)
        except RecordNotFound as e:
            raise LockError(f"node {node_id}: gone") from e
        node.lock = lock
        if written:
            node.zk_version = written[0].version
        else:
            self.store(node)

    def lock_contenders(self, node_id: str) -> list[str]:
        """Contender znode names of the node lock, holder first (direct read)."""
        return locks.contenders(self.client, paths.node_lock_path(node_id))

    def force_unlock(self, node_id: str) -> bool:
        """Remove the holder's lock znode (admin use); True if there was one."""
        return locks.force_unlock(self.client, paths.node_lock_path(node_id))


"""`LauncherZK`: the few ZooKeeper operations the launcher needs, over the zk stores.

The launcher's modules talk only to this class, so its loops read as launcher logic. Reads
of many records come from the watch-driven caches; single records are re-read fresh after a
lock is taken ("double check after lock").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from nodepool_ng.errors import LockError, RecordNotFound, ZooKeeperError
from nodepool_ng.launcher.assignment import PoolInfo
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import NodeRequest, RequestState
from nodepool_ng.zk.images import UploadStore
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore


class LauncherZK(Protocol):
    # -- nodes -----------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        """Cached snapshot of every node (treat as read-only)."""
        ...

    def node_locked(self, node: Node) -> bool:
        """Cheap "probably locked" check from the cache's lock contenders."""
        ...

    def get_node(self, node_id: str) -> Node | None:
        """Fresh read; None if gone."""
        ...

    def create_node(self, node: Node) -> None:
        """Create a sequence node znode; sets `node.id`."""
        ...

    def store_node(self, node: Node) -> None: ...

    def lock_node(self, node: Node, blocking: bool = False, timeout: float | None = None) -> bool:
        """Lock a node object we own (not a cached one); False when held elsewhere."""
        ...

    def lock_and_store_node(self, node: Node) -> None:
        """Lock a node we just created and write it (one transaction); LockError if not."""
        ...

    def lock_fresh_node(
        self, node_id: str, blocking: bool = False, timeout: float | None = None
    ) -> Node | None:
        """Lock by id, then re-read: the fresh node holding the lock, or None (held or gone)."""
        ...

    def unlock_node(self, node: Node) -> None: ...

    def delete_node(self, node: Node) -> None:
        """The znode with its lock: one transaction when we hold the lock and nobody waits,
        else state `deleted` first, so whoever wins the lock in the gap sees it deleted."""
        ...

    # -- requests --------------------------------------------------------------------------
    def requests(self) -> list[NodeRequest]:
        """Cached snapshot of every request."""
        ...

    def open_requests(self) -> list[NodeRequest]:
        """Cached requests still `requested`, in upstream's order."""
        ...

    def request_cached(self, request_id: str) -> NodeRequest | None: ...

    def malformed_requests(self) -> dict[str, str]:
        """`requested` requests whose fields are malformed (cached): id -> what is wrong."""
        ...

    def fail_malformed_request(self, request_id: str, reason: str) -> bool:
        """Fail such a request with `failure_reason`, its other fields untouched."""
        ...

    def get_request(self, request_id: str) -> NodeRequest | None:
        """Fresh read; None if gone."""
        ...

    def request_exists(self, request_id: str) -> bool: ...

    def request_locked(self, request_id: str) -> bool: ...

    def lock_fresh_request(self, request_id: str) -> NodeRequest | None:
        """Lock by id (non-blocking), then re-read; None when held elsewhere or gone."""
        ...

    def unlock_request(self, request: NodeRequest) -> None: ...

    def store_request(self, request: NodeRequest) -> bool:
        """Write the request; False when its znode is gone (requester deleted it)."""
        ...

    def create_request(self, request: NodeRequest, priority: str, ephemeral: bool) -> str: ...

    def delete_request(self, request: NodeRequest) -> None: ...

    # -- components and images -------------------------------------------------------------
    def pool_infos(self) -> list[PoolInfo]:
        """Every registered pool component."""
        ...

    def ready_upload(self, image: str, provider: str) -> tuple[str, str] | None:
        """(upload znode path, cloud image id) of the newest READY upload, or None."""
        ...


def change_idle_node(zk: LauncherZK, node_id: str,
                     change: Callable[[Node], None]) -> Node | None:
    """Lock the node; if it is still READY and unallocated, `change` it and store it.
    Returns the stored node, or None (locked elsewhere, gone, or no longer idle). The lock
    is released either way."""
    node = zk.lock_fresh_node(node_id)
    if node is None:
        return None
    try:
        if node.state is not NodeState.READY or node.allocated_to:
            return None
        change(node)
        zk.store_node(node)
        return node
    finally:
        zk.unlock_node(node)


def mark_deleting(node: Node) -> None:
    """A `change_idle_node` change: the deleter removes the node (and its server, if any)."""
    node.state = NodeState.DELETING


class StoresView:
    """`LauncherZK` over NodeStore / RequestStore and the component and image stores."""

    def __init__(
        self,
        nodes: NodeStore,
        requests: RequestStore,
        pool_infos: Callable[[], list[PoolInfo]],
        ready_upload: Callable[[str, str], tuple[str, str] | None] | None = None,
    ) -> None:
        self.node_store = nodes
        self.request_store = requests
        self._pool_infos = pool_infos
        self._ready_upload = ready_upload

    # -- nodes -----------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        return self.node_store.cached_nodes()

    def node_locked(self, node: Node) -> bool:
        return bool(node.lock_contenders)

    def get_node(self, node_id: str) -> Node | None:
        try:
            return self.node_store.get(node_id)
        except RecordNotFound:
            return None

    def create_node(self, node: Node) -> None:
        self.node_store.create(node)

    def store_node(self, node: Node) -> None:
        self.node_store.store(node)

    def lock_node(self, node: Node, blocking: bool = False, timeout: float | None = None) -> bool:
        try:
            self.node_store.lock(node, blocking=blocking, timeout=timeout)
        except LockError:
            return False
        return True

    def lock_and_store_node(self, node: Node) -> None:
        self.node_store.lock_and_store(node)

    def lock_fresh_node(
        self, node_id: str, blocking: bool = False, timeout: float | None = None
    ) -> Node | None:
        holder = Node(id=node_id)
        if not self.lock_node(holder, blocking, timeout):
            return None
        try:
            fresh = self.node_store.get(node_id)
        except (RecordNotFound, ZooKeeperError):
            self.node_store.unlock(holder)
            return None
        fresh.lock = holder.lock
        return fresh

    def unlock_node(self, node: Node) -> None:
        self.node_store.unlock(node)

    def delete_node(self, node: Node) -> None:
        self.node_store.delete(node)

    # -- requests --------------------------------------------------------------------------
    def requests(self) -> list[NodeRequest]:
        return self.request_store.cached_requests()

    def open_requests(self) -> list[NodeRequest]:
        return self.request_store.cached_open_requests()

    def request_cached(self, request_id: str) -> NodeRequest | None:
        return self.request_store.cached_request(request_id)

    def malformed_requests(self) -> dict[str, str]:
        return {rid: str(e) for rid, e in self.request_store.malformed().items()
                if e.raw.get("state") == RequestState.REQUESTED}

    def fail_malformed_request(self, request_id: str, reason: str) -> bool:
        return self.request_store.fail_malformed(request_id, reason)

    def get_request(self, request_id: str) -> NodeRequest | None:
        try:
            return self.request_store.get(request_id)
        except RecordNotFound:
            return None

    def request_exists(self, request_id: str) -> bool:
        return self.request_store.exists(request_id)

    def request_locked(self, request_id: str) -> bool:
        return self.request_store.is_locked(request_id)

    def lock_fresh_request(self, request_id: str) -> NodeRequest | None:
        holder = NodeRequest(id=request_id)
        cached = self.request_store.cached_request(request_id)
        try:
            # A request nobody has written since its requestor did was never locked.
            self.request_store.lock(holder, new_dir=cached is not None and cached.zk_version == 0)
        except LockError:
            return None
        try:
            fresh = self.request_store.get(request_id)
        except (RecordNotFound, ZooKeeperError):
            self.request_store.unlock(holder)
            return None
        fresh.lock = holder.lock
        return fresh

    def unlock_request(self, request: NodeRequest) -> None:
        self.request_store.unlock(request)

    def store_request(self, request: NodeRequest) -> bool:
        try:
            self.request_store.store(request)
        except RecordNotFound:
            return False
        return True

    def create_request(self, request: NodeRequest, priority: str, ephemeral: bool) -> str:
        return self.request_store.submit(request, priority=priority, ephemeral=ephemeral)

    def delete_request(self, request: NodeRequest) -> None:
        self.request_store.delete(request)

    # -- components and images -------------------------------------------------------------
    def pool_infos(self) -> list[PoolInfo]:
        return self._pool_infos()

    def ready_upload(self, image: str, provider: str) -> tuple[str, str] | None:
        return self._ready_upload(image, provider) if self._ready_upload else None


class ReadyUploads:
    """`LauncherZK.ready_upload` from the upload store, each answer kept for `ttl` seconds."""

    def __init__(self, uploads: UploadStore, ttl: float = 5.0) -> None:
        self.uploads = uploads
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, tuple[str, str] | None]] = {}

    def __call__(self, image: str, provider: str) -> tuple[str, str] | None:
        key = (image, provider)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        upload = self.uploads.latest_ready_upload(image, provider)
        value = (upload.path, upload.external_id or "") if upload else None
        self._cache[key] = (now, value)
        return value

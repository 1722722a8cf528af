"""LeaseStore: the REST request API's leases (`/nodepool/api-leases/<request id>`), their
locks (`.../<id>/lock`: held by the launcher whose lease keeper owns the lease) and a
watch-driven cache. Every change of a lease is a versioned write (`store(lease,
check_version=True)`): API processes and lease keepers never overwrite each other."""

from __future__ import annotations

import time
from collections.abc import Callable

from kazoo.exceptions import NodeExistsError

from nodepool_ng.errors import RecordNotFound, ZooKeeperError
from nodepool_ng.model.lease import Lease, lease_of_node
from nodepool_ng.model.node import Node
from nodepool_ng.zk import paths
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.records import RecordKind, RecordStore

LEASES = RecordKind("lease", Lease, paths.api_lease_path)


def _parse(path: str) -> tuple[str, str | None] | None:
    return paths.cache_key(paths.parse_api_lease_path(path))


class LeaseStore(RecordStore[Lease]):
    """Create, read, write, lock and delete leases. `get(id)`, `refresh(lease)`,
    `store(lease, check_version)`, `unlock(lease)`, `is_locked(id)` and `ids()` come from
    RecordStore; `start_cache()` for the cached listing."""

    def __init__(self, client: ZooKeeperClient) -> None:
        super().__init__(client, LEASES, paths.API_LEASES_ROOT, _parse,
                         paths.api_lease_lock_path, lock_parents=False)

    def create(self, lease: Lease) -> None:
        """Write a new lease at its id (its node request's id); ZooKeeperError if one
        exists already."""
        (lease_id,) = LEASES.key(lease)
        if lease.created_time is None:
            lease.created_time = time.time()
        path, data = paths.api_lease_path(lease_id), lease.to_json()

        def write() -> object:
            try:
                _, stat = self.client.call(f"lease {lease_id}", self.client.kazoo.create_async,
                                           path, data, makepath=True, include_data=True)
            except NodeExistsError as e:
                raise ZooKeeperError(f"lease {lease_id}: exists already") from e
            return stat

        self._write_through(path, data, write)
        lease.zk_version = 0

    def update(self, lease: Lease, change: Callable[[Lease], bool], attempts: int = 5) -> bool:
        """Apply `change` to `lease` and write it only if nobody wrote it since it was read;
        when somebody did, re-read it and apply `change` again (it decides on the fresh
        record). `change` returns False when there is nothing to write. True once written.
        RecordNotFound if the lease is gone; ZooKeeperError after `attempts` conflicts."""
        for attempt in range(attempts):
            if attempt:
                self.refresh(lease)
            if not change(lease):
                return False
            try:
                self.store(lease, check_version=True)
                return True
            except ZooKeeperError:
                if attempt == attempts - 1:
                    raise
        return False

    def delete(self, lease_id: str) -> None:
        """Remove the lease and its lock dir; missing is fine."""
        self.client.delete(paths.api_lease_path(lease_id), recursive=True,
                           what=f"lease {lease_id}")

    def lock(self, lease: Lease, blocking: bool = False, timeout: float | None = None,
             identifier: str | None = None) -> None:
        """Take the lease's lock; LockError if not taken (or the lease is gone). Re-read
        the lease afterwards (`refresh`)."""
        self._take_lock(lease, blocking, timeout, identifier, new_dir=False)

    def keeps_node(self, node: Node) -> bool:
        """True if `node` is held for a lease that is still valid (waiting or fulfilled, not
        lapsed): a direct read of the lease its `user_data` names. The deleter asks before
        removing an unlocked `in-use` node (its keeper may be between two launchers)."""
        lease_id = lease_of_node(node.user_data)
        if lease_id is None:
            return False
        try:
            return self.get(lease_id).keeps_nodes()
        except RecordNotFound:
            return False

    # -- cache -------------------------------------------------------------------------------
    def cached_leases(self) -> list[Lease]:
        """Snapshot of every cached lease (treat as read-only)."""
        return self.cache.values()

    def cached_lease(self, lease_id: str) -> Lease | None:
        return self.cache.get(lease_id)

    def cached_locked(self, lease_id: str) -> bool:
        """The cache saw a contender on the lease's lock (probably owned)."""
        return bool(self.cache.contenders(lease_id))

    def read_all(self) -> list[Lease]:
        """Every lease read directly (no cache)."""
        return self._read_children(LEASES, paths.API_LEASES_ROOT, skip_unreadable=True)

"""One generic way to read, re-read, write and lock a record's znode.

A `RecordKind` says where one record type lives: its name (for messages), the function of
`zk/paths.py` that turns its identity into a path, and its model class, whose identity fields
(`model/record.py`: `IDENTITY`) are that function's arguments in order and whose
`from_dict(*identity, data)` reads it. `RecordAccess` does the ZooKeeper work for any kind;
`RecordStore` binds one kind and is what `NodeStore` and `RequestStore` specialise; the image
stores (`zk/images.py`) serve two kinds (builds, uploads) through `RecordAccess`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kazoo.exceptions import BadVersionError

from nodepool_ng.errors import LockError, RecordNotFound, ZooKeeperError
from nodepool_ng.model.record import Record, decode_json, identity, identity_names, kept_fields
from nodepool_ng.zk import locks, paths
from nodepool_ng.zk.cache import CachedStore, RecordCache
from nodepool_ng.zk.client import ZooKeeperClient

log = logging.getLogger("nodepool_ng.zk.records")

C = TypeVar("C")
R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class RecordKind(Generic[R]):
    """Where records of `model` live. `empty_is_record=False`: a znode without data (a
    bare parent created by a lock path) is no record (RecordNotFound)."""

    name: str
    model: type[R]
    path: Callable[..., str]
    empty_is_record: bool = True

    def what(self, key: tuple[str, ...]) -> str:
        """How messages name the record: `node 0000000001`, `build debian/<id>`."""
        return f"{self.name} {'/'.join(key)}"

    def key(self, record: R) -> tuple[str, ...]:
        """The record's identity; ValueError naming the first part it lacks."""
        key = identity(record)
        for name, part in zip(identity_names(self.model), key, strict=True):
            if not part:
                raise ValueError(f"{self.name} has no {name}")
        return tuple(str(part) for part in key)

    def decode(self, key: tuple[str, ...], data: bytes | None) -> R:
        """The record from znode bytes; ValueError naming it on bad data."""
        from_dict: Callable[..., R] = self.model.from_dict  # type: ignore[attr-defined]
        return from_dict(*key, decode_json(data, self.what(key)))


class RecordAccess(CachedStore[C]):
    """Read, re-read and write records of any kind below one cached subtree."""

    def _get(self, kind: RecordKind[R], *key: str) -> R:
        """Read a record (not the cache). RecordNotFound if gone, ZooKeeperError if its
        data is unreadable."""
        what = kind.what(key)
        data, stat = self.client.get(kind.path(*key), what=what)
        if not data and not kind.empty_is_record:
            raise RecordNotFound(f"{what}: no record")
        try:
            record = kind.decode(key, data)
        except ValueError as e:
            raise ZooKeeperError(str(e)) from e
        record.zk_version = stat.version
        return record

    def _exists(self, kind: RecordKind[R], *key: str) -> bool:
        return self.client.exists(kind.path(*key)) is not None

    def _refresh(self, kind: RecordKind[R], record: R) -> R:
        """Re-read `record` in place, keeping what belongs to the object (its lock)."""
        fresh = self._get(kind, *kind.key(record))
        kept = kept_fields(type(record))
        for f in dataclasses.fields(record):
            if f.name not in kept:
                object.__setattr__(record, f.name, getattr(fresh, f.name))
        return record

    def _store(self, kind: RecordKind[R], record: R, check_version: bool = False) -> None:
        """Write an existing record. With `check_version`, ZooKeeperError if it changed
        since it was read."""
        key = kind.key(record)
        what = kind.what(key)
        version = record.zk_version if check_version else -1
        path, data = kind.path(*key), record.to_json()
        try:
            stat = self._write_through(path, data, lambda: self.client.set(
                path, data, version, what=what))
        except BadVersionError as e:
            raise ZooKeeperError(f"{what}: changed since read") from e
        record.zk_version = stat.version

    def _read_children(self, kind: RecordKind[R], parent: str, *parent_key: str,
                       skip_unreadable: bool = False) -> list[R]:
        """Every record directly below `parent` (direct reads; lock dirs skipped). Gone
        meanwhile: skipped; unreadable: skipped with a warning if `skip_unreadable`."""
        out = []
        for name in sorted(self.client.get_children(parent)):
            if name == paths.LOCK:
                continue
            try:
                out.append(self._get(kind, *parent_key, name))
            except RecordNotFound:
                continue
            except ZooKeeperError as e:
                if not skip_unreadable:
                    raise
                log.warning("skipping %s: %s", kind.what((*parent_key, name)), e)
        return out


class RecordStore(RecordAccess[R], Generic[R]):
    """The store of one record kind kept below `root`, one record per child, each carrying
    its own lock (`lock` field). `lock_path(id)` is a record's lock dir; `lock_parents=False`
    when that dir lives below the record (a missing parent then means the record is gone).
    `parse` routes cache paths (see RecordCache)."""

    def __init__(self, client: ZooKeeperClient, kind: RecordKind[R], root: str,
                 parse: Callable[[str], tuple[str, str | None] | None],
                 lock_path: Callable[[str], str], lock_parents: bool = True) -> None:
        super().__init__(client, RecordCache(
            client, root, parse, lambda record_id, raw: kind.decode((record_id,), raw),
            _stamp))
        self.kind = kind
        self.root = root
        self._lock_path = lock_path
        self._lock_parents = lock_parents

    def get(self, *key: str) -> R:
        """Read a record from ZooKeeper (not the cache). RecordNotFound if gone."""
        return self._get(self.kind, *key)

    def exists(self, *key: str) -> bool:
        """True if the record's znode exists."""
        return self._exists(self.kind, *key)

    def refresh(self, record: R) -> R:
        """Re-read `record` from ZooKeeper in place (keeps its lock); returns it."""
        return self._refresh(self.kind, record)

    def store(self, record: R, check_version: bool = False) -> None:
        """Write `record` (must exist). With `check_version`, fail with ZooKeeperError if it
        changed since it was read."""
        self._store(self.kind, record, check_version)

    def ids(self) -> list[str]:
        """Record ids in ZooKeeper (direct read), sorted."""
        return sorted(c for c in self.client.get_children(self.root) if c != paths.LOCK)

    def _created(self, record: R, path: str) -> str:
        """Take the id of a record just created at `path` (a sequence znode); returns it."""
        record_id = path.rsplit("/", 1)[-1]
        object.__setattr__(record, "id", record_id)
        record.zk_version = 0
        return record_id

    # -- locks -------------------------------------------------------------------------------
    def _take_lock(self, record: R, blocking: bool, timeout: float | None,
                   identifier: str | None, new_dir: bool) -> None:
        """Take the record's lock onto `record.lock`; LockError if not taken (or gone).
        Re-read the record afterwards (`refresh`) and re-check its state."""
        (record_id,) = self.kind.key(record)
        what = self.kind.what((record_id,))
        held = getattr(record, "lock", None)
        if held is not None and held.is_acquired:
            raise LockError(f"{what}: already locked by this process")
        lock = self._new_lock(record_id, identifier)
        try:
            locks.acquire(self.client, lock, blocking=blocking, timeout=timeout, what=what,
                          new_dir=new_dir)
        except RecordNotFound as e:
            raise LockError(f"{what}: gone") from e
        object.__setattr__(record, "lock", lock)

    def _new_lock(self, record_id: str, identifier: str | None) -> locks.ZkLock:
        return locks.make_lock(self.client, self._lock_path(record_id), identifier,
                               make_parents=self._lock_parents)

    def unlock(self, record: R) -> None:
        """Release the record's lock if this object holds it."""
        locks.release(getattr(record, "lock", None))
        object.__setattr__(record, "lock", None)

    def is_locked(self, record_id: str) -> bool:
        """True if anyone holds (or waits for) the record's lock (direct read)."""
        return locks.is_locked(self.client, self._lock_path(record_id))


def _stamp(record: Record, version: int | None, contenders: frozenset[str]) -> None:
    """Local fields of a record the cache decoded or saw a lock contender of."""
    if version is not None:
        record.zk_version = version
    if hasattr(record, "lock_contenders"):
        object.__setattr__(record, "lock_contenders", contenders)

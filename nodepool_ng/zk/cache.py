"""Watch-driven caches: a local copy of a subtree, updated by ZooKeeper watches, no polling.

Choice (see doc/zookeeper.md): kazoo 2.11 has no persistent recursive watch (`addWatch`), so
this wraps kazoo's `TreeCache`, which keeps one data watch and one child watch per znode and
re-reads the whole subtree after a reconnect (including after session expiry; znodes deleted
meanwhile are reported removed). Events arrive within milliseconds on the cache's own thread.

`RecordCache` sits on top and keeps decoded records keyed by id plus the lock contenders seen
under each record, calling listeners `(record_id, record_or_None)` on every change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kazoo.recipe.cache import TreeCache as KazooTreeCache
from kazoo.recipe.cache import TreeEvent

from nodepool_ng.zk.client import ZooKeeperClient

log = logging.getLogger("nodepool_ng.zk.cache")

T = TypeVar("T")


@dataclass(frozen=True)
class CacheEvent:
    """One change seen by a TreeCache: `kind` is added / updated / removed / initialized."""

    kind: str
    path: str | None = None
    data: bytes | None = None
    version: int = -1


_KINDS = {
    TreeEvent.NODE_ADDED: "added",
    TreeEvent.NODE_UPDATED: "updated",
    TreeEvent.NODE_REMOVED: "removed",
    TreeEvent.INITIALIZED: "initialized",
}


class TreeCache:
    """A local copy of the subtree at `root`; listeners get a CacheEvent for each change."""

    def __init__(self, client: ZooKeeperClient, root: str) -> None:
        self.client = client
        self.root = root
        self.initialized = threading.Event()
        self._listeners: list[Callable[[CacheEvent], None]] = []
        self._cache: KazooTreeCache | None = None

    def add_listener(self, listener: Callable[[CacheEvent], None]) -> None:
        """Call `listener(event)` on the cache thread for every change (keep it quick)."""
        self._listeners.append(listener)

    def start(self, timeout: float | None = None) -> bool:
        """Start watching; returns True once the initial copy is loaded within `timeout`."""
        self.client.ensure_path(self.root)
        cache = KazooTreeCache(self.client.kazoo, self.root)
        cache.listen(self._on_event)
        cache.listen_fault(self._on_fault)
        self._cache = cache
        cache.start()
        limit = self.client.operation_timeout if timeout is None else timeout
        return self.initialized.wait(limit)

    def stop(self) -> None:
        """Stop watching and drop the copy."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def get_data(self, path: str) -> bytes | None:
        """Cached payload of `path`, or None if not cached."""
        if self._cache is None:
            return None
        node = self._cache.get_data(path)
        return None if node is None else node.data

    def get_children(self, path: str) -> list[str]:
        """Cached child names of `path` ([] if unknown)."""
        if self._cache is None:
            return []
        return list(self._cache.get_children(path) or [])

    def _on_event(self, event: Any) -> None:
        kind = _KINDS.get(event.event_type)
        if kind is None:
            return  # connection events: the client tracks those
        if kind == "initialized":
            self.initialized.set()
            out = CacheEvent("initialized")
        else:
            node = event.event_data
            out = CacheEvent(kind, node.path, node.data, node.stat.version if node.stat else -1)
        for listener in list(self._listeners):
            try:
                listener(out)
            except Exception:
                log.exception("cache listener for %s failed", self.root)

    def _on_fault(self, error: Exception) -> None:
        log.error("tree cache %s: %s", self.root, error)


class RecordCache(Generic[T]):
    """Decoded records under a root, keyed by id, with lock contenders per record.

    `parse(path)` returns `(record_id, contender)` for a record path (contender None) or a
    lock contender path, or None for anything else. `decode(record_id, data)` builds the
    record, or returns None for a znode that holds no record (skipped); it builds the
    record; `on_record(record, version or None, contenders)` stamps local fields. Records
    handed out are shared: treat them as read-only; re-read (store.refresh) under the lock
    before changing one.
    """

    def __init__(
        self,
        client: ZooKeeperClient,
        root: str,
        parse: Callable[[str], tuple[str, str | None] | None],
        decode: Callable[[str, bytes | None], T | None],
        on_record: Callable[[T, int | None, frozenset[str]], None] | None = None,
    ) -> None:
        self.tree = TreeCache(client, root)
        self._parse = parse
        self._decode = decode
        self._on_record = on_record
        self._records: dict[str, T] = {}
        self._contenders: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, T | None], None]] = []
        self.tree.add_listener(self._on_event)

    def start(self, timeout: float | None = None) -> bool:
        """Start watching; True once the initial copy is loaded."""
        return self.tree.start(timeout)

    def stop(self) -> None:
        """Stop watching."""
        self.tree.stop()

    def add_listener(self, listener: Callable[[str, T | None], None]) -> None:
        """Call `listener(record_id, record_or_None)` on every record or contender change."""
        self._listeners.append(listener)

    def get(self, record_id: str) -> T | None:
        """The cached record or None."""
        with self._lock:
            return self._records.get(record_id)

    def ids(self) -> list[str]:
        """Cached record ids."""
        with self._lock:
            return list(self._records)

    def values(self) -> list[T]:
        """A snapshot list of cached records."""
        with self._lock:
            return list(self._records.values())

    def items(self) -> list[tuple[str, T]]:
        """A snapshot list of (record_id, record)."""
        with self._lock:
            return list(self._records.items())

    def __iter__(self) -> Iterator[T]:
        return iter(self.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def contenders(self, record_id: str) -> frozenset[str]:
        """Cached lock contender names of a record (non-empty: probably locked)."""
        with self._lock:
            return frozenset(self._contenders.get(record_id, ()))

    def _on_event(self, event: CacheEvent) -> None:
        if event.path is None:
            return
        parsed = self._parse(event.path)
        if parsed is None:
            return
        record_id, contender = parsed
        record: T | None
        with self._lock:
            if contender is not None:
                members = self._contenders.setdefault(record_id, set())
                if event.kind == "removed":
                    members.discard(contender)
                else:
                    members.add(contender)
                record = self._records.get(record_id)
                if record is not None and self._on_record is not None:
                    self._on_record(record, None, frozenset(members))
            elif event.kind == "removed":
                record = None
                self._records.pop(record_id, None)
                self._contenders.pop(record_id, None)
            else:
                try:
                    record = self._decode(record_id, event.data)
                except ValueError as e:
                    log.warning("ignoring unreadable record %s: %s", event.path, e)
                    return
                if record is None:
                    # Not a record (e.g. a bare parent znode): keep it out of the copy.
                    if self._records.pop(record_id, None) is None:
                        return
                else:
                    if self._on_record is not None:
                        members_now = frozenset(self._contenders.get(record_id, ()))
                        self._on_record(record, event.version, members_now)
                    self._records[record_id] = record
        for listener in list(self._listeners):
            try:
                listener(record_id, record)
            except Exception:
                log.exception("record listener failed for %s", record_id)


class CachedStore(Generic[T]):
    """Base of the stores: the optional watch-driven copy of their subtree.

    Until `start_cache()` a store reads ZooKeeper directly; afterwards its listing methods
    answer from the cache (`cache_started`).
    """

    def __init__(self, client: ZooKeeperClient, cache: RecordCache[T]) -> None:
        self.client = client
        self.cache = cache
        self.cache_started = False

    def start_cache(self, timeout: float | None = None) -> bool:
        """Start the watch-driven cache; True once the initial copy is loaded."""
        self.cache_started = True
        return self.cache.start(timeout)

    def stop_cache(self) -> None:
        """Stop the cache."""
        if self.cache_started:
            self.cache.stop()
            self.cache_started = False

    def add_listener(self, listener: Callable[[str, T | None], None]) -> None:
        """Call `listener(key, record_or_None)` on every change (cache thread; be quick)."""
        self.cache.add_listener(listener)

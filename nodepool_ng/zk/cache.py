"""Watch-driven caches: a local copy of a subtree, updated by ZooKeeper watches, no polling.

`TreeCache` keeps a subtree with one persistent recursive watch (`zk/watch.py`; ZooKeeper
>= 3.6, as upstream Nodepool requires). Each notification is queued in arrival order; the
cache thread takes what has queued up, sends one GetData for every created or changed znode
whose data it keeps (lock contenders are kept by name only: no read at all), and applies the
answers in notification order. After every (re)connect it re-adds the watch and re-reads the
whole subtree, so nothing missed while disconnected survives (znodes deleted meanwhile are
reported removed). Per znode change this is one round trip; kazoo's own `TreeCache` re-arms a
data and a child watch on every znode (four round trips per lock contender).

Ordering rule: every read and every notification takes a tick from one counter. A read's
answer is at least as new as the state when it was sent, so a data answer older (lower
`mzxid`) than what is cached is dropped, and a deletion notification removes only an entry
read before the notification arrived (a later read proved the znode exists again).

Our own writes need no read (`expect_write` / `wrote`): a store announces a write of a
kept znode before sending it and hands its answer (data and stat) over afterwards. While a
write of ours on a path is pending, that path's notifications are parked instead of read.
ZooKeeper sends the notification of a change before the answer to the write that made it,
and every data change raises the version by one; so once our answer is in, if the parked
notifications are exactly as many as the versions between the cached copy and our write,
they are all accounted for and our data is the copy as of the last of them (its tick, so a
deletion notified later still removes it). Otherwise (someone else wrote too, the write
failed, or a deletion or resync dropped the parked notifications) the path is read. A
launcher's own writes are most of the changes it sees: each would otherwise cost a read.

`RecordCache` sits on top and keeps decoded records keyed by id plus the lock contenders seen
under each record, calling listeners `(record_id, record_or_None)` on every change.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kazoo.exceptions import KazooException, NoNodeError, UnimplementedError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType

from nodepool_ng.errors import ZooKeeperError
from nodepool_ng.model.record import MalformedRecord
from nodepool_ng.zk.client import ConnectionState, ZooKeeperClient
from nodepool_ng.zk.watch import add_watch_async

log = logging.getLogger("nodepool_ng.zk.cache")

T = TypeVar("T")


@dataclass(frozen=True)
class CacheEvent:
    """One change seen by a TreeCache: `kind` is added / updated / removed / initialized."""

    kind: str
    path: str | None = None
    data: bytes | None = None
    version: int = -1


@dataclass
class _Entry:
    data: bytes | None
    version: int
    mzxid: int
    read_at: int  # tick of the read (or notification) this entry comes from


@dataclass
class _Notification:
    tick: int
    event_type: str
    path: str
    answer: Any = None  # kazoo async GetData result, when the data is kept
    read_at: int = 0
    parked: bool = False  # waits for the answer to a write of ours (no read sent)
    parked_at: float = 0.0  # monotonic time it was parked


@dataclass
class _OwnWrite:
    """The answer to a write of ours (`stat` None: it failed or its outcome is unknown)."""

    path: str
    data: bytes | None
    stat: Any


_RESYNC = "resync"
PARKED_LIMIT = 5.0  # seconds a parked notification waits for our write's answer at most


class TreeCache:
    """A local copy of the subtree at `root`; listeners get a CacheEvent for each change.

    `keeps_data(path)` says whose payload to keep; other znodes are tracked by name only.
    """

    def __init__(self, client: ZooKeeperClient, root: str,
                 keeps_data: Callable[[str], bool] = lambda path: True) -> None:
        self.client = client
        self.root = root.rstrip("/")
        self.initialized = threading.Event()
        self.error: str | None = None
        self._keeps_data = keeps_data
        self._listeners: list[Callable[[CacheEvent], None]] = []
        self._entries: dict[str, _Entry] = {}
        self._ticks = itertools.count(1)  # next() is atomic under the GIL
        self._queue: queue.Queue[_Notification | _OwnWrite | str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        # Own writes: announced and not yet answered, per path (writer threads and cache
        # thread, under the lock); then, on the cache thread only, the notifications parked
        # meanwhile and the newest answer of ours.
        self._writes_lock = threading.Lock()
        self._expecting: dict[str, int] = {}
        self._parked: dict[str, list[_Notification]] = {}
        self._own: dict[str, _OwnWrite] = {}
        self.reads_saved = 0  # notifications answered by our own write (tests, stats)

    def add_listener(self, listener: Callable[[CacheEvent], None]) -> None:
        """Call `listener(event)` on the cache thread for every change (keep it quick)."""
        self._listeners.append(listener)

    def start(self, timeout: float | None = None) -> bool:
        """Start watching; returns True once the initial copy is loaded within `timeout`.
        Raises ZooKeeperError if the server cannot keep persistent watches (< 3.6)."""
        self.client.ensure_path(self.root)
        self.client.watch_router.add(self.root, self._on_notification)
        self.client.add_state_listener(self._on_state)
        self._thread = threading.Thread(target=self._run, name=f"zk-cache {self.root}",
                                        daemon=True)
        self._thread.start()
        self._queue.put(_RESYNC)
        limit = self.client.operation_timeout if timeout is None else timeout
        loaded = self.initialized.wait(limit)
        if self.error is not None:
            raise ZooKeeperError(self.error)
        return loaded

    def stop(self) -> None:
        """Stop watching and drop the copy."""
        self.client.watch_router.remove(self.root)
        self.client.remove_state_listener(self._on_state)
        self._queue.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None
        self._entries = {}

    def expect_write(self, path: str) -> None:
        """A write of `path` by this client is about to be sent; `wrote()` must follow."""
        with self._writes_lock:
            self._expecting[path] = self._expecting.get(path, 0) + 1

    def wrote(self, path: str, data: bytes | None, stat: Any) -> None:
        """The answer to an announced write: the data written and its stat, or stat None
        when it failed (or may or may not have happened)."""
        self._queue.put(_OwnWrite(path, data, stat))

    def get_data(self, path: str) -> bytes | None:
        """Cached payload of `path`, or None if not cached."""
        entry = self._entries.get(path)
        return None if entry is None else entry.data

    # -- producers (kazoo threads: only queue work) ---------------------------------------------
    def _on_notification(self, event_type: str, path: str) -> None:
        if path != self.root:
            self._queue.put(_Notification(next(self._ticks), event_type, path))

    def _on_state(self, state: ConnectionState) -> None:
        if state == ConnectionState.CONNECTED:
            self._queue.put(_RESYNC)  # the server dropped the watch with the connection

    # -- the cache thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=1.0 if self._parked else None)
            except queue.Empty:
                self._release_stale_parked()
                continue
            batch = [first]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # Send every read of the batch before waiting for the first answer; a change to
            # a path we are writing waits for our write's answer instead (see module doc).
            for item in batch:
                if isinstance(item, _Notification) and item.event_type != EventType.DELETED \
                        and self._keeps_data(item.path) and not self._parks(item):
                    item.read_at = next(self._ticks)
                    item.answer = self.client.kazoo.get_async(item.path)
            for item in batch:
                if item is None:
                    return
                try:
                    if isinstance(item, _Notification):
                        self._apply(item)
                    elif isinstance(item, _OwnWrite):
                        self._own_write(item)
                    else:
                        self._resync()
                except Exception:
                    log.exception("tree cache %s: failed to apply %s", self.root, item)
            self._release_stale_parked()

    # -- own writes (cache thread) -------------------------------------------------------------
    def _parks(self, item: _Notification) -> bool:
        """Mark a data change notification to be parked if a write of ours is pending."""
        if item.event_type not in (EventType.CHANGED, EventType.CREATED):
            return False
        with self._writes_lock:
            pending = self._expecting.get(item.path, 0) > 0
        item.parked = pending or item.path in self._parked
        return item.parked

    def _own_write(self, item: _OwnWrite) -> None:
        path = item.path
        with self._writes_lock:
            left = self._expecting.get(path, 0) - 1
            if left > 0:
                self._expecting[path] = left
            else:
                self._expecting.pop(path, None)
        known = self._own.get(path)
        if item.stat is None:
            self._own[path] = item  # unknown outcome: the path must be read
        elif known is None or (known.stat is not None and known.stat.mzxid < item.stat.mzxid):
            self._own[path] = item
        if left <= 0:
            self._settle(path)

    def _settle(self, path: str) -> None:
        """Every write of ours on `path` is answered: account for the parked notifications."""
        parked = self._parked.pop(path, [])
        own = self._own.pop(path, None)
        stat, data = (own.stat, own.data) if own is not None else (None, None)
        entry = self._entries.get(path)
        cached_version = entry.version if entry is not None else -1
        if parked and (stat is None or len(parked) != stat.version - cached_version):
            self._read_now(path)  # a change that is not ours, or our outcome is unknown
        elif parked and stat is not None:
            # Our data is the state as of our change's notification, the last parked one:
            # its tick, not a new one, so a deletion notified after it still removes it.
            self.reads_saved += len(parked)
            self._store(path, data, stat, parked[-1].tick)
        elif stat is not None:
            # Our change's notification is gone (a deletion dropped it, or a resync): the
            # answer may describe a znode that no longer exists, so read.
            self._read_now(path)

    def _read_now(self, path: str) -> None:
        item = _Notification(next(self._ticks), EventType.CHANGED, path)
        item.read_at = next(self._ticks)
        item.answer = self.client.kazoo.get_async(path)
        self._apply(item)

    def _release_stale_parked(self) -> None:
        """A write whose answer never came (a bug): read its path rather than wait on."""
        now = time.monotonic()
        for path, parked in list(self._parked.items()):
            if now - parked[0].parked_at > PARKED_LIMIT:
                log.warning("tree cache %s: no answer to our write of %s; reading it",
                            self.root, path)
                with self._writes_lock:
                    self._expecting.pop(path, None)
                self._own.pop(path, None)
                del self._parked[path]
                self._read_now(path)

    def _apply(self, item: _Notification) -> None:
        if item.parked:
            item.parked_at = time.monotonic()
            self._parked.setdefault(item.path, []).append(item)
            with self._writes_lock:
                pending = self._expecting.get(item.path, 0) > 0
            if not pending:
                self._settle(item.path)  # our answer came before this notification
            return
        if item.event_type == EventType.DELETED:
            self._parked.pop(item.path, None)  # changes before the deletion: moot
            self._remove(item.path, item.tick)
        elif item.answer is None:
            if item.event_type == EventType.CREATED:  # kept by name only
                self._store(item.path, None, None, item.tick)
        else:
            try:
                data, stat = item.answer.get(timeout=self.client.operation_timeout)
            except NoNodeError:
                self._remove(item.path, item.read_at)
            except (KazooException, KazooTimeoutError) as e:
                # Connection trouble: the reconnect's resync repairs the copy.
                log.debug("tree cache %s: reading %s failed: %s", self.root, item.path, e)
                if self.client.is_connected:
                    self._queue.put(_RESYNC)
            else:
                self._store(item.path, data, stat, item.read_at)

    def _store(self, path: str, data: bytes | None, stat: Any, read_at: int) -> None:
        old = self._entries.get(path)
        mzxid = stat.mzxid if stat is not None else 0
        if old is not None and old.mzxid > mzxid:
            return  # an older answer than the one cached
        version = stat.version if stat is not None else -1
        self._entries[path] = _Entry(data, version, mzxid, read_at)
        if old is None:
            self._emit(CacheEvent("added", path, data, version))
        elif old.version != version or old.data != data:
            self._emit(CacheEvent("updated", path, data, version))

    def _remove(self, path: str, tick: int) -> None:
        old = self._entries.get(path)
        if old is None or old.read_at > tick:
            return
        del self._entries[path]
        self._emit(CacheEvent("removed", path, old.data, old.version))

    def _resync(self) -> None:
        """Re-add the watch, then re-read the subtree level by level (reads pipelined)."""
        # The re-read covers what was parked; answers to writes still pending are applied
        # when they come (an older one than the copy is dropped).
        self._parked.clear()
        self._own.clear()
        if not self.client.is_connected:
            return  # the CONNECTED event queues another
        kazoo = self.client.kazoo
        limit = self.client.operation_timeout
        try:
            add_watch_async(kazoo, self.root).get(timeout=limit)
            started = next(self._ticks)
            seen: dict[str, tuple[Any, int]] = {}  # path -> (GetData answer or None, tick)
            level = [self.root]
            while level:
                listings = [(path, kazoo.get_children_async(path)) for path in level]
                level = []
                for parent, listing in listings:
                    try:
                        children = listing.get(timeout=limit)
                    except NoNodeError:
                        continue
                    for name in children:
                        path = f"{parent}/{name}"
                        answer = kazoo.get_async(path) if self._keeps_data(path) else None
                        seen[path] = (answer, next(self._ticks))
                        level.append(path)
            found: dict[str, tuple[bytes | None, Any, int]] = {}
            for path, (answer, tick) in seen.items():
                if answer is None:
                    found[path] = (None, None, tick)
                    continue
                try:
                    data, stat = answer.get(timeout=limit)
                except NoNodeError:
                    continue
                found[path] = (data, stat, tick)
        except UnimplementedError:
            self.error = (f"ZooKeeper cannot keep a persistent watch on {self.root}: "
                          "ZooKeeper >= 3.6 is required")
            self.initialized.set()
            return
        except (KazooException, KazooTimeoutError) as e:
            log.warning("tree cache %s: re-reading failed (%s); retrying on reconnect",
                        self.root, e)
            if self.client.is_connected:
                threading.Timer(0.5, self._queue.put, (_RESYNC,)).start()
            return
        for path in [p for p, e in self._entries.items() if p not in found and e.read_at < started]:
            self._remove(path, started)
        for path, (data, stat, tick) in found.items():
            self._store(path, data, stat, tick)
        if not self.initialized.is_set():
            self.initialized.set()
            self._emit(CacheEvent("initialized"))

    def _emit(self, event: CacheEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("cache listener for %s failed", self.root)


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
        self.tree = TreeCache(client, root, keeps_data=self._is_record)
        self._parse = parse
        self._decode = decode
        self._on_record = on_record
        self._records: dict[str, T] = {}
        # Records whose JSON decodes but whose fields are wrong, so a caller can act on them.
        self._malformed: dict[str, MalformedRecord] = {}
        self._contenders: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, T | None], None]] = []
        self.tree.add_listener(self._on_event)

    def start(self, timeout: float | None = None) -> bool:
        """Start watching; True once the initial copy is loaded."""
        return self.tree.start(timeout)

    def _is_record(self, path: str) -> bool:
        parsed = self._parse(path)
        return parsed is not None and parsed[1] is None

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

    def get_many(self, record_ids: Iterable[str]) -> list[T]:
        """The cached records of `record_ids`, in that order (the ids not cached left out)."""
        with self._lock:
            records = self._records
            return [records[i] for i in record_ids if i in records]

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

    def malformed(self) -> dict[str, MalformedRecord]:
        """Records left out of the copy because a field has the wrong type: id -> error."""
        with self._lock:
            return dict(self._malformed)

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
                if record is None:
                    # A lock of a record not in the copy (yet): listeners hear of records,
                    # and None would tell them it is gone.
                    return
                if self._on_record is not None:
                    self._on_record(record, None, frozenset(members))
            elif event.kind == "removed":
                record = None
                self._records.pop(record_id, None)
                self._malformed.pop(record_id, None)
                self._contenders.pop(record_id, None)
            else:
                self._malformed.pop(record_id, None)
                try:
                    record = self._decode(record_id, event.data)
                except ValueError as e:
                    # Out of the copy (a record that turned bad too): nothing may act on it
                    # as a record; a malformed one is listed for whoever must answer it.
                    log.warning("ignoring unreadable record %s: %s", event.path, e)
                    record = None
                    if isinstance(e, MalformedRecord):
                        self._malformed[record_id] = e
                if record is None:
                    # Not a record (a bare parent znode, unreadable data): out of the copy.
                    known = self._records.pop(record_id, None) is not None
                    if not known and record_id not in self._malformed:
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

    def _write_through(self, path: str, data: bytes, write: Callable[[], Any]) -> Any:
        """Run `write()` (writing `data` to `path`; returns the new stat, or None if it did
        not write) and tell the running cache its outcome, so the change needs no read."""
        if not self.cache_started:
            return write()
        tree = self.cache.tree
        tree.expect_write(path)
        stat = None
        try:
            stat = write()
        finally:
            tree.wrote(path, data if stat is not None else None, stat)
        return stat

"""RequestStore: `/nodepool/requests` records, their locks under `/nodepool/requests-lock`."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

from kazoo.exceptions import BadVersionError, NotEmptyError

from nodepool_ng.errors import LockError, RecordNotFound, ZooKeeperError
from nodepool_ng.model.record import MalformedRecord
from nodepool_ng.model.request import (
    DEFAULT_PRIORITY,
    NodeRequest,
    RequestState,
    format_priority,
    is_request_id,
)
from nodepool_ng.zk import paths
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.records import RecordKind, RecordStore

log = logging.getLogger("nodepool_ng.zk.requests")


REQUESTS = RecordKind("request", NodeRequest, paths.request_path)


class RequestStore(RecordStore[NodeRequest]):
    """Submit, read, write, lock and delete node requests; cached sorted iteration.

    `get(request_id)`, `exists(request_id)`, `refresh(request)`, `store(request,
    check_version)`, `unlock(request)` and `is_locked(request_id)` come from RecordStore."""

    def __init__(self, client: ZooKeeperClient) -> None:
        self._bad_names: set[str] = set()  # warned about once each
        # Lock dirs of gone requests found too young to delete: their mtime, so each is
        # stat'ed once more only when it may be old enough (not once per cleanup pass).
        self._young_lock_dirs: dict[str, float] = {}
        super().__init__(client, REQUESTS, paths.REQUESTS_ROOT, self._parse,
                         paths.request_lock_path)
        # Upstream's order of the cached requests, and of those still `requested`, kept
        # from the cache's events: a pool pass reads it with a backlog of thousands, so it
        # is sorted again only when a request comes, goes, is re-prioritised or leaves
        # `requested`, not on each read or state change.
        self._order_lock = threading.Lock()
        self._all = _Ordering()
        self._open = _Ordering()
        self.add_listener(self._reorder)

    def _parse(self, path: str) -> tuple[str, str | None] | None:
        """A request znode's id; None (one warning) for a name that is no request id:
        nobody can order or serve such a request, and it must not trip those who try."""
        request_id = paths.parse_request_path(path)
        if request_id is None:
            return None
        if not is_request_id(request_id):
            if request_id not in self._bad_names:
                self._bad_names.add(request_id)
                log.warning("ignoring %s: the name is not '<3-char priority>-<sequence>'", path)
            return None
        return request_id, None

    def malformed(self) -> dict[str, MalformedRecord]:
        """Cached requests left out because a field has the wrong type: id -> error."""
        return self.cache.malformed()

    def fail_malformed(self, request_id: str, reason: str) -> bool:
        """Fail a `requested` request whose fields are malformed, under its lock, with
        `failure_reason`; every field its requester wrote stays as written. False when it
        is locked elsewhere, gone, no longer malformed or no longer `requested`."""
        holder = NodeRequest(id=request_id)
        try:
            self.lock(holder)
        except LockError:
            return False
        try:
            path = paths.request_path(request_id)
            data, stat = self.client.get(path, what=f"request {request_id}")
            try:
                REQUESTS.decode((request_id,), data)
                return False  # mended meanwhile: an ordinary request now
            except MalformedRecord as e:
                raw = e.raw
            except ValueError:
                return False
            if raw.get("state") != RequestState.REQUESTED:
                return False
            raw.update(state=RequestState.FAILED.value, state_time=time.time(),
                       failure_reason=reason)
            body = json.dumps(raw).encode()
            self._write_through(path, body, lambda: self.client.set(
                path, body, stat.version, what=f"request {request_id}"))
            return True
        except (RecordNotFound, BadVersionError):
            return False
        finally:
            self.unlock(holder)

    # -- cache -------------------------------------------------------------------------------
    def cached_requests(self) -> list[NodeRequest]:
        """Cached requests sorted by (priority, relative_priority, sequence). Read-only."""
        return self._in_order(self._all)

    def cached_open_requests(self) -> list[NodeRequest]:
        """The cached requests still `requested` (nobody has accepted them), in the same
        order: what a pool decides on. Read-only."""
        return [r for r in self._in_order(self._open) if r.state is RequestState.REQUESTED]

    def _in_order(self, ordering: _Ordering) -> list[NodeRequest]:
        with self._order_lock:
            order = ordering.ids()
        # (a request the cache holds but whose event has not reached `_reorder` yet is
        # left for the pass that event wakes)
        return self.cache.get_many(order)

    def _reorder(self, request_id: str, request: NodeRequest | None) -> None:
        key = None if request is None else request.sort_key
        is_open = request is not None and request.state is RequestState.REQUESTED
        with self._order_lock:
            self._all.place(request_id, key)
            self._open.place(request_id, key if is_open else None)

    def cached_request(self, request_id: str) -> NodeRequest | None:
        """One cached request or None."""
        return self.cache.get(request_id)

    # -- records -----------------------------------------------------------------------------
    def submit(
        self,
        request: NodeRequest,
        priority: int | str = DEFAULT_PRIORITY,
        ephemeral: bool = False,
    ) -> str:
        """Create `/nodepool/requests/<prio>-<seq>`; sets and returns `request.id`.

        Fills `event_id` (uuid4 hex) and `created_time` when absent, like upstream. The
        launcher's min-ready requests are `ephemeral=True` (they die with the session).
        """
        if request.event_id is None:
            request.event_id = uuid.uuid4().hex
        if request.created_time is None:
            request.created_time = time.time()
        created = self.client.create(
            paths.request_prefix(format_priority(priority)),
            request.to_json(),
            ephemeral=ephemeral,
            sequence=True,
            what="new request",
        )
        return self._created(request, created)

    def delete(self, request: NodeRequest | str) -> None:
        """Delete the request znode and its lock dir; missing is fine."""
        request_id = request if isinstance(request, str) else request.id
        if request_id is None:
            raise ValueError("request has no id")
        self.client.delete(paths.request_path(request_id), what=f"request {request_id}")
        self.delete_lock_dir(request_id)

    def read_all(self) -> list[NodeRequest]:
        """All requests read directly, sorted by sort_key (for the CLI)."""
        requests = self._read_children(REQUESTS, paths.REQUESTS_ROOT, skip_unreadable=True)
        return sorted(requests, key=lambda r: r.sort_key)

    # -- locks -------------------------------------------------------------------------------
    def lock(
        self,
        request: NodeRequest,
        blocking: bool = False,
        timeout: float | None = None,
        identifier: str | None = None,
        new_dir: bool = False,
    ) -> None:
        """Take `/nodepool/requests-lock/<id>`; LockError if not taken. Non-blocking by
        default; re-read (`refresh`) and re-check state afterwards. `new_dir`: nobody has
        locked the request yet, as far as we know (saves a round trip when right)."""
        self._take_lock(request, blocking, timeout, identifier, new_dir)

    def delete_lock_dir(self, request_id: str) -> None:
        """Remove an empty lock dir (skipped when someone holds the lock)."""
        try:
            self.client.call(f"request lock {request_id}", self.client.kazoo.delete_async,
                             paths.request_lock_path(request_id))
        except (RecordNotFound, NotEmptyError):
            pass

    def cleanup_lock_dirs(self, min_age: float = 8 * 3600.0) -> int:
        """Delete lock dirs whose request is gone and that are unused and older than
        `min_age` seconds (upstream's cleanup); returns how many were removed.

        Two listings per call; a lock dir is stat'ed when first seen and then only once it
        may be old enough, so a pass costs the same ZooKeeper calls with 10 or 10,000 dirs
        of finished requests waiting for their age."""
        removed = 0
        now = time.time()
        existing = set(self.client.get_children(paths.REQUESTS_ROOT))
        young: dict[str, float] = {}
        for request_id in self.client.get_children(paths.REQUEST_LOCKS_ROOT):
            if request_id in existing:
                continue
            mtime = self._young_lock_dirs.get(request_id)
            if mtime is not None and now - mtime < min_age:
                young[request_id] = mtime
                continue
            try:
                stat = self.client.exists(paths.request_lock_path(request_id))
            except ZooKeeperError:
                continue
            if stat is None:
                continue
            if now - stat.mtime / 1000.0 < min_age:
                young[request_id] = stat.mtime / 1000.0
                continue
            if stat.numChildren:  # held: asked again next pass
                continue
            self.delete_lock_dir(request_id)
            removed += 1
        self._young_lock_dirs = young
        return removed


class _Ordering:
    """Request ids in upstream's order, re-sorted lazily after a membership or key change."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, int, str]] = {}
        self._ids: list[str] | None = []

    def place(self, request_id: str, key: tuple[str, int, str] | None) -> None:
        """`key` None: not a member (any more)."""
        if self._keys.get(request_id) == key:
            return
        if key is None:
            del self._keys[request_id]
        else:
            self._keys[request_id] = key
        self._ids = None

    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = sorted(self._keys, key=self._keys.__getitem__)
        return self._ids

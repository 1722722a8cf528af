"""Caches that keep API traffic independent of how many launches are in flight.

`LazyListCache` holds one list (e.g. `GET /servers/detail`) shared by every state machine:
`peek()` never blocks and starts at most one refresh in the executor once the list is older
than its TTL, so N building servers cost one list call per interval. Failed refreshes back
off exponentially with jitter (up to `max_backoff`), and `get()` re-raises the last error
meanwhile instead of calling: a dead cloud sees a few list calls a minute, not five a
second; the first failure and the recovery are logged once each. `TTLMemo` remembers
lookups (flavors, images, networks) for a while, one lookup for concurrent callers;
failures are not remembered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from nodepool_ng.errors import TemporaryCloudError
from nodepool_ng.launcher.health import backoff_delay

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

log = logging.getLogger(__name__)


class Submitter(Protocol):
    """What the cache needs of an executor."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]: ...


@dataclass(frozen=True)
class Snapshot(Generic[T]):
    value: T
    started: float  # monotonic time the fetch was started: it reflects the cloud after this


class LazyListCache(Generic[T]):
    def __init__(self, fetch: Callable[[], T], executor: Submitter, ttl: float,
                 name: str = "list", max_backoff: float = 30.0) -> None:
        self._fetch = fetch
        self._executor = executor
        self.ttl = ttl
        self.name = name
        self.max_backoff = max_backoff
        self._lock = threading.Lock()
        self._snapshot: Snapshot[T] | None = None
        self._pending: Future[Snapshot[T]] | None = None
        self._last_attempt = float("-inf")
        self.last_error: BaseException | None = None
        self.failures = 0  # refreshes failed in a row
        self._retry_at = float("-inf")  # no refresh before this after failures

    def peek(self, newer_than: float | None = None) -> Snapshot[T] | None:
        """The current snapshot if it started after `newer_than` (else None); never blocks.

        Starts a background refresh when the snapshot is older than the TTL.
        """
        with self._lock:
            self._maybe_refresh(time.monotonic())
            snap = self._snapshot
        if snap is None or (newer_than is not None and snap.started < newer_than):
            return None
        return snap

    def get(self, max_age: float | None = None, timeout: float = 120.0,
            retry_now: bool = False) -> T:
        """Blocking form for synchronous callers: a snapshot at most `max_age` old.

        While failed refreshes back off, the last error is raised without calling the cloud
        (`retry_now`: call anyway, e.g. a health probe)."""
        max_age = self.ttl if max_age is None else max_age
        with self._lock:
            now = time.monotonic()
            snap = self._snapshot
            if snap is not None and now - snap.started <= max_age:
                return snap.value
            pending = self._pending
            if pending is None and not retry_now and now < self._retry_at \
                    and self.last_error is not None:
                raise TemporaryCloudError(
                    f"{self.name}: not asked again yet after {self.failures} failures "
                    f"(last: {self.last_error})")
            if pending is None or now - self._last_attempt > max_age:
                pending = self._submit(now)
        return pending.result(timeout=timeout).value

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = None

    def _maybe_refresh(self, now: float) -> None:
        if self._pending is not None:
            return
        snap = self._snapshot
        if (snap is None or now - snap.started >= self.ttl) and now - self._last_attempt >= \
                self.ttl and now >= self._retry_at:
            self._submit(now)

    def _submit(self, now: float) -> Future[Snapshot[T]]:
        self._last_attempt = now
        future = self._executor.submit(self._run, now)
        self._pending = future
        return future

    def _run(self, started: float) -> Snapshot[T]:
        try:
            value = self._fetch()
        except BaseException as e:
            with self._lock:
                self._pending = None
                self.last_error = e
                self.failures += 1
                delay = backoff_delay(self.failures, self.ttl, self.max_backoff)
                self._retry_at = time.monotonic() + delay
                failures = self.failures
            if failures == 1:
                log.warning("refreshing the %s failed: %s; retrying with backoff", self.name, e)
            else:
                log.debug("refreshing the %s failed again (%s); next in %.1fs", self.name, e,
                          delay)
            raise
        snap = Snapshot(value, started)
        with self._lock:
            failures, self.failures = self.failures, 0
            self._retry_at = float("-inf")
            self._pending = None
            self.last_error = None
            if self._snapshot is None or self._snapshot.started <= started:
                self._snapshot = snap
        if failures:
            log.info("the %s answers again after %s failed refreshes", self.name, failures)
        return snap


class TTLMemo(Generic[K, T]):
    """A small LRU of lookups that expire after `ttl` seconds.

    Single-flight: callers missing the same key at once share one lookup (a burst of
    launches otherwise sends one image or network lookup per executor thread).
    """

    def __init__(self, ttl: float, maxsize: int = 256) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._data: OrderedDict[K, tuple[float, T]] = OrderedDict()
        self._computing: dict[K, Future[T]] = {}

    def get(self, key: K, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                self._data.move_to_end(key)
                return hit[1]
            shared = self._computing.get(key)
            if shared is None:
                mine: Future[T] = Future()
                self._computing[key] = mine
        if shared is not None:
            return shared.result()  # the other caller's value, or its error
        try:
            value = compute()  # outside the lock: may be a slow API call
        except BaseException as e:
            with self._lock:
                del self._computing[key]
            mine.set_exception(e)
            raise
        with self._lock:
            del self._computing[key]
            self._data[key] = (now, value)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        mine.set_result(value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

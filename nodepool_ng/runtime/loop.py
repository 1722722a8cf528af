"""`Worker`: a named thread running `run_once()` whenever it is woken, or at a max interval.

Watches (cache listeners) call `wake()`; the loop never sleeps a fixed time on a work path.
`run_once()` may return a shorter delay for its next pass (e.g. while cloud launches are in
flight). While `paused()` is true (ZooKeeper suspended) the loop only waits.

Every started worker is listed by `live_workers()` until its loop ends, with the time its
current pass began (`pass_seconds()`): the daemon's watchdog (`runtime.watchdog`) stops
feeding systemd when a loop is stuck in one pass for longer than its `max_pass`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

from nodepool_ng.errors import ZooKeeperError

log = logging.getLogger("nodepool_ng.runtime")

# Workers whose loop is running (started, not yet ended), for the watchdog.
_live: weakref.WeakSet[Worker] = weakref.WeakSet()
_live_lock = threading.Lock()


def live_workers() -> list[Worker]:
    """The workers of this process whose loop runs (started, not ended)."""
    with _live_lock:
        return list(_live)


class Worker:
    """Subclass and implement `run_once`, or pass `target`."""

    # Longest one pass may run before the watchdog counts the loop as stuck: None for the
    # watchdog's own limit, math.inf for loops whose pass is a long job with a timeout of
    # its own (a diskimage-builder run, an image upload).
    max_pass: float | None = None

    def __init__(
        self,
        name: str,
        interval: float = 60.0,
        target: Callable[[], float | None] | None = None,
        paused: Callable[[], bool] | None = None,
        pause_wait: float = 1.0,
    ) -> None:
        self.name = name
        self.interval = interval
        self._target = target
        self._paused = paused or (lambda: False)
        self._pause_wait = pause_wait
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0  # completed run_once calls, for tests and stats
        self._pass_started: float | None = None  # time.monotonic() while in run_once
        self.log = logging.getLogger(f"nodepool_ng.{name}")

    # -- to implement ----------------------------------------------------------------------
    def run_once(self) -> float | None:
        """One pass of work. Returns the delay before the next pass, or None for `interval`."""
        if self._target is None:
            raise NotImplementedError
        return self._target()

    def on_stop(self) -> None:
        """Called in the worker thread after the loop ends."""

    # -- control ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        with _live_lock:
            _live.add(self)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def pass_seconds(self, now: float | None = None) -> float:
        """How long the current pass has been running (0.0 while waiting between passes)."""
        started = self._pass_started
        if started is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - started)

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        finally:
            with _live_lock:
                _live.discard(self)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            if self._paused():
                self._wake.wait(self._pause_wait)
                self._wake.clear()
                continue
            # Clear before working so that a wake() during the pass causes another pass.
            self._wake.clear()
            delay: float | None = None
            self._pass_started = time.monotonic()
            try:
                delay = self.run_once()
            except ZooKeeperError as e:
                # The connection dropped mid-pass: expected, not a bug; the pause takes over.
                log.warning("%s: pass interrupted: %s", self.name, e)
            except Exception:
                log.exception("%s: error in pass", self.name)
            finally:
                self._pass_started = None
            self.passes += 1
            if self._stopped.is_set():
                break
            self._wake.wait(self.interval if delay is None else max(0.0, delay))
        try:
            self.on_stop()
        except Exception:
            log.exception("%s: error while stopping", self.name)

"""`Worker`: a named thread running `run_once()` whenever it is woken, or at a max interval.

Watches (cache listeners) call `wake()`; the loop never sleeps a fixed time on a work path.
`run_once()` may return a shorter delay for its next pass (e.g. while cloud launches are in
flight). While `paused()` is true (ZooKeeper suspended) the loop only waits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from nodepool_ng.errors import ZooKeeperError

log = logging.getLogger("nodepool_ng.runtime")


class Worker:
    """Subclass and implement `run_once`, or pass `target`."""

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

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopped.is_set():
            if self._paused():
                self._wake.wait(self._pause_wait)
                self._wake.clear()
                continue
            # Clear before working so that a wake() during the pass causes another pass.
            self._wake.clear()
            delay: float | None = None
            try:
                delay = self.run_once()
            except ZooKeeperError as e:
                # The connection dropped mid-pass: expected, not a bug; the pause takes over.
                log.warning("%s: pass interrupted: %s", self.name, e)
            except Exception:
                log.exception("%s: error in pass", self.name)
            self.passes += 1
            if self._stopped.is_set():
                break
            self._wake.wait(self.interval if delay is None else max(0.0, delay))
        try:
            self.on_stop()
        except Exception:
            log.exception("%s: error while stopping", self.name)

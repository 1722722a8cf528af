"""The daemon's watchdog: `WATCHDOG=1` to systemd only while the main loops make progress.

The daemon's main thread feeds it (`Watchdog.run(wait)`: the loop that waits for the daemon
to stop). Every half of systemd's `WatchdogSec` (`$WATCHDOG_USEC`) it checks the process's
`Worker` loops (`runtime.loop.live_workers()`) and the daemon's own checks, and pings only
when none is stuck:

- a worker is stuck when one pass has run longer than its `max_pass` (default: the watchdog
  timeout itself; `math.inf` exempts loops whose pass is a long job with its own timeout);
- a worker whose thread ended although nobody stopped it is dead;
- a daemon check (`checks`) returning a message is a problem too (the builder's scheduler).

So a loop stuck in one pass for `WatchdogSec` stops the pings, and systemd kills and restarts
the daemon (`Restart=on-failure`) at most `WatchdogSec` later; a wedged main thread stops
them at once. Each change of the verdict is logged once (ERROR when the feeding stops,
INFO when it resumes), naming the loops.

Outside systemd (a container), `$NODEPOOL_WATCHDOG_SEC` sets the same timeout and
`$NODEPOOL_HEARTBEAT_FILE` names a file whose modification time each ping refreshes: a health
check compares its age with the timeout (the builder image's HEALTHCHECK). With neither
`$WATCHDOG_USEC` nor `$NODEPOOL_WATCHDOG_SEC` it only waits.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from nodepool_ng.runtime import sdnotify
from nodepool_ng.runtime.loop import Worker, live_workers

log = logging.getLogger("nodepool_ng.runtime.watchdog")

Check = Callable[[], str | None]


class Watchdog:
    def __init__(
        self,
        timeout: float | None,
        checks: Sequence[Check] = (),
        workers: Callable[[], Iterable[Worker]] = live_workers,
        send: Callable[..., bool] = sdnotify.notify,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_file: str | None = None,
    ) -> None:
        """`timeout`: systemd's watchdog timeout in seconds (None: disabled);
        `heartbeat_file`: touched at each ping."""
        self.timeout = timeout
        self.heartbeat_file = heartbeat_file
        self._heartbeat_failed = False
        self._checks = tuple(checks)
        self._workers = workers
        self._send = send
        self._clock = clock
        self._next = 0.0  # when the next ping is due
        self._failing: tuple[str, ...] = ()
        self.pings = 0

    @classmethod
    def from_environment(cls, checks: Sequence[Check] = (),
                         env: Mapping[str, str] | None = None) -> Watchdog:
        """systemd's `$WATCHDOG_USEC`, else `$NODEPOOL_WATCHDOG_SEC`; `$NODEPOOL_HEARTBEAT_FILE`."""
        env = os.environ if env is None else env
        timeout = sdnotify.watchdog_timeout(env)
        own = env.get("NODEPOOL_WATCHDOG_SEC")
        if timeout is None and own:
            try:
                timeout = float(own)
            except ValueError:
                timeout = None
            if timeout is None or not 0 < timeout < math.inf:
                log.warning("NODEPOOL_WATCHDOG_SEC=%r is not a positive number: no watchdog",
                            own)
                timeout = None
        return cls(timeout, checks, heartbeat_file=env.get("NODEPOOL_HEARTBEAT_FILE") or None)

    @property
    def enabled(self) -> bool:
        return self.timeout is not None

    @property
    def step(self) -> float:
        """How often the main loop should call `feed()`: a ping is due every timeout / 2."""
        if self.timeout is None:
            return 1.0
        return max(0.01, min(1.0, self.timeout / 4))

    def problems(self, now: float | None = None) -> list[str]:
        """What stops the feeding now, one line each ([] when all loops are healthy)."""
        now = self._clock() if now is None else now
        found = []
        for worker in self._workers():
            if worker.stopped:
                continue
            if not worker.running:
                found.append(f"{worker.name}: thread ended")
                continue
            limit = worker.max_pass if worker.max_pass is not None else self.timeout
            seconds = worker.pass_seconds(now)
            if limit is not None and not math.isinf(limit) and seconds > limit:
                found.append(f"{worker.name}: one pass running for {seconds:.0f}s "
                             f"(limit {limit:g}s)")
        for check in self._checks:
            try:
                message = check()
            except Exception as e:  # a broken check must not look healthy
                message = f"check failed: {e}"
            if message:
                found.append(message)
        return sorted(found)

    def feed(self) -> bool:
        """Ping systemd if a ping is due and nothing is stuck; True when it pinged."""
        if self.timeout is None:
            return False
        now = self._clock()
        if now < self._next:
            return False
        failing = tuple(self.problems(now))
        if failing != self._failing:
            if failing:
                log.error("Watchdog: not telling systemd we are alive: %s", "; ".join(failing))
            else:
                log.info("Watchdog: all loops progress again")
            self._failing = failing
        if failing:
            return False
        if self._send("WATCHDOG=1"):
            self.pings += 1
        self._touch()
        self._next = now + self.timeout / 2
        return True

    def _touch(self) -> None:
        if self.heartbeat_file is None:
            return
        try:
            with open(self.heartbeat_file, "a"):
                pass
            os.utime(self.heartbeat_file)
        except OSError as e:
            if not self._heartbeat_failed:
                log.error("Watchdog: cannot touch %s: %s", self.heartbeat_file, e)
            self._heartbeat_failed = True
        else:
            self._heartbeat_failed = False

    def run(self, wait: Callable[[float], bool]) -> None:
        """The main thread's loop: feed until `wait(seconds)` says the daemon stopped."""
        self.feed()
        while not wait(self.step):
            self.feed()

"""Provider health: exponential backoff with jitter, and a circuit breaker per provider.

Pure logic (a clock and a random source are injected), used by the provider runner, the
deleter, the cleanup and the OpenStack driver's list cache.

Breaker states:

* `healthy` (closed): launches go out as the pools decide. `threshold` cloud failures in a
  row, with no success for at least `min_failing` seconds, open the breaker.
* `open`: no launches (the pools show themselves paused, so requests go to other
  providers) and no new deletes. A probe (one cheap call) is due at backed-off intervals;
  a failed probe backs off further, a good one moves to `ramping`.
* `ramping`: launches resume gradually: `allowance` in flight at once, starting at 1 and
  doubled by every successful launch; at `ramp_limit` the breaker is `healthy` again. A
  failure while ramping halves the allowance (a cloud with sporadic errors still ramps up);
  a run of failures as above opens the breaker again, with the probes backed off further.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from enum import StrEnum


def backoff_delay(
    failures: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after `failures` consecutive failures (>= 1): the exponential step
    `base * 2**(failures-1)`, capped at `cap`, with "equal jitter": between half the step
    and the whole step, so many clients failing together do not retry in lockstep."""
    if failures <= 0:
        return 0.0
    step = min(cap, base * 2.0 ** min(failures - 1, 62))
    return step / 2.0 + rand() * step / 2.0


class Backoff:
    """Consecutive failures of one thing and when it may be tried again."""

    def __init__(self, base: float, cap: float, clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self._clock = clock
        self._rand = rand
        self.failures = 0
        self.next_at = float("-inf")

    def failed(self) -> float:
        """Count a failure; returns the delay before the next try."""
        self.failures += 1
        delay = backoff_delay(self.failures, self.base, self.cap, self._rand)
        self.next_at = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = float("-inf")

    def ready(self) -> bool:
        return self._clock() >= self.next_at

    def wait(self) -> float:
        """Seconds until the next try is allowed (0 when it is)."""
        return max(0.0, self.next_at - self._clock())


class BreakerState(StrEnum):
    HEALTHY = "healthy"
    OPEN = "open"
    RAMPING = "ramping"


# Gauge values for statsd (stats.provider_health).
BREAKER_GAUGE = {BreakerState.HEALTHY: 0, BreakerState.RAMPING: 1, BreakerState.OPEN: 2}

StateListener = Callable[[BreakerState, BreakerState, str], None]  # (old, new, why)


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 5,
        min_failing: float = 3.0,
        probe_base: float = 1.0,
        probe_cap: float = 60.0,
        ramp_limit: int = 32,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        on_change: StateListener | None = None,
    ) -> None:
        if threshold < 1 or ramp_limit < 1:
            raise ValueError("threshold and ramp_limit must be at least 1")
        self.threshold = threshold
        self.min_failing = min_failing
        self.ramp_limit = ramp_limit
        self._clock = clock
        self.on_change = on_change  # (old, new, why), called outside the lock
        self._lock = threading.Lock()
        self.state = BreakerState.HEALTHY
        self._failures = 0  # in a row
        self._failing_since = 0.0
        self._probes = Backoff(probe_base, probe_cap, clock, rand)
        self._probing = False
        self.allowance = ramp_limit

    # -- what callers may do -----------------------------------------------------------------
    @property
    def accepting(self) -> bool:
        return self.state is not BreakerState.OPEN

    def launch_allowed(self, in_flight: int) -> bool:
        state = self.state
        if state is BreakerState.OPEN:
            return False
        return state is BreakerState.HEALTHY or in_flight < self.allowance

    def probe_due(self) -> bool:
        """True (once) when open and a probe should be sent now; report it with
        `probe_result`."""
        with self._lock:
            if self.state is not BreakerState.OPEN or self._probing or not self._probes.ready():
                return False
            self._probing = True
            return True

    def probe_wait(self) -> float | None:
        """Seconds until the next probe is due; None when no probe is pending."""
        with self._lock:
            if self.state is not BreakerState.OPEN or self._probing:
                return None
            return self._probes.wait()

    # -- what happened ---------------------------------------------------------------------
    def success(self, launched: bool = False) -> None:
        """A cloud call succeeded; `launched`: a whole launch did (this ramps up)."""
        with self._lock:
            self._failures = 0
            if self.state is not BreakerState.RAMPING or not launched:
                return
            self.allowance = min(self.ramp_limit, self.allowance * 2)
            if self.allowance < self.ramp_limit:
                return
            change = self._set(BreakerState.HEALTHY)
            self._probes.succeeded()
        self._notify(change, "launches succeed again")

    def failure(self, why: str) -> None:
        """A cloud call failed (not for quota)."""
        with self._lock:
            now = self._clock()
            if self._failures == 0:
                self._failing_since = now
            self._failures += 1
            if self.state is BreakerState.OPEN:
                return
            if self.state is BreakerState.RAMPING:
                self.allowance = max(1, self.allowance // 2)
            if self._failures < self.threshold or now - self._failing_since < self.min_failing:
                return
            change = self._open()
        self._notify(change, why)

    def probe_result(self, ok: bool, why: str = "") -> None:
        with self._lock:
            self._probing = False
            if self.state is not BreakerState.OPEN:
                return
            if not ok:
                self._probes.failed()
                return
            self.allowance = 1
            self._failures = 0
            change = self._set(BreakerState.RAMPING)
        self._notify(change, why or "probe succeeded")

    # -- internals -------------------------------------------------------------------------
    def _open(self) -> tuple[BreakerState, BreakerState]:
        self._probes.failed()  # the first probe after one backoff step, later ones further
        return self._set(BreakerState.OPEN)

    def _set(self, new: BreakerState) -> tuple[BreakerState, BreakerState]:
        old, self.state = self.state, new
        return old, new

    def _notify(self, change: tuple[BreakerState, BreakerState], why: str) -> None:
        old, new = change
        if old is not new and self.on_change is not None:
            self.on_change(old, new, why)

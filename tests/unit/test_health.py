"""Pure tests of provider health: backoff bounds and the circuit breaker's transitions."""

from __future__ import annotations

import pytest

from nodepool_ng.launcher.health import (
    Backoff,
    BreakerState,
    CircuitBreaker,
    backoff_delay,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("failures", range(1, 12))
@pytest.mark.parametrize("r", [0.0, 0.5, 0.999])
def test_backoff_is_between_half_and_whole_exponential_step(failures: int, r: float) -> None:
    step = min(30.0, 0.5 * 2 ** (failures - 1))
    delay = backoff_delay(failures, base=0.5, cap=30.0, rand=lambda: r)
    assert step / 2 <= delay <= step


def test_backoff_grows_then_caps_and_never_overflows() -> None:
    lows = [backoff_delay(n, 1.0, 60.0, rand=lambda: 0.0) for n in range(1, 9)]
    assert lows == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_delay(10_000, 1.0, 60.0, rand=lambda: 1.0) == 60.0
    assert backoff_delay(0, 1.0, 60.0) == 0.0


def test_backoff_jitter_spreads_retries() -> None:
    import random

    rng = random.Random(7)
    delays = {round(backoff_delay(5, 1.0, 60.0, rng.random), 3) for _ in range(50)}
    assert len(delays) > 40  # not in lockstep


def test_backoff_object_waits_and_resets() -> None:
    clock = Clock()
    b = Backoff(1.0, 10.0, clock, rand=lambda: 1.0)
    assert b.ready()
    assert b.failed() == 1.0 and not b.ready()
    clock.now += 1.0
    assert b.ready()
    assert b.failed() == 2.0 and b.wait() == 2.0
    b.succeeded()
    assert b.ready() and b.failures == 0


def _breaker(clock: Clock, changes: list[tuple[str, str]], **kw: object) -> CircuitBreaker:
    return CircuitBreaker(
        threshold=3, min_failing=2.0, probe_base=1.0, probe_cap=8.0, ramp_limit=4,
        clock=clock, rand=lambda: 1.0,
        on_change=lambda old, new, why: changes.append((old.value, new.value)), **kw)  # type: ignore[arg-type]


def test_breaker_opens_only_after_threshold_failures_for_min_failing_time() -> None:
    clock, changes = Clock(), []
    b = _breaker(clock, changes)
    for _ in range(10):
        b.failure("500")
    assert b.state is BreakerState.HEALTHY  # many failures, but within 2 s
    clock.now += 2.0
    b.failure("500")
    assert b.state is BreakerState.OPEN and not b.accepting
    assert not b.launch_allowed(0)
    assert changes == [("healthy", "open")]


def test_a_success_resets_the_failure_run() -> None:
    clock, changes = Clock(), []
    b = _breaker(clock, changes)
    b.failure("x")
    b.failure("x")
    clock.now += 5
    b.success()
    b.failure("x")
    b.failure("x")
    assert b.state is BreakerState.HEALTHY and changes == []


def test_probes_back_off_and_a_good_probe_ramps_up_gradually() -> None:
    clock, changes = Clock(), []
    b = _breaker(clock, changes)
    for i in range(3):
        clock.now += 1.0 if i else 0.0
        b.failure("x")
    assert b.state is BreakerState.OPEN
    assert not b.probe_due() and b.probe_wait() == 1.0
    clock.now += 1.0
    assert b.probe_due()
    assert not b.probe_due()  # one probe at a time
    b.probe_result(False)
    assert b.probe_wait() == 2.0  # backed off further
    clock.now += 2.0
    assert b.probe_due()
    b.probe_result(True)
    assert b.state is BreakerState.RAMPING and b.accepting
    assert b.launch_allowed(0) and not b.launch_allowed(1)
    b.success()  # a delete or listing: no ramp-up
    assert not b.launch_allowed(1)
    b.success(launched=True)
    assert b.launch_allowed(1) and not b.launch_allowed(2)
    b.success(launched=True)
    assert b.state is BreakerState.HEALTHY and b.launch_allowed(100)
    assert changes == [("healthy", "open"), ("open", "ramping"), ("ramping", "healthy")]


def _ramping(clock: Clock, changes: list[tuple[str, str]]) -> CircuitBreaker:
    b = _breaker(clock, changes)
    for i in range(3):
        clock.now += 1.0 if i else 0.0
        b.failure("x")
    clock.now += 1.0
    assert b.probe_due()
    b.probe_result(True)
    assert b.state is BreakerState.RAMPING
    return b


def test_a_sporadic_failure_while_ramping_slows_the_ramp_but_does_not_reopen() -> None:
    """A cloud with a few percent of errors must still come back (it used to reopen at
    the first error, with ever longer probe waits, and starve its requests)."""
    clock, changes = Clock(), []
    b = _ramping(clock, changes)
    b.success(launched=True)
    assert b.launch_allowed(1) and not b.launch_allowed(2)  # allowance 2
    b.failure("one 500")
    assert b.state is BreakerState.RAMPING
    assert b.launch_allowed(0) and not b.launch_allowed(1)  # halved to 1
    b.success(launched=True)
    b.success(launched=True)
    assert b.state is BreakerState.HEALTHY


def test_a_run_of_failures_while_ramping_reopens_with_longer_probe_waits() -> None:
    clock, changes = Clock(), []
    b = _ramping(clock, changes)
    for i in range(3):
        clock.now += 1.0 if i else 0.0
        b.failure("500 again")
    assert b.state is BreakerState.OPEN
    # The probe backoff kept growing: the next probe waits longer than the first.
    assert b.probe_wait() == 2.0
    assert changes[-1] == ("ramping", "open")

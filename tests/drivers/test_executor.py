"""The provider API executor: most urgent call first, FIFO within a priority, progress hook."""

from __future__ import annotations

import threading

import pytest

from nodepool_ng.drivers.executor import Priority, PriorityExecutor


def _blocked(executor: PriorityExecutor) -> threading.Event:
    """Occupy the executor's only thread until the returned event is set."""
    gate = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(10)

    executor.submit(hold, priority=Priority.CLEANUP)
    assert started.wait(10)
    return gate


def test_runs_most_urgent_first_and_fifo_within_a_priority() -> None:
    executor = PriorityExecutor(1, "test")
    gate = _blocked(executor)
    order: list[str] = []
    futures = [
        executor.submit(order.append, "delete", priority=Priority.CLEANUP),
        executor.submit(order.append, "create-1", priority=Priority.START),
        executor.submit(order.append, "create-2"),  # START is the default
        executor.submit(order.append, "addresses", priority=Priority.FINISH),
        executor.submit(order.append, "list", priority=Priority.POLL),
    ]
    assert executor.queued() == 5
    gate.set()
    for future in futures:
        future.result(10)
    assert order == ["list", "addresses", "create-1", "create-2", "delete"]
    executor.shutdown()


def test_results_errors_and_progress_listener() -> None:
    finished = threading.Semaphore(0)
    executor = PriorityExecutor(2, "test", listener=finished.release)
    assert executor.submit(lambda a, b: a + b, 2, 3).result(10) == 5
    assert finished.acquire(timeout=10)  # told after the call, so the runner can advance

    def boom() -> None:
        raise ValueError("cloud said no")

    with pytest.raises(ValueError, match="cloud said no"):
        executor.submit(boom).result(10)
    assert finished.acquire(timeout=10)
    executor.shutdown()


def test_a_failing_listener_does_not_kill_the_worker() -> None:
    def broken() -> None:
        raise RuntimeError("listener bug")

    executor = PriorityExecutor(1, "test", listener=broken)
    assert executor.submit(lambda: 1).result(10) == 1
    assert executor.submit(lambda: 2).result(10) == 2
    executor.shutdown()


def test_shutdown_cancels_queued_calls_and_refuses_new_ones() -> None:
    executor = PriorityExecutor(1, "test")
    gate = _blocked(executor)
    queued = executor.submit(lambda: "never")
    executor.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        executor.submit(lambda: None)
    gate.set()
    executor.shutdown(wait=True)


def test_uses_at_most_max_workers_threads() -> None:
    executor = PriorityExecutor(3, "test")
    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(10)
        with lock:
            running -= 1

    futures = [executor.submit(work) for _ in range(10)]
    release.set()
    for future in futures:
        future.result(10)
    assert 1 <= peak <= 3
    assert len(executor._threads) == 3
    executor.shutdown()


def test_view_at_a_priority_submits_there() -> None:
    executor = PriorityExecutor(1, "test")
    gate = _blocked(executor)
    order: list[str] = []
    executor.submit(order.append, "create")
    last = executor.at(Priority.POLL).submit(order.append, "list")
    gate.set()
    last.result(10)
    executor.shutdown()
    assert order == ["list", "create"]

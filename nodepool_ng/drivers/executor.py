"""`PriorityExecutor`: a bounded thread pool that runs the most urgent API call first.

A provider's API calls share one small pool. In a burst, dozens of server creates wait in it;
a plain FIFO pool then puts the server-list poll and the calls that finish a launch (reading
a server's addresses, adding its floating IP) behind all of them, so every node already
booted waits for every node not yet created. Here each call has a priority (lower first,
FIFO within one): finishing started work comes before starting more, and deleting comes
last. Deletes cannot starve: creates are bounded by the pool's quota, and a pool at quota
creates nothing until deletes free room.

`listener` (optional) is called after every call finishes: the provider's runner is woken
at once instead of noticing on its next poll.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from enum import IntEnum
from typing import Any, TypeVar

R = TypeVar("R")

log = logging.getLogger("nodepool_ng.drivers.executor")


class Priority(IntEnum):
    POLL = 0  # the shared server list: every waiting machine depends on it
    FINISH = 1  # work on a server that exists: addresses, floating IP, fault
    START = 2  # a new server
    CLEANUP = 3  # deleting


class PriorityExecutor:
    def __init__(self, max_workers: int, thread_name_prefix: str = "api",
                 listener: Callable[[], None] | None = None) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.thread_name_prefix = thread_name_prefix
        self.listener = listener
        self._queue: list[tuple[int, int, Future[Any], Callable[[], Any]]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._shutdown = False

    def submit(self, fn: Callable[..., R], *args: Any,
               priority: Priority = Priority.START) -> Future[R]:
        future: Future[R] = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            heapq.heappush(self._queue, (int(priority), next(self._order), future,
                                         lambda: fn(*args)))
            if self._idle:
                self._cond.notify()
            elif len(self._threads) < self.max_workers:
                self._start_thread()
        return future

    def at(self, priority: Priority) -> PrioritySubmitter:
        """A view whose `submit(fn, *args)` uses `priority` (for code written for Executors)."""
        return PrioritySubmitter(self, priority)

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                for _, _, future, _ in self._queue:
                    future.cancel()
                self._queue.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self.thread_name_prefix}_{len(self._threads)}",
            daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._shutdown:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if not self._queue:
                    return  # shut down and drained
                _, _, future, call = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)
            else:
                future.set_result(result)
            listener = self.listener
            if listener is not None:
                try:
                    listener()
                except Exception:
                    log.exception("%s: progress listener failed", self.thread_name_prefix)


class PrioritySubmitter:
    def __init__(self, executor: PriorityExecutor, priority: Priority) -> None:
        self.executor = executor
        self.priority = priority

    def submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        return self.executor.submit(fn, *args, priority=self.priority)

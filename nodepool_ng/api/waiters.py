"""Long-poll support: a GET waiting for a lease to change sleeps on an Event that the lease
cache's listener sets when that lease's record (or its lock) changes. No polling: a waiter
wakes at the change, at the lease's expiry (its shown state turns `expired` without a
write) or at its own deadline, whichever comes first."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Waiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, set[threading.Event]] = {}

    def on_lease(self, lease_id: str, lease: Any) -> None:
        """The lease cache's listener (its thread: only sets events)."""
        with self._lock:
            events = list(self._events.get(lease_id, ()))
        for event in events:
            event.set()

    @contextmanager
    def watching(self, lease_id: str) -> Iterator[threading.Event]:
        """An Event set on every change of `lease_id` while the block runs; clear it before
        reading the lease, then wait on it."""
        event = threading.Event()
        with self._lock:
            self._events.setdefault(lease_id, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                members = self._events.get(lease_id)
                if members is not None:
                    members.discard(event)
                    if not members:
                        del self._events[lease_id]

    def count(self) -> int:
        """Waiting calls (tests)."""
        with self._lock:
            return sum(len(m) for m in self._events.values())

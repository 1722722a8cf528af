"""Turn watch-driven cache callbacks into state transitions, and transitions into payloads.

The ZooKeeper caches call `listener(record_id, record_or_None)` on every change. A
`TransitionTracker` remembers the last record seen per id and reports a `Transition` only
when the state changed, or the record was removed (state `deleted`). The caches read a
znode after its watch fires, so two writes in quick succession may be seen as one: events
describe observed transitions, not every write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from nodepool_ng.model.image import ImageBuild, ImageUpload
from nodepool_ng.model.node import Node
from nodepool_ng.model.request import NodeRequest

T = TypeVar("T")

DELETED = "deleted"


@dataclass(frozen=True)
class Transition(Generic[T]):
    key: str
    record: T  # the new record, or the last one seen when removed
    previous: str | None  # None: first seen
    state: str


class TransitionTracker(Generic[T]):
    def __init__(self, state_of: Callable[[T], str | None]) -> None:
        self._state_of = state_of
        self._last: dict[str, T] = {}
        self._lock = threading.Lock()

    def seed(self, items: Iterable[tuple[str, T]]) -> None:
        """Records that exist already: remembered, not reported."""
        with self._lock:
            self._last.update(items)

    def last(self, key: str) -> T | None:
        with self._lock:
            return self._last.get(key)

    def update(self, key: str, record: T | None) -> Transition[T] | None:
        with self._lock:
            last = self._last.get(key)
            if record is None:
                if last is None:
                    return None
                del self._last[key]
                previous = self._state_of(last)
                if previous == DELETED:
                    return None
                return Transition(key, last, previous, DELETED)
            self._last[key] = record
        previous = self._state_of(last) if last is not None else None
        state = self._state_of(record)
        if state is None or state == previous:
            return None
        return Transition(key, record, previous, state)


def node_payload(n: Node, previous: str | None, state: str) -> dict[str, Any]:
    return {
        "id": n.id,
        "provider": n.provider,
        "pool": n.pool,
        "labels": list(n.type),
        "state": state,
        "previous_state": previous,
        "external_id": n.external_id,
        "interface_ip": n.interface_ip,
        "allocated_to": n.allocated_to,
        "az": n.az,
        "timestamp": time.time(),
    }


def request_payload(r: NodeRequest, previous: str | None, state: str) -> dict[str, Any]:
    return {
        "id": r.id,
        "node_types": list(r.node_types),
        "requestor": r.requestor,
        # Zuul's own keys, to match these events with Zuul's (its event and tenant).
        "event_id": r.event_id,
        "tenant_name": r.tenant_name,
        "state": state,
        "previous_state": previous,
        "nodes": list(r.nodes),
        "declined_by": list(r.declined_by),
        "provider": r.provider,
        "timestamp": time.time(),
    }


def build_payload(b: ImageBuild, previous: str | None, state: str) -> dict[str, Any]:
    return {
        "image": b.image_name,
        "build_id": b.id,
        "state": state,
        "previous_state": previous,
        "builder": b.builder,
        "formats": list(b.formats),
        "timestamp": time.time(),
    }


def upload_payload(u: ImageUpload, previous: str | None, state: str) -> dict[str, Any]:
    return {
        "image": u.image_name,
        "build_id": u.build_id,
        "provider": u.provider_name,
        "upload_id": u.id,
        "state": state,
        "previous_state": previous,
        "external_id": u.external_id,
        "external_name": u.external_name,
        "format": u.format,
        "timestamp": time.time(),
    }


def state_of(record: Any) -> str | None:
    """The record's state as its upstream string (records without `state` give None)."""
    state = getattr(record, "state", None)
    return None if state is None else str(state)

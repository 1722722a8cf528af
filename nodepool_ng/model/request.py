"""The NodeRequest record (`/nodepool/requests/<prio>-<seq>`): upstream's JSON, as Zuul 14
writes and reads it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nodepool_ng.model.record import (
    IDENTITY,
    KEPT_LOCAL,
    LIST,
    STATE,
    STATE_TIME,
    Record,
    int_or_zero,
    key,
)


class RequestState(StrEnum):
    """Request states (exactly upstream's four)."""

    REQUESTED = "requested"
    PENDING = "pending"
    FULFILLED = "fulfilled"
    FAILED = "failed"


FINAL_REQUEST_STATES = frozenset({RequestState.FULFILLED, RequestState.FAILED})

# Priorities used by the two requestors (Zuul: 100/200/300 high/normal/low, minus 1 when the
# parent build is paused; Nodepool: 100 default, 900 for min-ready).
DEFAULT_PRIORITY = "100"
MIN_READY_PRIORITY = "900"
MIN_READY_REQUESTOR = "NodePool:min-ready"

def format_priority(priority: int | str) -> str:
    """Zuul's 3-character priority prefix ('{:0>3}'): 99 -> '099'; rejects longer values."""
    text = f"{priority:0>3}"
    if len(text) != 3:
        raise ValueError(f"request priority: {priority!r} must format to exactly 3 characters")
    return text


def parse_request_id(request_id: str) -> tuple[str, str]:
    """Split `<prio>-<seq>` into (priority, sequence); ValueError naming the id if malformed."""
    prio, sep, seq = request_id.partition("-")
    if not sep or len(prio) != 3 or not seq or "-" in seq:
        raise ValueError(f"request id {request_id!r} is not '<3-char priority>-<sequence>'")
    return prio, seq


def is_request_id(name: str) -> bool:
    """True if `name` looks like a request znode name (Zuul checks index 3 is '-')."""
    try:
        parse_request_id(name)
    except ValueError:
        return False
    return True


@dataclass
class NodeRequest(Record):
    """A node request. `id` is the znode name and is not part of the JSON."""

    STATE_TYPE = RequestState
    CHECK_TYPES = True

    id: str | None = field(default=None, metadata=IDENTITY)
    state: RequestState | None = field(default=RequestState.REQUESTED, metadata=STATE)
    state_time: float | None = field(default_factory=time.time, metadata=STATE_TIME)
    declined_by: list[str] = field(default_factory=list, metadata=LIST)
    node_types: list[str] = field(default_factory=list, metadata=LIST)
    nodes: list[str] = field(default_factory=list, metadata=LIST)
    reuse: bool = field(default=True, metadata=key(read=bool))
    requestor: str | None = None
    requestor_data: Any = None
    provider: str | None = None
    relative_priority: int = field(default=0, metadata=key(read=int_or_zero))
    event_id: str | None = None
    created_time: float | None = None
    tenant_name: str | None = None
    # The held lock.
    lock: Any = field(default=None, compare=False, repr=False, metadata=KEPT_LOCAL)

    @classmethod
    def from_dict(cls, request_id: str | None, data: dict[str, Any]) -> NodeRequest:
        """Build from JSON; Zuul omits `reuse`, `declined_by`, `nodes`: upstream defaults.
        A field of the wrong type raises MalformedRecord naming it (a request for the labels
        "s", "m", "a", "l", "l" is worse than none)."""
        return cls(id=request_id, **cls._read(data, f"request {request_id}"))

    @property
    def priority(self) -> str:
        """The 3-character priority prefix of the id (lower sorts first)."""
        if self.id is None:
            raise ValueError("request has no id yet")
        return parse_request_id(self.id)[0]

    @property
    def sequence(self) -> str:
        """The sequence part of the id."""
        if self.id is None:
            raise ValueError("request has no id yet")
        return parse_request_id(self.id)[1]

    @property
    def sort_key(self) -> tuple[str, int, str]:
        """Upstream's order: (priority prefix, relative_priority, sequence)."""
        prio, seq = parse_request_id(self.id or "")
        return prio, self.relative_priority, seq

    @property
    def is_min_ready(self) -> bool:
        """True for requests created by the launcher's min-ready loop."""
        return self.requestor == MIN_READY_REQUESTOR


REQUEST_KEYS = NodeRequest.json_keys()

"""The NodeRequest record (`/nodepool/requests/<prio>-<seq>`), spec §1.2 and §11."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nodepool_ng.model.record import Record, decode_json


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

REQUEST_KEYS = (
    "state",
    "state_time",
    "declined_by",
    "node_types",
    "nodes",
    "reuse",
    "requestor",
    "requestor_data",
    "provider",
    "relative_priority",
    "event_id",
    "created_time",
    "tenant_name",
)


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

    id: str | None = None
    state: RequestState | None = RequestState.REQUESTED
    state_time: float | None = field(default_factory=time.time)
    declined_by: list[str] = field(default_factory=list)
    node_types: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    reuse: bool = True
    requestor: str | None = None
    requestor_data: Any = None
    provider: str | None = None
    relative_priority: int = 0
    event_id: str | None = None
    created_time: float | None = None
    tenant_name: str | None = None
    # Local only: held kazoo lock and znode version last read.
    lock: Any = field(default=None, compare=False, repr=False)
    zk_version: int = field(default=-1, compare=False, repr=False)

    def _known_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value if self.state is not None else None,
            "state_time": self.state_time,
            "declined_by": list(self.declined_by),
            "node_types": list(self.node_types),
            "nodes": list(self.nodes),
            "reuse": self.reuse,
            "requestor": self.requestor,
            "requestor_data": self.requestor_data,
            "provider": self.provider,
            "relative_priority": self.relative_priority,
            "event_id": self.event_id,
            "created_time": self.created_time,
            "tenant_name": self.tenant_name,
        }

    @classmethod
    def from_dict(cls, request_id: str | None, data: dict[str, Any]) -> NodeRequest:
        """Build from JSON; Zuul omits `reuse`, `declined_by`, `nodes`: upstream defaults.
        A field of the wrong type raises MalformedRecord naming it (a request for the labels
        "s", "m", "a", "l", "l" is worse than none)."""
        try:
            state = cls._coerce_state(data.get("state"))
        except ValueError as e:
            raise ValueError(f"request {request_id}: {e}") from None
        cls.check_types(data, REQUEST_KEYS, f"request {request_id}")
        return cls(
            id=request_id,
            state=state,
            state_time=data.get("state_time"),
            declined_by=list(data.get("declined_by") or []),
            node_types=list(data.get("node_types") or []),
            nodes=list(data.get("nodes") or []),
            reuse=bool(data.get("reuse", True)),
            requestor=data.get("requestor"),
            requestor_data=data.get("requestor_data"),
            provider=data.get("provider"),
            relative_priority=int(data.get("relative_priority") or 0),
            event_id=data.get("event_id"),
            created_time=data.get("created_time"),
            tenant_name=data.get("tenant_name"),
            extra=cls._split(data, set(REQUEST_KEYS)),
        )

    @classmethod
    def from_json(cls, request_id: str | None, raw: bytes | None) -> NodeRequest:
        """Build from znode bytes; ValueError naming the request on bad data."""
        return cls.from_dict(request_id, decode_json(raw, f"request {request_id}"))

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

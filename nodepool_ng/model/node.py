"""The Node record (`/nodepool/nodes/<id>`), upstream `Node.toDict` JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nodepool_ng.model.record import IDENTITY, KEPT_LOCAL, LIST, STATE, STATE_TIME, Record, key


class NodeState(StrEnum):
    """Node states (upstream's exact strings)."""

    INIT = "init"
    BUILDING = "building"
    TESTING = "testing"  # defined upstream, unused
    READY = "ready"
    IN_USE = "in-use"
    USED = "used"
    HOLD = "hold"
    DELETING = "deleting"
    FAILED = "failed"
    ABORTED = "aborted"
    DELETED = "deleted"


# States in which an unlocked node is removed by the deleter (as upstream's DeletedNodeWorker does).
CLEANUP_STATES = frozenset(
    {
        NodeState.USED,
        NodeState.IN_USE,
        NodeState.BUILDING,
        NodeState.FAILED,
        NodeState.DELETING,
        NodeState.DELETED,
        NodeState.ABORTED,
    }
)
# States from which a node never comes back to service.
FINAL_STATES = frozenset(
    {NodeState.USED, NodeState.DELETING, NodeState.DELETED, NodeState.FAILED, NodeState.ABORTED}
)
# States in which the launcher is still creating the server.
LAUNCHING_STATES = frozenset({NodeState.INIT, NodeState.BUILDING})
# States in which Zuul owns the node.
ZUUL_STATES = frozenset({NodeState.IN_USE, NodeState.USED, NodeState.HOLD})

def _as_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, list):
        return list(value)
    return [value]


def _hold_expiration(value: Any) -> int | None:
    # Upstream coerces to int; bad values become 0.
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _or_empty_dict(value: Any) -> Any:
    return value or {}


@dataclass
class Node(Record):
    """A node. `id` is the znode name (10 digits) and is never written into the JSON."""

    STATE_TYPE = NodeState
    CHECK_TYPES = True

    id: str | None = field(default=None, metadata=IDENTITY)
    state: NodeState | None = field(default=None, metadata=STATE)
    state_time: float | None = field(default_factory=time.time, metadata=STATE_TIME)
    cloud: str | None = None
    provider: str | None = None
    pool: str | None = None
    # Old records stored `type` as a single string.
    type: list[str] = field(default_factory=list,
                            metadata=key(read=_as_list, write=list, check_read=True))
    allocated_to: str | None = None
    az: str | None = None
    region: str | None = None
    public_ipv4: str | None = None
    private_ipv4: str | None = None
    public_ipv6: str | None = None
    host_id: str | None = None
    interface_ip: str | None = None
    # `ssh_port` is kept by upstream for old Zuul versions.
    connection_port: int = field(default=22, metadata=key(also=("ssh_port",)))
    image_id: str | None = None
    launcher: str | None = None
    created_time: float | None = None
    external_id: str | None = None
    hostname: str | None = None
    comment: str | None = None
    user_data: Any = None
    hold_job: str | None = None
    host_keys: list[str] = field(default_factory=list, metadata=LIST)
    username: str | None = "zuul"
    connection_type: str | None = None
    shell_type: str | None = None
    hold_expiration: int | None = field(default=None,
                                        metadata=key(read=_hold_expiration, check=None))
    # Quota arithmetic sums `resources`: numbers only.
    resources: dict[str, Any] | None = field(
        default=None, metadata=key(check=dict[str, float] | None))
    slot: int | None = None
    attributes: dict[str, Any] | None = None
    python_path: str | None = None
    tenant_name: str | None = None
    driver_data: Any = None
    requestor: str | None = None
    node_properties: dict[str, Any] = field(default_factory=dict,
                                            metadata=key(read=_or_empty_dict))
    # The held lock and the lock contenders the cache saw.
    lock: Any = field(default=None, compare=False, repr=False, metadata=KEPT_LOCAL)
    lock_contenders: frozenset[str] = field(default=frozenset(), compare=False, repr=False,
                                      metadata=KEPT_LOCAL)

    @classmethod
    def from_dict(cls, node_id: str | None, data: dict[str, Any]) -> Node:
        """Build a Node from its JSON object; unknown keys (e.g. Zuul's `id`) go to `extra`.
        A field of the wrong type raises MalformedRecord naming it."""
        return cls(id=node_id, **cls._read(data, f"node {node_id}"))

    @property
    def label(self) -> str | None:
        """The first (usually only) label of the node."""
        return self.type[0] if self.type else None


# Upstream's key order in Node.toDict (state/state_time come from BaseModel).
NODE_KEYS = Node.json_keys()

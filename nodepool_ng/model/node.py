"""The Node record (`/nodepool/nodes/<id>`), upstream `Node.toDict` JSON (spec §1.3)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nodepool_ng.model.record import Record, decode_json


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


# States in which an unlocked node is removed by the deleter (spec §2.1 step 6).
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

# Upstream's key order in Node.toDict (state/state_time come from BaseModel).
NODE_KEYS = (
    "state",
    "state_time",
    "cloud",
    "provider",
    "pool",
    "type",
    "allocated_to",
    "az",
    "region",
    "public_ipv4",
    "private_ipv4",
    "public_ipv6",
    "host_id",
    "interface_ip",
    "connection_port",
    "ssh_port",
    "image_id",
    "launcher",
    "created_time",
    "external_id",
    "hostname",
    "comment",
    "user_data",
    "hold_job",
    "host_keys",
    "username",
    "connection_type",
    "shell_type",
    "hold_expiration",
    "resources",
    "slot",
    "attributes",
    "python_path",
    "tenant_name",
    "driver_data",
    "requestor",
    "node_properties",
)


# `type` may be an old single string; `hold_expiration` is coerced as upstream does.
_CHECKED_KEYS = tuple(k for k in NODE_KEYS if k not in ("type", "hold_expiration"))
# Quota arithmetic sums `resources`: numbers only.
_STRICTER: dict[str, Any] = {"resources": dict[str, float] | None}


def _as_list(value: Any) -> list[str]:
    # Old records stored `type` as a single string.
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


@dataclass
class Node(Record):
    """A node. `id` is the znode name (10 digits) and is never written into the JSON."""

    STATE_TYPE = NodeState

    id: str | None = None
    state: NodeState | None = None
    state_time: float | None = field(default_factory=time.time)
    cloud: str | None = None
    provider: str | None = None
    pool: str | None = None
    type: list[str] = field(default_factory=list)
    allocated_to: str | None = None
    az: str | None = None
    region: str | None = None
    public_ipv4: str | None = None
    private_ipv4: str | None = None
    public_ipv6: str | None = None
    host_id: str | None = None
    interface_ip: str | None = None
    connection_port: int = 22
    image_id: str | None = None
    launcher: str | None = None
    created_time: float | None = None
    external_id: str | None = None
    hostname: str | None = None
    comment: str | None = None
    user_data: Any = None
    hold_job: str | None = None
    host_keys: list[str] = field(default_factory=list)
    username: str | None = "zuul"
    connection_type: str | None = None
    shell_type: str | None = None
    hold_expiration: int | None = None
    resources: dict[str, Any] | None = None
    slot: int | None = None
    attributes: dict[str, Any] | None = None
    python_path: str | None = None
    tenant_name: str | None = None
    driver_data: Any = None
    requestor: str | None = None
    node_properties: dict[str, Any] = field(default_factory=dict)
    # Local only, never serialized: the held kazoo lock, the cached lock contenders and the
    # znode version last read.
    lock: Any = field(default=None, compare=False, repr=False)
    lock_contenders: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    zk_version: int = field(default=-1, compare=False, repr=False)

    def _known_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value if self.state is not None else None,
            "state_time": self.state_time,
            "cloud": self.cloud,
            "provider": self.provider,
            "pool": self.pool,
            "type": list(self.type),
            "allocated_to": self.allocated_to,
            "az": self.az,
            "region": self.region,
            "public_ipv4": self.public_ipv4,
            "private_ipv4": self.private_ipv4,
            "public_ipv6": self.public_ipv6,
            "host_id": self.host_id,
            "interface_ip": self.interface_ip,
            "connection_port": self.connection_port,
            # Kept by upstream for old Zuul versions.
            "ssh_port": self.connection_port,
            "image_id": self.image_id,
            "launcher": self.launcher,
            "created_time": self.created_time,
            "external_id": self.external_id,
            "hostname": self.hostname,
            "comment": self.comment,
            "user_data": self.user_data,
            "hold_job": self.hold_job,
            "host_keys": list(self.host_keys),
            "username": self.username,
            "connection_type": self.connection_type,
            "shell_type": self.shell_type,
            "hold_expiration": self.hold_expiration,
            "resources": self.resources,
            "slot": self.slot,
            "attributes": self.attributes,
            "python_path": self.python_path,
            "tenant_name": self.tenant_name,
            "driver_data": self.driver_data,
            "requestor": self.requestor,
            "node_properties": self.node_properties,
        }

    @classmethod
    def from_dict(cls, node_id: str | None, data: dict[str, Any]) -> Node:
        """Build a Node from its JSON object; unknown keys (e.g. Zuul's `id`) go to `extra`.
        A field of the wrong type raises MalformedRecord naming it."""
        what = f"node {node_id}"
        cls.check_types(data, _CHECKED_KEYS, what, _STRICTER)
        cls.check_types({"type": _as_list(data.get("type"))}, ("type",), what)
        return cls(
            id=node_id,
            state=cls._coerce_state_for(data.get("state"), what),
            state_time=data.get("state_time"),
            cloud=data.get("cloud"),
            provider=data.get("provider"),
            pool=data.get("pool"),
            type=_as_list(data.get("type")),
            allocated_to=data.get("allocated_to"),
            az=data.get("az"),
            region=data.get("region"),
            public_ipv4=data.get("public_ipv4"),
            private_ipv4=data.get("private_ipv4"),
            public_ipv6=data.get("public_ipv6"),
            host_id=data.get("host_id"),
            interface_ip=data.get("interface_ip"),
            connection_port=data.get("connection_port", data.get("ssh_port", 22)),
            image_id=data.get("image_id"),
            launcher=data.get("launcher"),
            created_time=data.get("created_time"),
            external_id=data.get("external_id"),
            hostname=data.get("hostname"),
            comment=data.get("comment"),
            user_data=data.get("user_data"),
            hold_job=data.get("hold_job"),
            host_keys=list(data.get("host_keys") or []),
            username=data.get("username", "zuul"),
            connection_type=data.get("connection_type"),
            shell_type=data.get("shell_type"),
            hold_expiration=_hold_expiration(data.get("hold_expiration")),
            resources=data.get("resources"),
            slot=data.get("slot"),
            attributes=data.get("attributes"),
            python_path=data.get("python_path"),
            tenant_name=data.get("tenant_name"),
            driver_data=data.get("driver_data"),
            requestor=data.get("requestor"),
            node_properties=data.get("node_properties") or {},
            extra=cls._split(data, set(NODE_KEYS)),
        )

    @classmethod
    def from_json(cls, node_id: str | None, raw: bytes | None) -> Node:
        """Build a Node from znode bytes; raises ValueError naming the node on bad data."""
        return cls.from_dict(node_id, decode_json(raw, f"node {node_id}"))

    @classmethod
    def _coerce_state_for(cls, value: Any, what: str) -> NodeState | None:
        try:
            return cls._coerce_state(value)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None

    @property
    def label(self) -> str | None:
        """The first (usually only) label of the node."""
        return self.type[0] if self.type else None

"""The Lease record of the REST request API (`/nodepool/api-leases/<request id>`).

A lease is one API client's claim on the nodes of one ordinary node request: it is named by
that request's id and lives until `expires` (epoch seconds), which the client may push
back (renew). Its states:

    requested -> pending -> fulfilled -> returned | expired
         \\           \\-> failed | returned | expired (cancelled while waiting)

`requested`/`pending` mirror the node request's state while it waits, `fulfilled` means the
lease keeper accepted the nodes for the client (locked, `in-use`); `released` says the
nodes are given back (`used` and unlocked, or never taken): nothing more to do but remove
the record after a while. nodepool_ng's own record: upstream has no such subtree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nodepool_ng.model.record import IDENTITY, KEPT_LOCAL, LIST, STATE, STATE_TIME, Record


class LeaseState(StrEnum):
    REQUESTED = "requested"
    PENDING = "pending"
    FULFILLED = "fulfilled"
    FAILED = "failed"
    RETURNED = "returned"
    EXPIRED = "expired"


# The node request is still being served.
WAITING_LEASE_STATES = frozenset({LeaseState.REQUESTED, LeaseState.PENDING})
# Nothing will change any more but `released`.
FINISHED_LEASE_STATES = frozenset({LeaseState.FAILED, LeaseState.RETURNED, LeaseState.EXPIRED})

# `user_data` key of a node held for a lease (its value is the lease id).
NODE_USER_DATA_KEY = "api_lease"
# `requestor_data` of the API's node requests (Zuul puts its own there): a request with it
# but without a lease (its API process died in between) is deleted by a lease keeper.
API_REQUESTOR_DATA = {"nodepool_ng_api": True}


@dataclass
class Lease(Record):
    """One lease. `id` is its node request's id (the znode name), not part of the JSON."""

    STATE_TYPE = LeaseState
    CHECK_TYPES = True

    id: str | None = field(default=None, metadata=IDENTITY)
    state: LeaseState | None = field(default=LeaseState.REQUESTED, metadata=STATE)
    state_time: float | None = field(default_factory=time.time, metadata=STATE_TIME)
    requestor: str | None = None  # the API token's name, never its secret
    labels: list[str] = field(default_factory=list, metadata=LIST)
    provider: str | None = None
    lease_seconds: int = 0
    expires: float = 0.0
    nodes: list[str] = field(default_factory=list, metadata=LIST)
    failure_reason: str | None = None
    released: bool = False
    owner: str | None = None  # the launcher whose lease keeper took it last (information)
    created_time: float | None = None
    # The held lock and the lock contenders the cache saw.
    lock: Any = field(default=None, compare=False, repr=False, metadata=KEPT_LOCAL)
    lock_contenders: frozenset[str] = field(default=frozenset(), compare=False, repr=False,
                                            metadata=KEPT_LOCAL)

    @classmethod
    def from_dict(cls, lease_id: str | None, data: dict[str, Any]) -> Lease:
        """Build from JSON; a field of the wrong type raises MalformedRecord naming it."""
        return cls(id=lease_id, **cls._read(data, f"lease {lease_id}"))

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_LEASE_STATES

    def lapsed(self, now: float | None = None) -> bool:
        """Its time is up (whatever its state)."""
        return self.expires <= (time.time() if now is None else now)

    def keeps_nodes(self, now: float | None = None) -> bool:
        """Its nodes must stay: waiting or fulfilled, and not lapsed (the deleter asks)."""
        return not self.finished and not self.lapsed(now)

    def node_count(self) -> int:
        """Nodes it holds or has asked for (a finished lease: none)."""
        if self.finished:
            return 0
        return len(self.nodes) if self.state is LeaseState.FULFILLED else len(self.labels)


def lease_of_node(user_data: Any) -> str | None:
    """The lease id a node's `user_data` names, or None."""
    if isinstance(user_data, dict):
        value = user_data.get(NODE_USER_DATA_KEY)
        if isinstance(value, str) and value:
            return value
    return None

"""A lease as the API's JSON, and the state a client sees.

The state shown is the record's, except that a lease whose time is up shows `expired` at
once (its keeper writes that a moment later). A fulfilled lease lists its nodes with how to
reach them; a node that is gone meanwhile is left out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nodepool_ng.model.lease import Lease, LeaseState
from nodepool_ng.model.node import Node

NODE_FIELDS = ("id", "label", "provider", "interface_ip", "public_ipv4", "private_ipv4",
               "username", "connection_port", "host_keys")


def shown_state(lease: Lease, now: float | None = None) -> LeaseState:
    state = lease.state or LeaseState.REQUESTED
    if not lease.finished and lease.lapsed(now):
        return LeaseState.EXPIRED
    return state


def node_view(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "label": node.label,
        "provider": node.provider,
        "interface_ip": node.interface_ip,
        "public_ipv4": node.public_ipv4,
        "private_ipv4": node.private_ipv4,
        "username": node.username,
        "connection_port": node.connection_port,
        "host_keys": list(node.host_keys),
    }


def lease_view(lease: Lease, node: Callable[[str], Node | None],
               now: float | None = None) -> dict[str, Any]:
    """`node(id)`: the node record or None (gone)."""
    now = time.time() if now is None else now
    state = shown_state(lease, now)
    view: dict[str, Any] = {
        "id": lease.id,
        "state": state.value,
        "requestor": lease.requestor,
        "labels": list(lease.labels),
        "provider": lease.provider,
        "lease_seconds": lease.lease_seconds,
        "expires": lease.expires,
        "created": lease.created_time,
        "state_time": lease.state_time,
        "failure_reason": lease.failure_reason,
        "nodes": [],
    }
    if state is LeaseState.FULFILLED:
        found = (node(node_id) for node_id in lease.nodes)
        view["nodes"] = [node_view(n) for n in found if n is not None]
    return view

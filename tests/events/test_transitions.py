"""TransitionTracker: cache callbacks -> state transitions (pure, no ZooKeeper)."""

from __future__ import annotations

from nodepool_ng.events.transitions import TransitionTracker, node_payload, state_of
from nodepool_ng.model.node import Node, NodeState


def node(state: NodeState, **kw: object) -> Node:
    return Node(id="0000000001", state=state, provider="p1", pool="main", type=["small"], **kw)


def test_reports_only_state_changes_and_removal() -> None:
    tracker: TransitionTracker[Node] = TransitionTracker(state_of)
    seen = []
    for record in (
        node(NodeState.BUILDING),
        node(NodeState.BUILDING, external_id="srv"),  # same state: no event
        node(NodeState.READY, external_id="srv"),
        None,
        None,  # removed twice: one event
    ):
        t = tracker.update("0000000001", record)
        if t is not None:
            seen.append((t.previous, t.state, t.record.external_id))
    assert seen == [
        (None, "building", None),
        ("building", "ready", "srv"),
        ("ready", "deleted", "srv"),
    ]


def test_seeded_records_are_not_reported() -> None:
    tracker: TransitionTracker[Node] = TransitionTracker(state_of)
    tracker.seed([("0000000001", node(NodeState.READY))])
    assert tracker.update("0000000001", node(NodeState.READY)) is None
    t = tracker.update("0000000001", node(NodeState.IN_USE))
    assert t is not None and (t.previous, t.state) == ("ready", "in-use")


def test_removal_of_a_deleted_node_is_not_reported_twice() -> None:
    tracker: TransitionTracker[Node] = TransitionTracker(state_of)
    tracker.update("0000000001", node(NodeState.DELETED))
    assert tracker.update("0000000001", None) is None


def test_node_payload() -> None:
    n = node(NodeState.READY, external_id="srv", interface_ip="127.0.0.5", allocated_to="200-1")
    payload = node_payload(n, "building", "ready")
    assert {k: v for k, v in payload.items() if k != "timestamp"} == {
        "id": "0000000001",
        "provider": "p1",
        "pool": "main",
        "labels": ["small"],
        "state": "ready",
        "previous_state": "building",
        "external_id": "srv",
        "interface_ip": "127.0.0.5",
        "allocated_to": "200-1",
        "az": None,
    }
    assert isinstance(payload["timestamp"], float)

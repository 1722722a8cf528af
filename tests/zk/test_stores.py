"""NodeStore and RequestStore against a real ZooKeeper, with a plain kazoo client as Zuul."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.states import EventType, WatchedEvent

from nodepool_ng.errors import LockError, RecordNotFound
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import NodeRequest, RequestState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore
from tests.zk.util import wait_for

ZUUL_REQUEST_KEYS = {
    "requestor_data", "node_types", "requestor", "created_time", "provider", "state",
    "state_time", "relative_priority", "event_id", "tenant_name",
}


def zuul_submit(kazoo_client: KazooClient, priority: int, labels: list[str]) -> str:
    """Submit a request exactly as Zuul 14 does: persistent sequence znode."""
    data = {
        "requestor_data": {"build_set_uuid": "bs", "tenant_name": "t", "pipeline_name": "check",
                           "job_uuid": "ju", "job_name": "j", "span_info": None},
        "node_types": labels,
        "requestor": "zuul-system-id",
        "created_time": 1700000000.0,
        "provider": None,
        "state": "requested",
        "state_time": 1700000000.0,
        "relative_priority": 0,
        "event_id": None,
        "tenant_name": "t",
    }
    path = kazoo_client.create(f"/nodepool/requests/{priority:0>3}-",
                               json.dumps(data).encode("utf8"), makepath=True, sequence=True)
    return str(path.rsplit("/", 1)[-1])


def test_zuul_request_round_trip(zk_client: ZooKeeperClient, kazoo_client: KazooClient) -> None:
    store = RequestStore(zk_client)
    request_id = zuul_submit(kazoo_client, 200, ["small", "large"])
    assert request_id[3] == "-" and len(request_id.split("-")[1]) == 10
    request = store.get(request_id)
    assert request.node_types == ["small", "large"] and request.reuse is True

    # Zuul adds a key we do not know; a launcher rewrite must keep it.
    raw, _ = kazoo_client.get(f"/nodepool/requests/{request_id}")
    data = json.loads(raw)
    data["zuul_future"] = {"a": 1}
    kazoo_client.set(f"/nodepool/requests/{request_id}", json.dumps(data).encode())

    request = store.get(request_id)
    store.lock(request)
    store.refresh(request)
    request.declined_by.append("pool-1")
    request.nodes = ["0000000001", "0000000002"]
    request.set_state(RequestState.FULFILLED)
    store.store(request)
    store.unlock(request)

    back = json.loads(kazoo_client.get(f"/nodepool/requests/{request_id}")[0])
    assert set(back) >= ZUUL_REQUEST_KEYS
    assert back["requestor_data"] == data["requestor_data"]
    assert back["zuul_future"] == {"a": 1}
    assert back["state"] == "fulfilled" and back["nodes"] == ["0000000001", "0000000002"]
    assert "lock" not in back and "id" not in back


def test_request_submit_and_order(zk_client: ZooKeeperClient, kazoo_client: KazooClient) -> None:
    store = RequestStore(zk_client)
    low = store.submit(NodeRequest(node_types=["a"]), priority=300)
    high = store.submit(NodeRequest(node_types=["a"]), priority=100)
    high_later_relative = store.submit(NodeRequest(node_types=["a"], relative_priority=5),
                                       priority=100)
    high_later = store.submit(NodeRequest(node_types=["a"]), priority=100)
    min_ready = store.submit(NodeRequest(node_types=["a"]), priority="900", ephemeral=True)
    ordered = [r.id for r in store.read_all()]
    assert ordered == [high, high_later, high_later_relative, low, min_ready]
    stat = kazoo_client.exists(f"/nodepool/requests/{min_ready}")
    assert stat is not None and stat.ephemeralOwner != 0
    assert kazoo_client.exists(f"/nodepool/requests/{low}").ephemeralOwner == 0
    event_id = json.loads(kazoo_client.get(f"/nodepool/requests/{low}")[0])["event_id"]
    assert isinstance(event_id, str) and len(event_id) == 32


def test_request_lock_contention_and_zuul_skip(
    zk_client: ZooKeeperClient,
    make_client: Callable[..., ZooKeeperClient],
    kazoo_client: KazooClient,
) -> None:
    store = RequestStore(zk_client)
    other = RequestStore(make_client())
    request_id = store.submit(NodeRequest(node_types=["a"]))
    mine = store.get(request_id)
    theirs = other.get(request_id)
    store.lock(mine)
    with pytest.raises(LockError):
        other.lock(theirs)
    # Zuul's reviseRequest: a non-blocking kazoo Lock at the same path must fail too.
    zuul_lock = kazoo_client.Lock(f"/nodepool/requests-lock/{request_id}")
    assert zuul_lock.acquire(blocking=False) is False
    assert other.is_locked(request_id)
    store.unlock(mine)
    other.lock(theirs)
    other.unlock(theirs)
    # A release is sent, not waited for: another session sees it a moment later.
    wait_for(lambda: not other.is_locked(request_id), what="lock released")
    store.delete(request_id)
    assert not kazoo_client.exists(f"/nodepool/requests/{request_id}")
    assert not kazoo_client.exists(f"/nodepool/requests-lock/{request_id}")
    with pytest.raises(RecordNotFound):
        store.get(request_id)


def test_node_create_store_lock_delete(
    zk_client: ZooKeeperClient,
    make_client: Callable[..., ZooKeeperClient],
    kazoo_client: KazooClient,
) -> None:
    store = NodeStore(zk_client)
    node = Node(state=NodeState.INIT, provider="p", pool="main", type=["small"])
    node_id = store.create(node)
    assert len(node_id) == 10 and node_id.isdigit()
    data = json.loads(kazoo_client.get(f"/nodepool/nodes/{node_id}")[0])
    assert data["state"] == "init" and data["created_time"] == data["state_time"]
    assert "id" not in data and "lock" not in data

    other = NodeStore(make_client())
    store.lock(node)
    theirs = other.get(node_id)
    with pytest.raises(LockError):
        other.lock(theirs)
    # Zuul locks nodes with a 30 s timeout; a short blocking wait must time out cleanly.
    with pytest.raises(LockError):
        other.lock(theirs, blocking=True, timeout=0.3)
    assert len(other.lock_contenders(node_id)) == 1

    node.set_state(NodeState.READY)
    node.interface_ip = "127.0.0.5"
    store.store(node)
    assert other.get(node_id).state is NodeState.READY

    # Zuul rewrites the whole node, adding an `id`; we keep it.
    zuul_view = json.loads(kazoo_client.get(f"/nodepool/nodes/{node_id}")[0])
    zuul_view.update(id=node_id, state="in-use")
    kazoo_client.set(f"/nodepool/nodes/{node_id}", json.dumps(zuul_view).encode())
    store.refresh(node)
    assert node.state is NodeState.IN_USE and node.lock is not None
    store.store(node)
    assert json.loads(kazoo_client.get(f"/nodepool/nodes/{node_id}")[0])["id"] == node_id

    assert other.force_unlock(node_id)
    other.lock(theirs)
    other.delete(theirs)
    assert not kazoo_client.exists(f"/nodepool/nodes/{node_id}")
    assert theirs.state is NodeState.DELETED
    store.unlock(node)  # our lock znode is already gone: must not raise
    with pytest.raises(RecordNotFound):
        store.get(node_id)
    store.delete(node_id)  # deleting a missing node is fine


def test_node_delete_writes_deleted_first(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    store = NodeStore(zk_client)
    node_id = store.create(Node(state=NodeState.USED, type=["a"]))
    events: list[WatchedEvent] = []
    kazoo_client.get(f"/nodepool/nodes/{node_id}", watch=events.append)
    store.delete(node_id)
    assert store.ids() == []
    wait_for(lambda: events, what="data watch")
    # A one-shot watch reports the first change: the `deleted` write, not the removal.
    assert events[0].type == EventType.CHANGED


def test_request_lock_dir_cleanup(zk_client: ZooKeeperClient, kazoo_client: KazooClient) -> None:
    store = RequestStore(zk_client)
    live = store.submit(NodeRequest(node_types=["a"]))
    request = store.get(live)
    store.lock(request)
    store.unlock(request)
    kazoo_client.ensure_path("/nodepool/requests-lock/100-0000000999")  # request long gone
    held = kazoo_client.Lock("/nodepool/requests-lock/100-0000000998")
    assert held.acquire(blocking=False)  # gone request, but someone still holds its lock
    assert store.cleanup_lock_dirs(min_age=3600) == 0  # too young
    assert store.cleanup_lock_dirs(min_age=0) == 1
    remaining = kazoo_client.get_children("/nodepool/requests-lock")
    assert sorted(remaining) == sorted([live, "100-0000000998"])
    held.release()


def test_young_lock_dirs_are_stated_once_not_every_pass(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lock dirs of finished requests wait 8 h for their age: a cleanup pass must not ask
    ZooKeeper about each of them every time (thousands of calls a minute at fleet scale)."""
    store = RequestStore(zk_client)
    for seq in range(20):
        kazoo_client.ensure_path(f"/nodepool/requests-lock/100-{seq:010d}")
    stats: list[str] = []
    real_exists = zk_client.exists

    def counting_exists(path: str, *args: Any, **kwargs: Any) -> Any:
        stats.append(path)
        return real_exists(path, *args, **kwargs)

    monkeypatch.setattr(zk_client, "exists", counting_exists)
    assert store.cleanup_lock_dirs(min_age=3600) == 0
    assert len(stats) == 20  # each seen once
    stats.clear()
    assert store.cleanup_lock_dirs(min_age=3600) == 0
    assert stats == []  # still too young by what was seen: nothing asked
    kazoo_client.ensure_path("/nodepool/requests-lock/100-0000000777")
    assert store.cleanup_lock_dirs(min_age=3600) == 0
    assert stats == ["/nodepool/requests-lock/100-0000000777"]  # only the new one
    # Old enough by then: stat'ed again (the age is checked on a fresh stat) and removed.
    assert store.cleanup_lock_dirs(min_age=0) == 21
    assert kazoo_client.get_children("/nodepool/requests-lock") == []

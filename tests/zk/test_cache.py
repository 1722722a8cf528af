"""Watch-driven caches: events for create/update/delete, lock contenders, reconnect."""

from __future__ import annotations

import json
import threading

from kazoo.client import KazooClient

from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import NodeRequest
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore
from tests.zk.util import expire_session, wait_for


def test_node_cache_sees_create_update_delete_and_locks(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    store = NodeStore(zk_client)
    preexisting = store.create(Node(state=NodeState.READY, type=["a"]))
    events: list[tuple[str, str | None]] = []
    changed = threading.Event()

    def listener(node_id: str, node: Node | None) -> None:
        events.append((node_id, node.state if node else None))
        changed.set()

    store.add_listener(listener)
    assert store.start_cache(timeout=10)
    try:
        assert [n.id for n in store.cached_nodes()] == [preexisting]

        # A node created by someone else (plain kazoo) shows up.
        path = kazoo_client.create("/nodepool/nodes/", json.dumps(
            {"state": "building", "type": ["b"]}).encode(), sequence=True)
        other_id = path.rsplit("/", 1)[-1]
        wait_for(lambda: store.cached_node(other_id) is not None, what="created node")

        node = store.get(preexisting)
        node.set_state(NodeState.IN_USE)
        store.store(node)
        wait_for(lambda: (cached := store.cached_node(preexisting)) is not None
                 and cached.state is NodeState.IN_USE, what="updated node")

        store.lock(node)
        wait_for(lambda: store.cache.contenders(preexisting), what="lock contender")
        cached = store.cached_node(preexisting)
        assert cached is not None and cached.lock_contenders
        store.unlock(node)
        wait_for(lambda: not store.cache.contenders(preexisting), what="lock released")

        store.delete(other_id)
        wait_for(lambda: store.cached_node(other_id) is None, what="deleted node")
        assert (other_id, None) in events
        assert (preexisting, NodeState.IN_USE) in events
    finally:
        store.stop_cache()


def test_request_cache_sorted_and_survives_session_expiry(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    store = RequestStore(zk_client)
    assert store.start_cache(timeout=10)
    try:
        low = store.submit(NodeRequest(node_types=["a"]), priority=300)
        high = store.submit(NodeRequest(node_types=["a"]), priority=100)
        ephemeral = store.submit(NodeRequest(node_types=["a"]), priority=900, ephemeral=True)
        wait_for(lambda: len(store.cached_requests()) == 3, what="three requests")
        assert [r.id for r in store.cached_requests()] == [high, low, ephemeral]

        expire_session(zk_client)
        # Our ephemeral request died with the old session; the cache notices after resync.
        wait_for(lambda: store.cached_request(ephemeral) is None, what="ephemeral gone")
        # And keeps following changes on the new session.
        kazoo_client.delete(f"/nodepool/requests/{low}")
        wait_for(lambda: [r.id for r in store.cached_requests()] == [high], what="resync")
        newer = store.submit(NodeRequest(node_types=["b"]), priority=200)
        wait_for(lambda: store.cached_request(newer) is not None, what="new after expiry")
    finally:
        store.stop_cache()


def test_a_lock_of_a_record_not_in_the_cache_is_not_reported_as_a_gone_record(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    """Listeners read `(id, None)` as "the record is gone" (the pool ledger then stops
    counting a node it created): a lock on a znode that holds no record must not say so."""
    store = NodeStore(zk_client)
    events: list[tuple[str, Node | None]] = []
    store.add_listener(lambda node_id, node: events.append((node_id, node)))
    assert store.start_cache(timeout=10)
    try:
        # Not a record (unreadable); then a lock contender under it.
        kazoo_client.create("/nodepool/nodes/0000000042", b"not json", makepath=True)
        kazoo_client.create("/nodepool/nodes/0000000042/lock/x", b"", makepath=True)
        marker = store.create(Node(state=NodeState.READY, type=["a"]))
        wait_for(lambda: any(nid == marker for nid, _ in events), what="marker node")
        assert [e for e in events if e[0] == "0000000042"] == []
    finally:
        store.stop_cache()


def test_request_order_follows_arrivals_reprioritisations_and_removals(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    """The cached order is kept from events (not re-sorted per read): it must still equal
    upstream's order (priority, relative_priority, sequence) after every kind of change."""
    store = RequestStore(zk_client)
    assert store.start_cache(timeout=10)

    def in_order() -> bool:
        direct = sorted(store.read_all(), key=lambda r: r.sort_key)
        return [r.id for r in store.cached_requests()] == [r.id for r in direct] and [
            r.id for r in store.cached_open_requests()] == [
            r.id for r in direct if r.state.value == "requested"]

    try:
        ids = [store.submit(NodeRequest(node_types=["a"], relative_priority=i % 3), priority=p)
               for i, p in enumerate((300, 100, 200, 100, 300, 200))]
        wait_for(lambda: len(store.cached_requests()) == 6 and in_order(), what="six in order")
        # A state change keeps the order and is seen in the records handed out.
        first = store.cached_requests()[0]
        path = f"/nodepool/requests/{first.id}"
        data = json.loads(kazoo_client.get(path)[0])
        kazoo_client.set(path, json.dumps({**data, "state": "pending"}).encode())
        wait_for(lambda: store.cached_requests()[0].state.value == "pending", what="pending")
        assert in_order() and first.id not in [r.id for r in store.cached_open_requests()]
        # Zuul lowers a waiting request's relative priority: it moves.
        last = store.cached_requests()[-1]
        path = f"/nodepool/requests/{last.id}"
        data = json.loads(kazoo_client.get(path)[0])
        kazoo_client.set(path, json.dumps({**data, "relative_priority": -5}).encode())
        wait_for(in_order, what="re-prioritised")
        assert [r.id for r in store.cached_requests()].index(last.id) < 5
        kazoo_client.delete(f"/nodepool/requests/{ids[1]}")
        newer = store.submit(NodeRequest(node_types=["b"]), priority=100)
        wait_for(lambda: store.cached_request(newer) is not None and in_order(), what="moved")
        assert ids[1] not in [r.id for r in store.cached_requests()]
    finally:
        store.stop_cache()

"""The tree cache takes our own writes from their answers, never ending up stale."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient

from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.zk import cache as cache_module
from nodepool_ng.zk.cache import TreeCache
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from tests.zk.util import wait_for


@pytest.fixture
def store(zk_client: ZooKeeperClient) -> Iterator[NodeStore]:
    nodes = NodeStore(zk_client)
    assert nodes.start_cache(timeout=10)
    try:
        yield nodes
    finally:
        nodes.stop_cache()


def count_reads(client: ZooKeeperClient) -> list[str]:
    """Record every GetData the client sends from now on."""
    reads: list[str] = []
    original = client.kazoo.get_async

    def get_async(path: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(path)
        return original(path, *args, **kwargs)

    client.kazoo.get_async = get_async  # type: ignore[method-assign]
    return reads


def cached_state(store: NodeStore, node_id: str) -> str | None:
    node = store.cached_node(node_id)
    return None if node is None else str(node.state)


def new_node(store: NodeStore) -> Node:
    node = Node(state=NodeState.BUILDING, type=["a"])
    node_id = store.create(node)
    wait_for(lambda: store.cached_node(node_id) is not None, what="node cached")
    return node


def announced_write(store: NodeStore) -> tuple[Node, str, TreeCache]:
    """A fresh node whose write by us is announced to the cache (the answer still to come)."""
    node = new_node(store)
    path = f"/nodepool/nodes/{node.id}"
    store.cache.tree.expect_write(path)
    return node, path, store.cache.tree


def their_write(kazoo_client: KazooClient, node: Node, state: str) -> None:
    """Someone else (Zuul, another launcher) sets the node's state."""
    path = f"/nodepool/nodes/{node.id}"
    data = json.loads(kazoo_client.get(path)[0])
    data["state"] = state
    kazoo_client.set(path, json.dumps(data).encode())


def test_own_write_needs_no_read(store: NodeStore, zk_client: ZooKeeperClient) -> None:
    node = new_node(store)
    path = f"/nodepool/nodes/{node.id}"
    reads = count_reads(zk_client)
    for state in (NodeState.READY, NodeState.IN_USE, NodeState.USED):
        node.state = state
        store.store(node)
        wait_for(lambda s=state: cached_state(store, node.id or "") == str(s),  # type: ignore[misc]
                 what=f"cache shows {state}")
    assert path not in reads
    assert store.cache.tree.reads_saved >= 3
    assert store.cached_node(node.id or "").zk_version == node.zk_version  # type: ignore[union-attr]


def test_someone_elses_write_after_ours_is_read(
    store: NodeStore, zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    """Their change lands between our write and the moment the cache hears our answer:
    the notifications outnumber the versions we account for, so the cache reads."""
    node, path, tree = announced_write(store)
    node.state = NodeState.READY
    stat = zk_client.set(path, node.to_json())
    their_write(kazoo_client, node, "in-use")
    wait_for(lambda: len(tree._parked.get(path, [])) == 2, what="both changes parked")
    tree.wrote(path, node.to_json(), stat)
    wait_for(lambda: cached_state(store, node.id or "") == "in-use", what="their change")
    assert not tree._parked and not tree._expecting


def test_someone_elses_write_before_ours_is_covered(
    store: NodeStore, zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    """Their change, then ours: two notifications, two versions; ours is the newest."""
    node, path, tree = announced_write(store)
    their_write(kazoo_client, node, "in-use")
    wait_for(lambda: len(tree._parked.get(path, [])) == 1, what="their change parked")
    node.state = NodeState.USED
    stat = zk_client.set(path, node.to_json())
    tree.wrote(path, node.to_json(), stat)
    wait_for(lambda: cached_state(store, node.id or "") == "used", what="our change")
    assert kazoo_client.get(path)[1].version == stat.version


def test_failed_write_reads_the_path(
    store: NodeStore, zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    node, path, tree = announced_write(store)
    their_write(kazoo_client, node, "hold")
    wait_for(lambda: path in tree._parked, what="their change parked")
    tree.wrote(path, None, None)  # our write failed
    wait_for(lambda: cached_state(store, node.id or "") == "hold", what="their change read")


def test_unanswered_write_is_read_after_the_limit(
    store: NodeStore, kazoo_client: KazooClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "PARKED_LIMIT", 0.2)
    node, _, _ = announced_write(store)  # and never an answer (a bug)
    their_write(kazoo_client, node, "hold")
    wait_for(lambda: cached_state(store, node.id or "") == "hold", what="read after limit")


def test_cache_equals_zookeeper_when_we_and_others_write_the_same_nodes(
    store: NodeStore, zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    nodes = [new_node(store) for _ in range(5)]
    states = ["ready", "in-use", "used", "hold", "deleting"]

    def ours(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(80):
            node = rnd.choice(nodes)
            mine = NodeStore(zk_client).get(node.id or "")
            mine.state = NodeState(rnd.choice(states))
            store.store(mine)

    def theirs(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(80):
            node = rnd.choice(nodes)
            path = f"/nodepool/nodes/{node.id}"
            data = json.loads(kazoo_client.get(path)[0])
            data["state"] = rnd.choice(states)
            kazoo_client.set(path, json.dumps(data).encode())

    threads = [threading.Thread(target=ours, args=(1,)), threading.Thread(target=ours, args=(2,)),
               threading.Thread(target=theirs, args=(3,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    def equal() -> bool:
        return all(
            cached_state(store, n.id or "")
            == json.loads(kazoo_client.get(f"/nodepool/nodes/{n.id}")[0])["state"]
            for n in nodes)

    wait_for(equal, what="cache equal to ZooKeeper")
    assert not store.cache.tree._parked


def test_our_write_answered_after_their_delete_does_not_bring_the_node_back(
    store: NodeStore, zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    node, path, tree = announced_write(store)
    node.state = NodeState.READY
    stat = zk_client.set(path, node.to_json())
    kazoo_client.delete(path, recursive=True)
    wait_for(lambda: store.cached_node(node.id or "") is None, what="deletion seen")
    tree.wrote(path, node.to_json(), stat)  # the answer reaches the cache only now
    wait_for(lambda: not tree._expecting and not tree._own, what="answer settled")
    assert store.cached_node(node.id or "") is None


def test_our_write_then_delete_seen_late_leaves_no_node(
    store: NodeStore, kazoo_client: KazooClient
) -> None:
    """The cache thread is busy while we write a node and delete it (upstream's two-step
    delete: state `deleted`, then the znode): it takes our write's answer after the
    deletion's notification has queued, and must still drop the node."""
    node = new_node(store)
    busy, go_on = threading.Event(), threading.Event()
    blocker_path = "/nodepool/nodes/blocker"

    def slow_listener(event: Any) -> None:
        if event.path == blocker_path:
            busy.set()
            go_on.wait(10)

    store.cache.tree.add_listener(slow_listener)
    kazoo_client.create(blocker_path, b"{}")
    assert busy.wait(10)
    try:
        store.delete(node.id or "")  # writes state `deleted`, then removes the znode
    finally:
        go_on.set()
    wait_for(lambda: not store.cache.tree._expecting and not store.cache.tree._parked,
             what="cache caught up")
    wait_for(lambda: store.cache.tree.get_data(blocker_path) is not None, what="blocker")
    assert store.cached_node(node.id or "") is None

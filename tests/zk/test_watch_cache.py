"""The persistent-watch tree cache: equal to ZooKeeper after churn and after a reconnect."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.recipe.lock import Lock

from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.zk.util import wait_for


def truth(kz: KazooClient) -> dict[str, tuple[str, frozenset[str]]]:
    """node id -> (state, lock contenders), read directly."""
    out = {}
    for node_id in kz.get_children("/nodepool/nodes"):
        try:
            data, _ = kz.get(f"/nodepool/nodes/{node_id}")
        except NoNodeError:
            continue
        try:
            contenders = frozenset(kz.get_children(f"/nodepool/nodes/{node_id}/lock"))
        except NoNodeError:
            contenders = frozenset()
        out[node_id] = (json.loads(data)["state"], contenders)
    return out


def cached(store: NodeStore) -> dict[str, tuple[str, frozenset[str]]]:
    return {n.id: (str(n.state), store.cache.contenders(n.id)) for n in store.cached_nodes()
            if n.id is not None}


def test_cache_equals_zookeeper_after_concurrent_churn(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    """Four writers create, update, lock and delete nodes as fast as they can; afterwards
    every record, state and lock contender in the cache is what ZooKeeper holds."""
    store = NodeStore(zk_client)
    assert store.start_cache(timeout=10)
    kazoo_client.ensure_path("/nodepool/nodes")
    try:
        def writer(seed: int) -> None:
            rnd = random.Random(seed)
            mine: list[str] = []
            held: list[Lock] = []
            for _ in range(120):
                op = rnd.random()
                if op < 0.3 or not mine:
                    path = kazoo_client.create("/nodepool/nodes/", json.dumps(
                        {"state": "building"}).encode(), sequence=True)
                    mine.append(path)
                elif op < 0.6:
                    state = rnd.choice(["ready", "in-use", "used", "deleting"])
                    kazoo_client.set(rnd.choice(mine), json.dumps({"state": state}).encode())
                elif op < 0.8:
                    lock = Lock(kazoo_client, rnd.choice(mine) + "/lock")
                    if lock.acquire(blocking=False):
                        held.append(lock)
                    if held and rnd.random() < 0.5:
                        held.pop(rnd.randrange(len(held))).release()
                else:
                    victim = mine.pop(rnd.randrange(len(mine)))
                    for lock in [lk for lk in held if lk.path.startswith(victim + "/")]:
                        lock.release()
                        held.remove(lock)
                    try:
                        kazoo_client.delete(victim, recursive=True)
                    except (NoNodeError, NodeExistsError):
                        pass
            for lock in held[: len(held) // 2]:
                lock.release()

        threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected = truth(kazoo_client)
        assert expected, "the churn left some nodes to compare"
        wait_for(lambda: cached(store) == expected, what="cache equal to ZooKeeper")
    finally:
        store.stop_cache()


@pytest.fixture
def own_server() -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_watch_comes_back_after_reconnect(own_server: ZooKeeperServer) -> None:
    """The server forgets persistent watches with the connection: after a server restart
    (same session) the cache re-adds its watch, catches up, and follows new changes."""
    client = ZooKeeperClient(own_server.hosts, session_timeout=20.0, operation_timeout=2.0,
                             max_retry_delay=0.2)
    client.start(timeout=10)
    other = KazooClient(hosts=own_server.hosts)
    other.start(timeout=10)
    store = NodeStore(client)
    try:
        assert store.start_cache(timeout=10)
        first = other.create("/nodepool/nodes/", b'{"state": "ready"}', sequence=True)
        first_id = first.rsplit("/", 1)[-1]
        wait_for(lambda: store.cached_node(first_id) is not None, what="first node")

        other.stop()
        assert own_server.process is not None
        own_server.process.terminate()  # keeps the data dir: the session survives
        own_server.process.wait(10)
        wait_for(lambda: not client.is_connected, what="disconnected")
        own_server.start()
        wait_for(lambda: client.is_connected, timeout=30, what="reconnected")
        # (Normally the same session: the restarted server restores it from its log.)

        other = KazooClient(hosts=own_server.hosts)
        other.start(timeout=10)
        other.set(first, b'{"state": "in-use"}')
        second = other.create("/nodepool/nodes/", b'{"state": "building"}', sequence=True)
        second_id = second.rsplit("/", 1)[-1]
        wait_for(lambda: store.cached_node(second_id) is not None, what="node after reconnect")
        wait_for(lambda: str(store.cached_node(first_id).state) == "in-use",  # type: ignore[union-attr]
                 what="update after reconnect")
        other.delete(first)
        wait_for(lambda: store.cached_node(first_id) is None, what="delete after reconnect")
    finally:
        store.stop_cache()
        other.stop()
        other.close()
        client.stop()


def test_one_shot_watch_under_a_watched_root_still_fires(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    """The router hands notifications on to kazoo's own one-shot watches too."""
    store = NodeStore(zk_client)
    assert store.start_cache(timeout=10)
    try:
        path = kazoo_client.create("/nodepool/nodes/", b'{"state": "ready"}', sequence=True)
        seen = threading.Event()
        zk_client.kazoo.get(path, watch=lambda event: seen.set())
        kazoo_client.set(path, b'{"state": "used"}')
        assert seen.wait(10)
        node_id = path.rsplit("/", 1)[-1]
        wait_for(lambda: str(store.cached_node(node_id).state) == "used",  # type: ignore[union-attr]
                 what="cache saw the same change")
    finally:
        store.stop_cache()

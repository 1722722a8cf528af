"""Our lock protocol against kazoo's `Lock` recipe (what Zuul and upstream Nodepool use).

The locks take shortcuts (lock dir and contender in one transaction, release not waited for,
node delete with its lock in one transaction); each must still exclude a kazoo Lock and be
excluded by it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

from nodepool_ng.errors import LockError
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import NodeRequest
from nodepool_ng.zk import locks
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore
from tests.zk.util import wait_for


def _held_by_kazoo(kazoo_client: KazooClient, path: str) -> Lock:
    """A kazoo Lock (as Zuul takes it) held at `path`."""
    theirs = kazoo_client.Lock(path, identifier="zuul")
    assert theirs.acquire(blocking=False)
    return theirs


def test_first_lock_creates_dir_and_excludes_kazoo_lock(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    path = "/locks-test/first"
    assert not kazoo_client.exists(path)
    lock = locks.make_lock(zk_client, path, identifier="launcher-1")
    locks.acquire(zk_client, lock, new_dir=True)
    assert lock.is_acquired and lock.contender_path is not None
    (name,) = kazoo_client.get_children(path)
    assert "__lock__" in name
    assert kazoo_client.get(f"{path}/{name}")[0] == b"launcher-1"
    assert kazoo_client.exists(f"{path}/{name}").ephemeralOwner == zk_client.session_id

    theirs = kazoo_client.Lock(path)
    assert theirs.acquire(blocking=False) is False
    locks.release(lock)
    assert not lock.is_acquired
    # The delete was sent, not waited for; kazoo's blocking acquire sees it.
    assert theirs.acquire(timeout=5)
    theirs.release()


def test_new_dir_guess_wrong_falls_back_to_contending(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    path = "/locks-test/held"
    _held_by_kazoo(kazoo_client, path)
    lock = locks.make_lock(zk_client, path)
    with pytest.raises(LockError, match="held elsewhere"):
        locks.acquire(zk_client, lock, new_dir=True)
    assert not lock.is_acquired
    # The failed attempt left no contender of ours behind.
    wait_for(lambda: len(kazoo_client.get_children(path)) == 1, what="our contender removed")


def test_blocking_acquire_waits_for_kazoo_holder(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    path = "/locks-test/wait"
    theirs = _held_by_kazoo(kazoo_client, path)
    lock = locks.make_lock(zk_client, path)
    errors: list[BaseException] = []

    def take() -> None:
        try:
            locks.acquire(zk_client, lock, blocking=True, timeout=10)
        except BaseException as e:  # reported below
            errors.append(e)

    waiter = threading.Thread(target=take)
    waiter.start()
    wait_for(lambda: len(kazoo_client.get_children(path)) == 2, what="our contender queued")
    assert not lock.is_acquired
    theirs.release()
    waiter.join(10)
    assert not errors and lock.is_acquired
    locks.release(lock)


def test_blocking_acquire_times_out_without_leaving_a_contender(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    path = "/locks-test/timeout"
    theirs = _held_by_kazoo(kazoo_client, path)
    lock = locks.make_lock(zk_client, path)
    with pytest.raises(LockError, match="timed out"):
        locks.acquire(zk_client, lock, blocking=True, timeout=0.3)
    wait_for(lambda: len(kazoo_client.get_children(path)) == 1, what="our contender removed")
    theirs.release()


def test_kazoo_read_lock_excludes_us(zk_client: ZooKeeperClient, kazoo_client: KazooClient) -> None:
    path = "/locks-test/read"
    reader = kazoo_client.ReadLock(path)
    assert reader.acquire(blocking=False)
    with pytest.raises(LockError):
        locks.acquire(zk_client, locks.make_lock(zk_client, path))
    reader.release()


def test_node_lock_and_store_is_one_write_then_zuul_cannot_lock(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    store = NodeStore(zk_client)
    node = Node(state=NodeState.INIT, provider="p", pool="main", type=["a"])
    node_id = store.create(node)
    node.state = NodeState.BUILDING
    store.lock_and_store(node)
    assert node.lock is not None and node.lock.is_acquired
    data, stat = kazoo_client.get(f"/nodepool/nodes/{node_id}")
    assert json.loads(data)["state"] == "building" and stat.version == node.zk_version == 1
    zuul_lock = kazoo_client.Lock(f"/nodepool/nodes/{node_id}/lock")
    assert zuul_lock.acquire(blocking=False) is False
    # Our cached view of the version stays right: a versioned write succeeds.
    node.state = NodeState.READY
    store.store(node)
    store.unlock(node)
    assert zuul_lock.acquire(timeout=5)
    zuul_lock.release()


def test_node_lock_of_a_deleted_node_fails(
    zk_client: ZooKeeperClient, make_client: Callable[..., ZooKeeperClient]
) -> None:
    store = NodeStore(zk_client)
    node = Node(state=NodeState.READY, type=["a"])
    node_id = store.create(node)
    stale = NodeStore(make_client()).get(node_id)
    store.delete(node_id)
    with pytest.raises(LockError):
        NodeStore(make_client()).lock(stale)
    # No lock dir was made for the missing node.
    assert store.ids() == []


def test_locked_delete_is_one_transaction_unless_someone_waits(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    store = NodeStore(zk_client)
    quiet = Node(state=NodeState.USED, type=["a"])
    quiet_id = store.create(quiet)
    store.lock(quiet)
    seen: list[bytes] = []
    kazoo_client.get(f"/nodepool/nodes/{quiet_id}", watch=lambda e: seen.append(e.type))
    store.delete(quiet)
    assert not kazoo_client.exists(f"/nodepool/nodes/{quiet_id}")
    assert quiet.state is NodeState.DELETED and not quiet.lock.is_acquired  # type: ignore[union-attr]
    wait_for(lambda: seen, what="watch")
    assert seen == ["DELETED"]  # gone at once, no intermediate write

    # Someone queued on the lock: upstream's two steps, so the waiter wakes to `deleted`.
    busy = Node(state=NodeState.USED, type=["a"])
    busy_id = store.create(busy)
    store.lock(busy)
    waiter = kazoo_client.Lock(f"/nodepool/nodes/{busy_id}/lock")
    outcome: list[object] = []

    def wait_for_lock() -> None:
        try:
            outcome.append(waiter.acquire(timeout=10))
        except Exception as e:  # kazoo's recipe raises NoNodeError once the node is gone
            outcome.append(e)

    thread = threading.Thread(target=wait_for_lock)
    thread.start()
    wait_for(lambda: len(kazoo_client.get_children(f"/nodepool/nodes/{busy_id}/lock")) == 2,
             what="a waiter")
    store.delete(busy)
    thread.join(10)
    assert outcome and not kazoo_client.exists(f"/nodepool/nodes/{busy_id}")


def test_request_lock_first_time_and_again(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    store = RequestStore(zk_client)
    request_id = store.submit(NodeRequest(node_types=["a"]))
    request = store.get(request_id)
    store.lock(request, new_dir=True)
    zuul_lock = kazoo_client.Lock(f"/nodepool/requests-lock/{request_id}")
    assert zuul_lock.acquire(blocking=False) is False
    store.unlock(request)
    # The dir exists now; a wrong `new_dir` guess still locks.
    store.lock(request, new_dir=True)
    assert zuul_lock.acquire(blocking=False) is False
    store.unlock(request)
    assert zuul_lock.acquire(timeout=5)
    zuul_lock.release()

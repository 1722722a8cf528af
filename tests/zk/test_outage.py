"""No store call blocks while ZooKeeper is unreachable; the client recovers afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.exceptions import ConnectionLoss

from nodepool_ng.errors import LockError, ZooKeeperError
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import NodeRequest
from nodepool_ng.zk.client import ConnectionState, ZooKeeperClient
from nodepool_ng.zk.components import ComponentRegistry
from nodepool_ng.zk.images import BuildStore
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore
from tests.fixtures.ports import free_port
from tests.fixtures.zookeeper import ZooKeeperServer
from tests.zk.util import wait_for


@pytest.fixture
def own_server() -> Iterator[ZooKeeperServer]:
    """A private server this test may stop and restart."""
    server = ZooKeeperServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_calls_fail_fast_while_server_down_then_recover(own_server: ZooKeeperServer) -> None:
    client = ZooKeeperClient(own_server.hosts, session_timeout=2.0,
                             operation_timeout=0.5, max_retry_delay=0.2)
    states: list[ConnectionState] = []
    client.add_state_listener(states.append)
    client.start(timeout=10)
    try:
        nodes, requests = NodeStore(client), RequestStore(client)
        node = Node(state=NodeState.READY, type=["a"])
        nodes.create(node)
        assert not client.suspended.is_set()

        # Kill the process but keep its data dir, like a real outage.
        assert own_server.process is not None
        own_server.process.terminate()
        own_server.process.wait(10)
        wait_for(client.suspended.is_set, what="suspended")
        assert not client.is_connected
        with pytest.raises(ZooKeeperError, match="not connected"):
            nodes.get(node.id or "")
        with pytest.raises(ZooKeeperError):
            requests.submit(NodeRequest(node_types=["a"]))
        with pytest.raises(LockError):
            nodes.lock(node)
        with pytest.raises(ZooKeeperError):
            BuildStore(client).builds("img")
        with pytest.raises(ZooKeeperError):
            ComponentRegistry(client).pools()

        own_server.start()  # same port, same data
        assert client.wait_connected(15)
        wait_for(lambda: ConnectionState.CONNECTED in states[1:], what="reconnect event")
        assert not client.suspended.is_set()
        assert nodes.ids() == [node.id]
        assert nodes.get(node.id or "").state is NodeState.READY
    finally:
        client.stop()


def test_connect_to_closed_port_raises() -> None:
    client = ZooKeeperClient(f"127.0.0.1:{free_port()}", operation_timeout=0.5)
    with pytest.raises(ZooKeeperError, match="cannot connect"):
        client.start(timeout=1)


def test_partial_tls_config_is_rejected() -> None:
    with pytest.raises(ZooKeeperError, match="zookeeper-tls"):
        ZooKeeperClient("127.0.0.1:2281", tls_cert="/c.pem")


@pytest.fixture
def two_sessions(
    own_server: ZooKeeperServer,
) -> Iterator[tuple[ZooKeeperClient, ZooKeeperClient]]:
    """Our client and another session, to see our locks from outside."""
    client = ZooKeeperClient(own_server.hosts, session_timeout=20.0, operation_timeout=2.0)
    other = ZooKeeperClient(own_server.hosts, session_timeout=20.0, operation_timeout=2.0)
    client.start(timeout=10)
    other.start(timeout=10)
    try:
        yield client, other
    finally:
        client.stop()
        other.stop()


def test_a_lost_contender_delete_is_sent_again(
    two_sessions: tuple[ZooKeeperClient, ZooKeeperClient],
) -> None:
    """A release whose delete is lost to ConnectionLoss (the session lives on, and so would
    the contender: later it holds the lock and nobody can lock the record again) is sent
    again. The loss is injected at kazoo's call: timing a real drop to hit one request in
    flight is not deterministic."""
    client, other = two_sessions
    nodes = NodeStore(client)
    node = Node(state=NodeState.READY, type=["a"])
    nodes.create(node)
    nodes.lock(node)
    real_delete = client.kazoo.delete_async
    lost: list[str] = []

    def lose_first(path: str, *args: Any, **kwargs: Any) -> Any:
        if "__lock__" in path and not lost:
            lost.append(path)
            raise ConnectionLoss()
        return real_delete(path, *args, **kwargs)

    client.kazoo.delete_async = lose_first  # type: ignore[method-assign]
    nodes.unlock(node)
    assert lost
    theirs = Node(id=node.id)
    wait_for(lambda: _try_lock(NodeStore(other), theirs), timeout=10,
             what="the lock free for another session")


def test_a_contender_whose_create_answer_was_lost_is_removed(
    two_sessions: tuple[ZooKeeperClient, ZooKeeperClient],
) -> None:
    """A lock attempt whose contender create was applied but answered with ConnectionLoss
    (the answer lost with the connection): the attempt fails, and the contender our session
    owns under a name nobody knows is found by its prefix and deleted, or it would hold the
    lock forever. Injected at kazoo's call, as above: the create really happens."""
    client, other = two_sessions
    nodes = NodeStore(client)
    node = Node(state=NodeState.READY, type=["a"])
    nodes.create(node)
    nodes.lock(node)  # the lock dir exists from now on: the next lock creates a contender
    nodes.unlock(node)
    real_create = client.kazoo.create_async
    lost: list[str] = []

    def applied_but_lost(path: str, *args: Any, **kwargs: Any) -> Any:
        if "__lock__" not in path or lost:
            return real_create(path, *args, **kwargs)
        lost.append(real_create(path, *args, **kwargs).get(timeout=5))
        answer = client.kazoo.handler.async_result()
        answer.set_exception(ConnectionLoss())
        return answer

    client.kazoo.create_async = applied_but_lost  # type: ignore[method-assign]
    with pytest.raises(LockError):
        nodes.lock(node)
    assert lost and other.kazoo.exists(lost[0]) is not None  # the stray contender
    theirs = Node(id=node.id)
    wait_for(lambda: _try_lock(NodeStore(other), theirs), timeout=10,
             what="the lock free for another session")
    assert other.kazoo.exists(lost[0]) is None


def _try_lock(store: NodeStore, node: Node) -> bool:
    try:
        store.lock(node)
    except LockError:
        return False
    return True

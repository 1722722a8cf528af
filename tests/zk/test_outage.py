"""No store call blocks while ZooKeeper is unreachable; the client recovers afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nodepool_ng.errors import LockError, ZooKeeperError
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import NodeRequest
from nodepool_ng.zk.client import ConnectionState, ZooKeeperClient
from nodepool_ng.zk.components import ComponentRegistry
from nodepool_ng.zk.images import ImageStore
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
            ImageStore(client).builds("img")
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

"""TLS to ZooKeeper (`zookeeper-tls`): a real server with a secure port and client certs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nodepool_ng.errors import ZooKeeperError
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from tests.fixtures.zookeeper import ZooKeeperServer, tls_available


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[int, Path]]:
    if not tls_available():
        pytest.skip("openssl or netty jars not installed")
    server = ZooKeeperServer(tls=True)
    server.start()
    try:
        assert server.secure_port is not None
        yield server.secure_port, Path(server.certs_dir)
    finally:
        server.stop()


def test_tls_session_with_chroot(tls_server: tuple[int, Path]) -> None:
    port, d = tls_server
    client = ZooKeeperClient(
        f"127.0.0.1:{port}", tls_cert=str(d / "client.crt"), tls_key=str(d / "client.key"),
        tls_ca=str(d / "ca.pem"), operation_timeout=5,
    )
    client.start(timeout=10)
    try:
        client.ensure_path("/tls-chroot")
    finally:
        client.stop()
    client = ZooKeeperClient(
        f"127.0.0.1:{port}/tls-chroot", tls_cert=str(d / "client.crt"),
        tls_key=str(d / "client.key"), tls_ca=str(d / "ca.pem"), operation_timeout=5,
    )
    client.start(timeout=10)
    try:
        store = NodeStore(client)
        node_id = store.create(Node(state=NodeState.READY, type=["a"]))
        assert store.get(node_id).state is NodeState.READY
        assert client.exists(f"/nodepool/nodes/{node_id}") is not None
    finally:
        client.stop()


def test_plaintext_client_cannot_use_tls_port(tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    client = ZooKeeperClient(f"127.0.0.1:{port}", operation_timeout=1)
    with pytest.raises(ZooKeeperError, match="cannot connect"):
        client.start(timeout=2)

"""TLS to ZooKeeper (`zookeeper-tls`): a real server with a secure port and client certs."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodepool_ng.errors import ZooKeeperError
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from tests.fixtures.ports import free_port
from tests.fixtures.zookeeper import ZK_CLASSPATH, _ruok
from tests.zk.util import wait_for

NETTY = ":".join(
    f"/usr/share/java/netty-{part}.jar"
    for part in ("codec", "handler", "transport", "buffer", "common", "resolver")
)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certs(d: Path) -> None:
    """A CA, a server cert and a client cert for 127.0.0.1 (PEM)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"),
             "-out", str(d / "ca.pem"), "-days", "2", "-subj", "/CN=np-test-ca")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"), "-subj", "/CN=127.0.0.1")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / f"{name}.crt"),
                 "-days", "2", "-extfile", str(d / "ext.cnf"))
    (d / "server.pem").write_text((d / "server.key").read_text() + (d / "server.crt").read_text())


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    tmp_path = tmp_path_factory.mktemp("zk-tls")
    if shutil.which("openssl") is None or not Path("/usr/share/java/netty-codec.jar").exists():
        pytest.skip("openssl or netty jars not installed")
    make_certs(tmp_path)
    port, secure_port = free_port(), free_port()
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "zoo.cfg"
    cfg.write_text(
        f"dataDir={tmp_path / 'data'}\nclientPort={port}\nclientPortAddress=127.0.0.1\n"
        f"secureClientPort={secure_port}\nsecureClientPortAddress=127.0.0.1\n"
        "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n"
        f"ssl.keyStore.location={tmp_path / 'server.pem'}\nssl.keyStore.type=PEM\n"
        f"ssl.trustStore.location={tmp_path / 'ca.pem'}\nssl.trustStore.type=PEM\n"
        "admin.enableServer=false\n4lw.commands.whitelist=ruok\ntickTime=500\n"
    )
    with open(tmp_path / "zk.log", "wb") as log:
        process = subprocess.Popen(
            ["java", "-Xmx64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-Dzookeeper.root.logger=WARN,CONSOLE", "-cp", f"{ZK_CLASSPATH}:{NETTY}",
             "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: process.poll() is not None or _ruok(port), timeout=30,
                 what="TLS zookeeper")
        assert process.poll() is None, (tmp_path / "zk.log").read_text()
        yield secure_port, tmp_path
    finally:
        process.terminate()
        process.wait(10)


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

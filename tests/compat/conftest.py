"""Fixtures for the upstream-compatibility checks (opt-in: `pytest -m upstream tests/compat`).

They run the real upstream code from separate virtualenvs made by
`tools/compat/setup-venvs.sh` (default /opt/compat; override with NODEPOOL_COMPAT_DIR):
Nodepool 11.0.0 in `<dir>/nodepool11`, Zuul 14.3.0 in `<dir>/zuul14`. Tests skip with the
reason when a venv is missing. Upstream requires ZooKeeper over TLS, so every test here
talks to a TLS ZooKeeper started from openssl-made certificates (tests/zk/test_tls.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from tests.fixtures.zookeeper import ZooKeeperServer, tls_available

COMPAT_DIR = Path(os.environ.get("NODEPOOL_COMPAT_DIR", "/opt/compat"))
NODEPOOL11 = COMPAT_DIR / "nodepool11"
ZUUL14 = COMPAT_DIR / "zuul14"


def require_venv(venv: Path, what: str, probe: str) -> Path:
    """The venv's python, or skip naming the setup script when it is not there."""
    python = venv / "bin" / "python"
    if not (python.exists() and (venv / "bin" / probe).exists()):
        pytest.skip(f"{what} venv missing at {venv}: run tools/compat/setup-venvs.sh "
                    f"(or set NODEPOOL_COMPAT_DIR)")
    return python


@dataclass
class TlsZooKeeper:
    """A TLS ZooKeeper server; `chroot()` hands out a fresh chroot per test."""

    port: int
    certs: Path

    @property
    def cert(self) -> str:
        return str(self.certs / "client.crt")

    @property
    def key(self) -> str:
        return str(self.certs / "client.key")

    @property
    def ca(self) -> str:
        return str(self.certs / "ca.pem")

    def kazoo(self, chroot: str = "") -> KazooClient:
        client = KazooClient(hosts=f"127.0.0.1:{self.port}{chroot}", use_ssl=True,
                             certfile=self.cert, keyfile=self.key, ca=self.ca)
        client.start(timeout=15)
        return client

    def config(self, chroot: str) -> dict[str, object]:
        """The `zookeeper-servers` / `zookeeper-tls` keys of a nodepool.yaml."""
        return {
            "zookeeper-servers": [{"host": "127.0.0.1", "port": self.port, "chroot": chroot}],
            "zookeeper-tls": {"cert": self.cert, "key": self.key, "ca": self.ca},
        }


@pytest.fixture(scope="session")
def tls_zookeeper() -> Iterator[TlsZooKeeper]:
    if not tls_available():
        pytest.skip("openssl or netty jars not installed (needed for a TLS ZooKeeper)")
    server = ZooKeeperServer(tls=True)
    server.start()
    try:
        assert server.secure_port is not None
        yield TlsZooKeeper(server.secure_port, Path(server.certs_dir))
    finally:
        server.stop()


@pytest.fixture
def tls_chroot(tls_zookeeper: TlsZooKeeper) -> Iterator[str]:
    chroot = f"/compat/{uuid.uuid4().hex}"
    client = tls_zookeeper.kazoo()
    try:
        client.ensure_path(chroot)
        yield chroot
        client.delete(chroot, recursive=True)
    finally:
        client.stop()
        client.close()


@pytest.fixture
def tls_kazoo(tls_zookeeper: TlsZooKeeper, tls_chroot: str) -> Iterator[KazooClient]:
    """Plain kazoo in the test's chroot: plays Zuul (as the upstream tests do)."""
    client = tls_zookeeper.kazoo(tls_chroot)
    try:
        yield client
    finally:
        client.stop()
        client.close()

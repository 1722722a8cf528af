"""Host-key scanning against a real sshd on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodepool_ng.errors import NodeScanError
from nodepool_ng.nodescan import NodeScanner, scan_host_keys
from tests.fixtures.ports import free_port
from tests.fixtures.sshd import SshdServer, sshd  # noqa: F401  (fixture)


@pytest.fixture
def scanner() -> Iterator[NodeScanner]:
    s = NodeScanner(workers=2, retry_delay=0.1)
    try:
        yield s
    finally:
        s.stop()


def test_scan_returns_every_host_key_type(sshd: SshdServer) -> None:  # noqa: F811
    keys = scan_host_keys(sshd.host, sshd.port, timeout=20)
    assert sorted(keys) == sorted(sshd.host_keys)
    assert {k.split()[0] for k in keys} == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}


def test_scan_single_key_type_on_other_loopback_address(tmp_path: Path) -> None:
    server = SshdServer(tmp_path / "sshd", host="127.0.0.7", key_types=("ed25519",))
    server.start()
    try:
        keys = scan_host_keys(server.host, server.port, timeout=20)
    finally:
        server.stop()
    assert keys == server.host_keys
    assert keys[0].startswith("ssh-ed25519 ")


def test_scanner_future_returns_host_keys(sshd: SshdServer,  # noqa: F811
                                          scanner: NodeScanner) -> None:
    futures = [scanner.submit(sshd.host, sshd.port, timeout=20) for _ in range(3)]
    for f in futures:
        assert sorted(f.result(timeout=30)) == sorted(sshd.host_keys)


def test_scanner_waits_for_sshd_that_starts_later(tmp_path: Path, scanner: NodeScanner) -> None:
    server = SshdServer(tmp_path / "sshd", key_types=("ed25519", "ecdsa"))
    future = scanner.submit(server.host, server.port, timeout=30)
    assert not future.done()  # nothing listens yet
    server.start()
    try:
        assert sorted(future.result(timeout=40)) == sorted(server.host_keys)
    finally:
        server.stop()


def test_connection_refused_raises_after_timeout() -> None:
    port = free_port()
    with pytest.raises(NodeScanError, match=f"127.0.0.1:{port}"):
        scan_host_keys("127.0.0.1", port, timeout=1.0)


def test_scanner_connection_refused_fails_future(scanner: NodeScanner) -> None:
    port = free_port()
    future = scanner.submit("127.0.0.1", port, timeout=1.0)
    with pytest.raises(NodeScanError, match="attempts"):
        future.result(timeout=20)


def test_reachability_only_for_non_ssh_connection_types(
        scanner: NodeScanner, sshd: SshdServer) -> None:  # noqa: F811
    assert scan_host_keys(sshd.host, sshd.port, timeout=5, connection_type="winrm") == []
    assert scanner.submit(sshd.host, sshd.port, 5, "winrm").result(timeout=20) == []


def _not_ssh_listener() -> tuple[socket.socket, threading.Event]:
    """Accepts TCP connections and closes them at once: reachable, but not SSH."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, stop


def test_tcp_open_but_not_ssh_is_a_scan_error(scanner: NodeScanner) -> None:
    srv, stop = _not_ssh_listener()
    port = srv.getsockname()[1]
    try:
        with pytest.raises(NodeScanError, match="timeout"):
            scan_host_keys("127.0.0.1", port, timeout=1.0)
        with pytest.raises(NodeScanError, match="ssh"):
            scanner.submit("127.0.0.1", port, timeout=1.0).result(timeout=20)
        # the same listener counts as reachable for a non-ssh connection type
        assert scan_host_keys("127.0.0.1", port, timeout=2, connection_type="winrm") == []
    finally:
        stop.set()
        srv.close()

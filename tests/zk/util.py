"""Helpers for ZooKeeper layer tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from kazoo.client import KazooClient

from nodepool_ng.zk.client import ZooKeeperClient


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Wait until `predicate()` is truthy, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def expire_session(client: ZooKeeperClient) -> None:
    """Expire `client`'s session: another connection with the same id/password closes it."""
    old_session = client.session_id
    twin = KazooClient(hosts=client.hosts, client_id=client.kazoo.client_id)
    twin.start(timeout=10)
    twin.stop()
    twin.close()
    wait_for(lambda: client.session_id not in (None, old_session) and client.is_connected,
             what="a new session")

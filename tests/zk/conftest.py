"""Fixtures for the ZooKeeper layer tests: a connected ZooKeeperClient in the test's chroot."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from nodepool_ng.zk.client import ZooKeeperClient
from tests.fixtures.zookeeper import ZooKeeperChroot


@pytest.fixture
def zk_client(zk_chroot: ZooKeeperChroot) -> Iterator[ZooKeeperClient]:
    client = ZooKeeperClient(zk_chroot.hosts, session_timeout=5.0, operation_timeout=5.0)
    client.start(timeout=10)
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture
def make_client(zk_chroot: ZooKeeperChroot) -> Iterator[Callable[..., ZooKeeperClient]]:
    """Factory for more clients (a second launcher, Zuul, ...); all stopped at the end."""
    clients: list[ZooKeeperClient] = []

    def make(**kwargs: float) -> ZooKeeperClient:
        kwargs.setdefault("session_timeout", 5.0)
        kwargs.setdefault("operation_timeout", 5.0)
        client = ZooKeeperClient(zk_chroot.hosts, **kwargs)
        client.start(timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()

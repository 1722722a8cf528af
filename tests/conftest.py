"""Shared pytest fixtures: real ZooKeeper (one server per process, one chroot per test), and
the launcher test environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from tests.api.conftest import ApiEnv
from tests.fixtures.zookeeper import ZooKeeperChroot, ZooKeeperServer
from tests.launcher.env import Env


@pytest.fixture(scope="session")
def zk_server() -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def zk_chroot(zk_server: ZooKeeperServer) -> Iterator[ZooKeeperChroot]:
    """A fresh chroot on the real ZooKeeper server; removed after the test."""
    chroot = ZooKeeperChroot.create(zk_server)
    try:
        yield chroot
    finally:
        chroot.destroy(zk_server)


@pytest.fixture
def kazoo_client(zk_chroot: ZooKeeperChroot) -> Iterator[KazooClient]:
    """A plain kazoo client inside the test's chroot (plays Zuul or an inspector)."""
    client = KazooClient(hosts=zk_chroot.hosts)
    client.start(timeout=10)
    try:
        yield client
    finally:
        client.stop()
        client.close()


@pytest.fixture
def env(tmp_path: Path, zk_chroot: ZooKeeperChroot) -> Iterator[Env]:
    """simcloud (once `env.clouds(...)` is called) and in-process launchers, all stopped
    after the test (tests/launcher/env.py)."""
    e = Env(tmp_path, zk_chroot)
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def api_env(tmp_path: Path, zk_chroot: ZooKeeperChroot) -> Iterator[ApiEnv]:
    """A launcher on simcloud serving the REST API (tests/api, the request-* commands)."""
    env = ApiEnv(tmp_path, zk_chroot)
    try:
        yield env
    finally:
        env.stop()

"""Two launcher processes; the one whose lease keeper holds an API lease is SIGKILLed: the
other takes the lease and re-locks its nodes, which survive until the lease ends and are
deleted then. The API is served here (its own ZooKeeper session), as any launcher's is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from nodepool_ng.api.app import ApiApp
from nodepool_ng.api.service import LeaseService
from nodepool_ng.config.loader import load_config
from nodepool_ng.web.server import WebApp
from nodepool_ng.zk import paths
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.leases import LeaseStore
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore
from tests.api.conftest import TOKENS, Api, write_api_config
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h


def _spawn(cfg: Path, clouds_yaml: Path, hostname: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.launcher_proc", "-c", str(cfg),
             "--clouds-yaml", str(clouds_yaml), "--hostname", hostname],
            stdout=out, stderr=subprocess.STDOUT, cwd=os.getcwd())


@pytest.fixture
def api_server(tmp_path: Path, zk_chroot: ZooKeeperChroot) -> Iterator[tuple[Api, Path]]:
    """The config (written here) and an API on it with a ZooKeeper session of its own."""
    cfg = write_api_config(tmp_path / "nodepool.yaml", zk_chroot,
                           [h.provider("p1", "cloud1")], TOKENS)
    config = load_config(cfg)
    client = ZooKeeperClient(zk_chroot.hosts)
    client.start()
    stores = (LeaseStore(client), RequestStore(client), NodeStore(client))
    for store in stores:
        store.start_cache()
    service = LeaseService(lambda: config, *stores)
    web = WebApp(lambda: client, lambda: config, host="127.0.0.1", port=0,
                 mounts={"/api/v1": ApiApp(lambda: service, lambda: config)})
    web.start()
    try:
        yield Api(f"http://127.0.0.1:{web.port}/api/v1"), cfg
    finally:
        web.stop()
        for store in stores:
            store.stop_cache()
        client.stop()


def _lock_holder(kz: KazooClient, lock_dir: str) -> str | None:
    """The identifier the lock's holder wrote, or None when unlocked."""
    if not kz.exists(lock_dir):
        return None
    names = sorted(kz.get_children(lock_dir), key=lambda n: n[-10:])
    if not names:
        return None
    data, _ = kz.get(f"{lock_dir}/{names[0]}")
    return data.decode()


@pytest.mark.slow
def test_owner_sigkilled_nodes_survive_until_the_lease_ends(
        tmp_path: Path, kazoo_client: KazooClient,
        api_server: tuple[Api, Path]) -> None:
    api, cfg = api_server
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds([{"name": "cloud1"}], clouds_yaml)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("launcher-a", "launcher-b"):
            procs[name] = _spawn(cfg, clouds_yaml, name, tmp_path / f"{name}.log")
        h.wait_for("both launchers registered", lambda: len(
            kazoo_client.get_children("/nodepool/components/pool")
            if kazoo_client.exists("/nodepool/components/pool") else []) >= 2, timeout=30)
        lease_id = api.create(["small"], lease_seconds=12).json()["id"]
        node_id = api.wait_state(lease_id, ("fulfilled",))["nodes"][0]["id"]
        lease_path = paths.api_lease_path(lease_id)
        record: dict[str, Any] = json.loads(kazoo_client.get(lease_path)[0])
        owner = record["owner"]
        survivor = next(name for name in procs if name != owner)
        assert _lock_holder(kazoo_client, paths.api_lease_lock_path(lease_id)) == owner
        assert (_lock_holder(kazoo_client, paths.node_lock_path(node_id)) or "").startswith(
            owner)

        procs[owner].send_signal(signal.SIGKILL)
        procs[owner].wait()
        h.wait_for("the survivor holds the lease", lambda: _lock_holder(
            kazoo_client, paths.api_lease_lock_path(lease_id)) == survivor, timeout=20)
        h.wait_for("the survivor holds the node", lambda: (_lock_holder(
            kazoo_client, paths.node_lock_path(node_id)) or "").startswith(survivor))
        assert record["expires"] - time.time() > 1, "the test machine was too slow"
        node = h.node(kazoo_client, node_id)
        assert node is not None and node["state"] == "in-use"
        assert len(h.servers(sim, "cloud1")) == 1
        assert api.call("GET", f"/requests/{lease_id}").json()["state"] == "fulfilled"

        # The lease ends: the survivor gives the node back; it and its server go.
        view = api.wait_state(lease_id, ("expired",), timeout=30)
        assert view["nodes"] == []
        h.wait_for("node deleted", lambda: h.node(kazoo_client, node_id) is None, timeout=30)
        h.wait_for("server deleted", lambda: not h.servers(sim, "cloud1"), timeout=30)
        h.wait_for("lease released by the survivor", lambda: json.loads(
            kazoo_client.get(lease_path)[0])["released"])
        assert json.loads(kazoo_client.get(lease_path)[0])["owner"] == survivor
        procs[survivor].send_signal(signal.SIGTERM)
        assert procs[survivor].wait(30) == 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        sim.stop()

"""Cloud and ZooKeeper faults in the launch and delete paths (issue 8: defects 3, 6, 7, 9).

Runner-level tests use a real OpenStack adapter on simcloud and a real ZooKeeper NodeStore;
the store callable can be made to fail on demand (a ZooKeeper outage as the runner sees
it). The others run a whole in-process launcher (tests/launcher/env.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

from nodepool_ng.drivers.base import LaunchSpec
from nodepool_ng.drivers.openstack import OpenStackAdapter
from nodepool_ng.errors import ZooKeeperError
from nodepool_ng.launcher.runner import LaunchOptions, LaunchTask, ProviderRunner
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.zk import paths
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h
from tests.launcher.env import Env


class Provider:
    name = "prov"
    cloud = "sim-a"
    region_name = None
    rate = 0.0
    launch_timeout = 60


class FlakyStore:
    """The runner's store callable over a real NodeStore; `fail_ready` makes writes of a
    READY record fail as with a ZooKeeper connection loss, until cleared."""

    def __init__(self, store: NodeStore) -> None:
        self.store = store
        self.fail_ready = threading.Event()
        self.failed_writes = 0

    def __call__(self, node: Node) -> None:
        if node.state is NodeState.READY and self.fail_ready.is_set():
            self.failed_writes += 1
            raise ZooKeeperError(f"node {node.id}: ConnectionLoss")
        self.store.store(node)


class Rig:
    def __init__(self, cloud: SimCloudFixture, zk: ZooKeeperClient) -> None:
        self.cloud = cloud
        self.admin = cloud.admin("sim-a")
        self.adapter = OpenStackAdapter(Provider(), clouds_yaml=str(cloud.clouds_yaml),
                                        poll_interval=0.05)
        self.nodes = NodeStore(zk)
        self.store = FlakyStore(self.nodes)
        self.runner = ProviderRunner("prov", self.adapter, self.store, poll_interval=0.02)
        self.runner.start()

    def new_node(self) -> Node:
        node = Node(state=NodeState.INIT, provider="prov", pool="main", type=["small"])
        self.nodes.create(node)
        node.state = NodeState.BUILDING
        self.nodes.lock_and_store(node)
        return node

    def launch(self, node: Node, retries: int = 1) -> LaunchTask:
        assert node.id is not None
        spec = LaunchSpec(hostname=f"np{node.id}", node_id=node.id, provider_name="prov",
                          pool_name="main", label_name="small", image="cirros",
                          flavor_name="small")
        task = LaunchTask(node, spec, LaunchOptions(host_key_checking=False, retries=retries),
                          on_done=lambda t: None)
        self.runner.launch(task)
        return task

    def stop(self) -> None:
        self.runner.stop()
        self.runner.join(10)
        self.adapter.stop()


@pytest.fixture
def rig(tmp_path: Path, zk_chroot: ZooKeeperChroot) -> Iterator[Rig]:
    client = ZooKeeperClient(zk_chroot.hosts, operation_timeout=5.0)
    client.start()
    cloud = SimCloudFixture(simcloud_profile(1, address_model="floating", boot_delay=0.5),
                            directory=tmp_path / "cloud").start()
    r = Rig(cloud, client)
    try:
        yield r
    finally:
        r.stop()
        cloud.stop()
        client.stop()


def _stored_state(rig: Rig, node: Node) -> str | None:
    assert node.id is not None
    return rig.nodes.get(node.id).state


# -- defect 3: a node is handed over only after its `ready` write succeeded ---------------------
def test_ready_is_reported_only_once_the_ready_record_is_stored(rig: Rig) -> None:
    rig.store.fail_ready.set()
    node = rig.new_node()
    task = rig.launch(node)
    h.wait_for("failed ready writes", lambda: rig.store.failed_writes >= 2, timeout=30)
    assert task.result is None, "READY reported although the record still says building"
    assert _stored_state(rig, node) is NodeState.BUILDING
    rig.store.fail_ready.clear()  # ZooKeeper is back
    h.wait_for("launch result", lambda: task.result is not None, timeout=30)
    assert task.result is NodeState.READY
    assert _stored_state(rig, node) is NodeState.READY


def test_a_node_whose_lock_went_with_the_session_is_not_reported_ready(
    rig: Rig, kazoo_client: KazooClient
) -> None:
    rig.store.fail_ready.set()
    node = rig.new_node()
    task = rig.launch(node)
    h.wait_for("a failed ready write", lambda: rig.store.failed_writes >= 1, timeout=30)
    # The session expired: its ephemeral lock contender is gone (the pool could not
    # re-take the lock either).
    assert node.id is not None
    kazoo_client.delete(f"{paths.node_lock_path(node.id)}/{node.lock.node}")
    h.wait_for("launch result", lambda: task.result is not None, timeout=30)
    assert task.result is NodeState.FAILED
    assert node.state is NodeState.FAILED  # what the request handler reads
    assert _stored_state(rig, node) is NodeState.BUILDING  # never written without the lock


# -- defect 9: a record removed under the runner is one line, no traceback ---------------------
def test_a_node_record_removed_under_the_runner_is_one_warning_without_traceback(
    rig: Rig, kazoo_client: KazooClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nodepool_ng")
    node = rig.new_node()
    assert node.id is not None
    task = rig.launch(node)
    h.wait_for("the server record", lambda: rig.admin.servers(), timeout=30)
    h.wait_for("external id stored", lambda: rig.nodes.get(node.id or "").external_id,
               timeout=30)
    kazoo_client.delete(paths.node_path(node.id), recursive=True)
    h.wait_for("launch result", lambda: task.result is not None, timeout=30)
    assert task.result is NodeState.FAILED and node.state is NodeState.FAILED
    runner_records = [r for r in caplog.records if r.name.startswith("nodepool_ng.launcher")]
    assert not [r for r in runner_records if r.levelno >= logging.ERROR or r.exc_info]
    gone = [r for r in runner_records if "record is gone" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.WARNING


# -- defect 7: a failed attempt's server is deleted until it is gone -----------------------------
def test_a_failed_attempts_server_is_deleted_even_when_the_first_deletes_fail(rig: Rig) -> None:
    node = rig.new_node()
    task = rig.launch(node, retries=2)
    first_server = h.wait_for("the server exists", lambda: rig.admin.servers(),
                              timeout=30)[0]["id"]
    # The floating IP (network API) fails after the server was created, and so do the
    # deletes of that server.
    rig.admin.set_faults(error_rate={"network": 1.0}, method_error_rate={"DELETE": 1.0})
    h.wait_for("launch failed", lambda: task.result is not None, timeout=60)
    assert task.result is NodeState.FAILED
    time.sleep(3.0)  # several delete attempts fail meanwhile
    assert any(s["id"] == first_server for s in rig.admin.servers())
    rig.admin.set_faults(error_rate={"network": 0.0}, method_error_rate={"DELETE": 0.0})
    h.wait_for("the failed attempt's server deleted",
               lambda: all(s["id"] != first_server for s in rig.admin.servers()), timeout=60)


# -- defect 6: deletes back off on a dead cloud ----------------------------------------------------
def _deleting_node(kz: KazooClient, node_id: str, external_id: str) -> None:
    data = {"state": "deleting", "provider": "p1", "pool": "main", "type": ["small"],
            "external_id": external_id, "state_time": time.time(),
            "created_time": time.time()}
    kz.create(f"/nodepool/nodes/{node_id}", json.dumps(data).encode(), makepath=True)


def _boot(env: Env, cloud: str, node_id: str) -> str:
    conn = h_connect(env, cloud)
    server = conn.compute.create_server(
        name=f"np{node_id}", flavor_id=conn.compute.find_flavor("small").id,
        image_id=conn.image.find_image("debian").id, networks="auto",
        metadata={"nodepool_node_id": node_id, "nodepool_provider_name": "p1",
                  "nodepool_pool_name": "main"})
    return str(server.id)


def h_connect(env: Env, cloud: str) -> Any:
    import openstack.config
    import openstack.connection

    region = openstack.config.OpenStackConfig(
        config_files=[str(env.clouds_yaml)], vendor_files=[], load_envvars=False
    ).get_one(cloud=cloud)
    return openstack.connection.Connection(config=region)


def test_deletes_back_off_while_the_cloud_fails(
    env: Env, kazoo_client: KazooClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="nodepool_ng")
    sim = env.clouds([{"name": "cloud1"}])
    state = sim.states["cloud1"]
    servers = [_boot(env, "cloud1", nid) for nid in ("0000000101", "0000000102")]
    for nid, sid in zip(("0000000101", "0000000102"), servers, strict=True):
        _deleting_node(kazoo_client, nid, sid)
    with state.lock:
        state.faults["error_rate"]["compute"] = 1.0
        before = state.requests["compute"]
    env.start([h.provider("p1", "cloud1")])
    outage = 10.0
    time.sleep(outage)
    with state.lock:
        calls = state.requests["compute"] - before
        state.faults["error_rate"]["compute"] = 0.0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    print(f"{calls} compute calls and {len(warnings)} warnings in {outage:g}s of outage")
    # Backoff from 1 s (deletes), 2 s (the deleter), 0.05 s (the list poll), doubling:
    # a few dozen calls at most in 10 s, not hundreds.
    assert calls < 60, f"{calls} compute calls in {outage}s of outage"
    assert len(warnings) < 30, [r.getMessage() for r in warnings]
    h.wait_for("nodes deleted after the outage",
               lambda: not h.node(kazoo_client, "0000000101")
               and not h.node(kazoo_client, "0000000102"), timeout=90)
    assert not [s for s in state.servers.values() if s.id in servers]


# -- cleanup: one failing listing does not stop the pass ---------------------------------------
def test_a_failing_cloud_listing_does_not_stop_other_providers_leak_cleanup(
    env: Env, kazoo_client: KazooClient
) -> None:
    sim = env.clouds([{"name": "cloud0"}, {"name": "cloud1"}])
    leaked = _boot(env, "cloud1", "0000000555")
    with sim.states["cloud0"].lock:
        sim.states["cloud0"].faults["error_rate"]["compute"] = 1.0
    env.start([h.provider("p0", "cloud0"), h.provider("p1", "cloud1")])
    h.wait_for("leaked server on the healthy cloud deleted",
               lambda: leaked not in sim.states["cloud1"].servers, timeout=60)


# -- defect 9: data-less node znodes holding only a lock child ----------------------------------
def test_dataless_node_znodes_are_removed_unless_locked(
    env: Env, kazoo_client: KazooClient
) -> None:
    env.clouds([{"name": "cloud1"}])
    # kazoo's Lock (Zuul's) makes the missing parents of a just-deleted node: no data.
    kazoo_client.ensure_path("/nodepool/nodes/0000000901/lock")
    held = Lock(kazoo_client, "/nodepool/nodes/0000000902/lock")
    assert held.acquire(timeout=10)
    assert kazoo_client.get("/nodepool/nodes/0000000901")[0] == b""
    launcher = env.start([h.provider("p1", "cloud1")])
    h.wait_for("orphan removed", lambda: not kazoo_client.exists("/nodepool/nodes/0000000901"),
               timeout=30)
    passes = launcher.cleanup.passes
    h.wait_for("two more cleanup passes", lambda: launcher.cleanup.passes >= passes + 2)
    assert kazoo_client.exists("/nodepool/nodes/0000000902")  # somebody holds its lock
    held.release()
    h.wait_for("unlocked orphan removed",
               lambda: not kazoo_client.exists("/nodepool/nodes/0000000902"), timeout=30)

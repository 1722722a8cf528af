"""Driver conformance (issue 9): the behaviours the core relies on, each test run once per
driver (`dut`, conftest.py) against that driver's real server. A behaviour a driver does not
have (by its registry entry) is skipped with the reason."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from nodepool_ng.drivers.base import (
    META_BUILD_ID,
    META_NODE_ID,
    META_POOL_NAME,
    META_PROVIDER_NAME,
    META_UPLOAD_ID,
)
from nodepool_ng.errors import LaunchError, LaunchTimeout, QuotaExceeded, TemporaryCloudError
from nodepool_ng.launcher.zkview import StoresView
from nodepool_ng.model.node import NodeState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore
from tests.drivers.conformance.conftest import LOG, POOL, PROVIDER, DriverUnderTest
from tests.fixtures.ports import free_port

NEUTRAL_STATUSES = {"building", "ready", "error", "deleting"}  # Instance.status


def test_launch(dut: DriverUnderTest) -> None:
    """A create machine ends in a ready Instance with an address to reach it and the nodepool
    metadata, on the Instance and in the cloud. A driver of registered hosts instead has its
    host pass the check before hand-out (`is_alive`)."""
    if not dut.entry.launches_servers:
        assert dut.entry.is_alive is not None, "a driver of registered hosts checks them"
        assert dut.entry.is_alive(dut.host) is True  # the real sshd answers
        machine = dut.adapter.get_create_state_machine(dut.spec("0000000001"), LOG)
        with pytest.raises(LaunchError):  # and it never boots anything
            dut.drive(machine)
        return
    spec = dut.spec("0000000001")
    assert dut.adapter.get_quota_for_label(spec).get("instances") == 1  # the core's cost
    woken: list[int] = []
    machine = dut.adapter.get_create_state_machine(spec, LOG)
    dut.adapter.set_progress_listener(lambda: woken.append(1))
    while not machine.complete and not woken:  # the listener is called while it runs
        machine.advance()
        time.sleep(0.02)
    instance = dut.drive(machine)
    assert woken, f"{dut.name}: the progress listener was never called"
    assert instance is not None and machine.external_id == instance.external_id
    assert instance.status == "ready"
    assert instance.interface_ip
    if instance.resources is not None:
        assert instance.resources.get("instances") == 1
    assert instance.node_id == "0000000001" and instance.provider_name == PROVIDER
    assert dut.cloud_metadata is not None
    stored = dut.cloud_metadata(instance.external_id)
    assert stored[META_NODE_ID] == "0000000001"
    assert stored[META_POOL_NAME] == POOL and stored[META_PROVIDER_NAME] == PROVIDER
    listed = dut.listed()[instance.external_id]
    assert listed.node_id == "0000000001" and listed.provider_name == PROVIDER


def test_registered_hosts(dut: DriverUnderTest, request: pytest.FixtureRequest) -> None:
    """A driver of registered hosts "launches" through its registrar: one pass (real
    ZooKeeper) registers the sshd host as a READY node with its address and the host keys it
    offers; `node_host` finds the host behind that node and `is_alive` passes it (and fails
    it once nothing listens there)."""
    if dut.entry.make_registrar is None:
        pytest.skip(f"{dut.name}: no registrar; its nodes are launched "
                    "(registry entry make_registrar=None)")
    assert dut.entry.node_host is not None and dut.entry.is_alive is not None
    zk_chroot = request.getfixturevalue("zk_chroot")  # only drivers with a registrar need it
    client = ZooKeeperClient(zk_chroot.hosts, operation_timeout=5.0)
    client.start(timeout=10)
    nodes = NodeStore(client)
    try:
        assert nodes.start_cache(timeout=10)
        registrar = dut.entry.make_registrar(
            dut.provider, StoresView(nodes, RequestStore(client), list), 60.0, lambda: False)
        registrar.run_once()
        (node,) = nodes.read_all()
        assert node.state == NodeState.READY
        assert node.provider == PROVIDER and node.pool == POOL
        assert node.interface_ip == dut.host.name
        assert node.connection_port == dut.host.connection_port
        assert sorted(node.host_keys) == sorted(dut.host_keys)
        pool = dut.provider.pool(POOL)
        assert dut.entry.node_host(pool, node) == dut.host
        assert dut.entry.is_alive(dut.host) is True
        dead = replace(dut.host, connection_port=free_port(dut.host.name), timeout=1)
        assert dut.entry.is_alive(dead) is False
        registrar.on_stop()
    finally:
        nodes.stop_cache()
        client.stop()


def test_delete(dut: DriverUnderTest) -> None:
    """The delete machine completes and the server is no longer listed; deleting a server
    that is gone completes too (the deleter may run twice)."""
    if not dut.entry.launches_servers:
        # A registered host's node is only a record: its delete completes at once.
        dut.delete(dut.host.name)
        assert dut.host.name not in dut.listed()
        return
    instance = dut.create("0000000002")
    dut.delete(instance.external_id)
    assert instance.external_id not in dut.listed()
    dut.delete(instance.external_id)


def test_delete_failure_then_retry(dut: DriverUnderTest) -> None:
    """A delete the cloud fails raises TemporaryCloudError (the deleter tries again on its
    next pass; it neither hangs nor calls the server gone); the next delete machine, once
    the cloud answers, removes it."""
    dut.require_launches()
    assert dut.fail_delete is not None
    instance = dut.create("0000000006")
    dut.fail_delete()
    machine = dut.adapter.get_delete_state_machine(instance.external_id, LOG)
    with pytest.raises(TemporaryCloudError):
        dut.drive(machine)
    dut.clear_faults()
    assert instance.external_id in dut.listed()
    dut.delete(instance.external_id)
    assert instance.external_id not in dut.listed()


def test_quota_refusal(dut: DriverUnderTest) -> None:
    """A cloud's quota refusal is QuotaExceeded (the node is aborted and relaunched, not
    counted against launch-retries); once the cloud has room the next create succeeds."""
    dut.require_launches()
    assert dut.refuse_quota is not None
    dut.refuse_quota()
    machine = dut.adapter.get_create_state_machine(dut.spec("0000000003"), LOG)
    with pytest.raises(QuotaExceeded):
        dut.drive(machine)
    if machine.external_id is not None:
        dut.delete(machine.external_id)
    assert not [i for i in dut.listed().values() if i.node_id == "0000000003"]
    dut.clear_faults()
    assert dut.create("0000000004").status == "ready"


def test_leak_is_listed_and_deleted(dut: DriverUnderTest) -> None:
    """A server with nodepool metadata naming a node that does not exist (a crashed
    launcher's) is listed with that node id and provider, which is what the cleanup deletes
    by; the delete machine then removes it."""
    dut.require_launches()
    assert dut.plant_leak is not None
    node_id = "0000009999"
    dut.listed()  # a long-lived adapter: its server list was read before the leak appeared
    external_id = dut.plant_leak(node_id)
    deadline = time.monotonic() + 10
    while external_id not in (listed := dut.listed()):
        assert time.monotonic() < deadline, f"{dut.name}: the leaked server is not listed"
        time.sleep(0.05)
    assert listed[external_id].status in NEUTRAL_STATUSES
    assert listed[external_id].node_id == node_id
    assert listed[external_id].provider_name == PROVIDER
    dut.delete(external_id)
    assert external_id not in dut.listed()


def test_launch_failure_then_retry(dut: DriverUnderTest) -> None:
    """A failed create is LaunchError, not QuotaExceeded (it counts against launch-retries);
    what it left is deletable by its external_id; a second create succeeds."""
    dut.require_launches()
    assert dut.fail_create, f"{dut.name}: no way to make a create fail"
    for n, (how, inject) in enumerate(dut.fail_create):
        inject()
        node_id = f"00000001{n:02d}"
        machine = dut.adapter.get_create_state_machine(dut.spec(node_id), LOG)
        with pytest.raises(LaunchError) as info:
            dut.drive(machine)
        assert not isinstance(info.value, QuotaExceeded), f"{dut.name}, {how}: {info.value}"
        dut.clear_faults()
        if machine.external_id is not None:
            dut.delete(machine.external_id)
        assert not [i for i in dut.listed().values() if i.node_id == node_id], how
        retried = dut.create(f"00000002{n:02d}")
        assert retried.status == "ready", how


def test_launch_timeout(dut: DriverUnderTest) -> None:
    """A server not up within `launch-timeout` is LaunchTimeout (a LaunchError, counted
    against launch-retries) with its external_id known, so the core deletes what was made."""
    dut.require_launches()
    assert dut.slow_boot is not None
    short = dut.with_raw(**{"launch-timeout": 1})
    dut.slow_boot(2.0)
    machine = short.adapter.get_create_state_machine(short.spec("0000000008"), LOG)
    started = time.monotonic()
    with pytest.raises(LaunchTimeout):
        short.drive(machine, timeout=15)
    assert time.monotonic() - started < 10
    dut.clear_faults()
    assert machine.external_id is not None, f"{dut.name}: the timed-out server has no id"
    short.delete(machine.external_id)
    assert machine.external_id not in short.listed()


def test_listing_outage_during_launch_is_survived(dut: DriverUnderTest) -> None:
    """The server list fails for a while after the create call answered: the machine keeps
    waiting (no error, not complete) and finishes once the cloud lists again."""
    dut.require_launches()
    assert dut.slow_boot is not None and dut.fail_listing is not None
    dut.slow_boot(1.0)
    machine = dut.adapter.get_create_state_machine(dut.spec("0000000010"), LOG)
    deadline = time.monotonic() + 10
    while machine.external_id is None:
        assert time.monotonic() < deadline, f"{dut.name}: the create call gave no id"
        machine.advance()
        time.sleep(0.02)
    dut.fail_listing()
    outage_end = time.monotonic() + 1.5
    while time.monotonic() < outage_end:
        assert machine.advance() is None and not machine.complete
        time.sleep(0.02)
    dut.clear_faults()
    instance = dut.drive(machine, timeout=20)
    assert instance is not None and instance.status == "ready"
    assert instance.external_id == machine.external_id
    dut.delete(instance.external_id)


def test_launch_timeout_keeps_an_id_the_cloud_assigned(dut: DriverUnderTest) -> None:
    """The create call answered in time, but the machine is next advanced after
    `launch-timeout` (a busy runner): LaunchTimeout must still carry the server's id, so the
    core deletes it at once rather than leaving it to the leak cleanup."""
    dut.require_launches()
    short = dut.with_raw(**{"launch-timeout": 1})
    machine = short.adapter.get_create_state_machine(short.spec("0000000009"), LOG)
    started = time.monotonic()
    machine.advance()  # the create call is submitted
    while not (made := [i for i in short.listed().values() if i.node_id == "0000000009"]):
        assert time.monotonic() < started + 10, f"{dut.name}: the create call made no server"
        time.sleep(0.05)
    time.sleep(max(0.0, started + 1.2 - time.monotonic()) + 0.3)  # past the deadline
    with pytest.raises(LaunchTimeout):
        short.drive(machine, timeout=15)
    try:
        assert machine.external_id == made[0].external_id
    finally:
        short.delete(made[0].external_id)


def test_image_upload_list_delete(dut: DriverUnderTest,
                                  small_image: Callable[[str], Path]) -> None:
    """Where the driver has images: upload a small file in the adapter's `image_format`, see
    it listed with its nodepool metadata, delete it."""
    dut.require_images()
    images = dut.image_adapter()
    fmt = images.image_format
    path = small_image(fmt)
    build_id = uuid.uuid4().hex[:8]
    meta = {META_BUILD_ID: build_id, META_UPLOAD_ID: "0000000001",
            META_PROVIDER_NAME: PROVIDER, "nodepool_image_name": "custom"}
    data = path.read_bytes()  # the builder passes the checksums from its checksum files
    image_id = images.upload_image(f"custom-{build_id}", str(path), fmt, meta, timeout=60,
                                   md5=hashlib.md5(data).hexdigest(),
                                   sha256=hashlib.sha256(data).hexdigest(),
                                   **dut.image_upload_kwargs)
    assert image_id
    listed = {r.external_id: r for r in images.list_images()}
    assert image_id in listed, f"{dut.name}: the uploaded image is not listed"
    assert listed[image_id].kind == "image"
    assert listed[image_id].metadata[META_BUILD_ID] == build_id
    assert listed[image_id].metadata[META_UPLOAD_ID] == "0000000001"
    assert listed[image_id].metadata[META_PROVIDER_NAME] == PROVIDER
    images.delete_image(image_id)
    assert image_id not in {r.external_id for r in images.list_images()}
    images.delete_image(image_id)  # already gone: the builder's cleanup may ask twice

"""The OpenStack adapter against simcloud (real HTTP, unmodified openstacksdk)."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nodepool_ng.drivers.base import (
    META_NODE_ID,
    META_POOL_NAME,
    META_PROVIDER_NAME,
    Instance,
    LaunchSpec,
    StateMachine,
)
from nodepool_ng.drivers.openstack import OpenStackAdapter
from nodepool_ng.drivers.openstack.sdk import remember_service_lookups
from nodepool_ng.errors import LaunchError, LaunchTimeout, QuotaExceeded
from nodepool_ng.launcher.quota import cloud_headroom, unmanaged_usage
from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile

LOG = logging.getLogger("test")
PUBLIC = ipaddress.ip_network("127.100.0.0/16")  # simcloud's default cidrs for the 1st cloud
PRIVATE = ipaddress.ip_network("127.200.0.0/16")


@dataclass(frozen=True)
class Provider:
    name: str = "prov"
    cloud: str = "sim-a"
    region_name: str | None = None
    rate: float = 0.0
    launch_timeout: int = 60


def spec(n: int = 1, **kw: Any) -> LaunchSpec:
    node_id = f"{n:010d}"
    values: dict[str, Any] = dict(
        hostname=f"np{node_id}", node_id=node_id, provider_name="prov", pool_name="main",
        label_name="small-label", image="cirros", flavor_name="small")
    values.update(kw)
    return LaunchSpec(**values)


def run(*machines: StateMachine, timeout: float = 60) -> list[Instance | None]:
    """Advance every machine from this one thread until all are complete."""
    results: list[Instance | None] = [None] * len(machines)
    deadline = time.monotonic() + timeout
    while not all(m.complete for m in machines):
        assert time.monotonic() < deadline, "state machines did not finish"
        for i, m in enumerate(machines):
            if not m.complete:
                results[i] = m.advance()
        time.sleep(0.01)
    return results


@pytest.fixture
def cloud_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[SimCloudFixture, OpenStackAdapter]] = []

    def make(provider: Provider | None = None, **profile: Any
             ) -> tuple[SimCloudFixture, OpenStackAdapter]:
        sc = SimCloudFixture(simcloud_profile(1, **profile),
                             directory=tmp_path / f"cloud{len(started)}").start()
        adapter = OpenStackAdapter(provider or Provider(), clouds_yaml=str(sc.clouds_yaml),
                                   poll_interval=0.1)
        started.append((sc, adapter))
        return sc, adapter

    yield make
    for sc, adapter in started:
        adapter.stop()
        sc.stop()


# model -> (networks to ask for, has a private address, gets a floating IP)
MODELS = {
    "external": ((), False, False),
    "external_private": (("public", "private"), True, False),
    "floating": ((), True, True),
    "nova_floating": ((), True, True),
    "access_ip": ((), True, False),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_launch_addresses_metadata_and_delete(cloud_factory: Any, model: str) -> None:
    networks, has_private, floating = MODELS[model]
    sc, adapter = cloud_factory(address_model=model)
    admin = sc.admin("sim-a")
    (inst,) = run(adapter.get_create_state_machine(spec(networks=networks), LOG))
    assert inst is not None and inst.status == "ready"

    (server,) = admin.servers()
    assert server["id"] == inst.external_id and server["status"] == "ACTIVE"
    assert server["metadata"][META_NODE_ID] == "0000000001"
    assert server["metadata"][META_POOL_NAME] == "main"
    assert server["metadata"][META_PROVIDER_NAME] == "prov"
    assert inst.node_id == "0000000001" and inst.provider_name == "prov"

    addrs = {a for entries in server["addresses"].values() for a in entries}
    if server["access_ipv4"]:
        addrs.add(server["access_ipv4"])
    public = [a for a in addrs if ipaddress.ip_address(a) in PUBLIC]
    private = [a for a in addrs if ipaddress.ip_address(a) in PRIVATE]
    assert len(public) == 1
    assert inst.interface_ip == inst.public_ipv4 == public[0]
    assert inst.private_ipv4 == (private[0] if has_private else public[0])
    fips = admin.floating_ips()
    if floating:
        assert [f["address"] for f in fips] == public
    else:
        assert fips == []
    assert inst.resources is not None
    assert inst.resources.as_dict() == {"cores": 1, "instances": 1, "ram": 1024}

    run(adapter.get_delete_state_machine(inst.external_id, LOG))
    assert admin.servers() == []
    assert admin.floating_ips() == []
    assert [p for p in admin.ports() if p["device_id"] == inst.external_id] == []


def test_no_auto_floating_ip_leaves_server_without_public_address(cloud_factory: Any) -> None:
    sc, adapter = cloud_factory(address_model="floating")
    (inst,) = run(adapter.get_create_state_machine(spec(auto_floating_ip=False), LOG))
    assert inst is not None
    assert sc.admin("sim-a").floating_ips() == []
    assert inst.public_ipv4 is None and inst.interface_ip is None
    assert inst.private_ipv4 is not None
    assert ipaddress.ip_address(inst.private_ipv4) in PRIVATE


def test_error_fault_is_launch_error_with_fault_text(cloud_factory: Any) -> None:
    sc, adapter = cloud_factory()
    admin = sc.admin("sim-a")
    admin.set_faults(server_error_rate=1.0)
    sm = adapter.get_create_state_machine(spec(), LOG)
    with pytest.raises(LaunchError, match="simulated hypervisor failure") as info:
        run(sm)
    assert not isinstance(info.value, QuotaExceeded)
    assert sm.external_id == admin.servers()[0]["id"]  # known, so the core can delete it
    run(adapter.get_delete_state_machine(sm.external_id, LOG))
    assert admin.servers() == []


def test_over_quota_raises_quota_exceeded(cloud_factory: Any) -> None:
    sc, adapter = cloud_factory(quota={"instances": 1})
    (first,) = run(adapter.get_create_state_machine(spec(1), LOG))
    assert first is not None
    sm = adapter.get_create_state_machine(spec(2), LOG)
    with pytest.raises(QuotaExceeded, match="instances"):
        run(sm)
    assert [s["id"] for s in sc.admin("sim-a").servers()] == [first.external_id]


def test_launch_timeout(cloud_factory: Any) -> None:
    sc, adapter = cloud_factory(Provider(launch_timeout=1), boot_delay=60)
    sm = adapter.get_create_state_machine(spec(), LOG)
    with pytest.raises(LaunchTimeout, match="np0000000001"):
        run(sm)
    assert sm.external_id is not None
    assert sc.admin("sim-a").servers()[0]["status"] == "BUILD"
    run(adapter.get_delete_state_machine(sm.external_id, LOG))
    assert sc.admin("sim-a").servers() == []


def test_delete_of_missing_server_completes(cloud_factory: Any) -> None:
    _, adapter = cloud_factory()
    sm = adapter.get_delete_state_machine("00000000-0000-0000-0000-000000000000", LOG)
    run(sm)
    assert sm.complete


def test_quota_limits_minus_unmanaged_servers(cloud_factory: Any) -> None:
    sc, adapter = cloud_factory(quota={"instances": 10, "cores": 20, "ram": -1})
    limits = adapter.get_quota_limits()
    assert limits.get("instances") == 10 and limits.get("cores") == 20
    assert limits.get("ram") == float("inf")

    conn = sc.connect("sim-a")  # someone else's server on the same cloud
    conn.create_server("foreign", image="cirros", flavor="medium", wait=False)
    (ours,) = run(adapter.get_create_state_machine(spec(1), LOG))
    assert ours is not None

    # What the launcher's pool quota computes from the adapter's listing and limits.
    name = Provider().name
    unmanaged = unmanaged_usage(adapter.list_instances(), name, {"0000000001"})
    assert unmanaged.as_dict() == {"cores": 2, "instances": 1, "ram": 4096}
    available = cloud_headroom(limits, unmanaged)
    assert available.get("instances") == 9 and available.get("cores") == 18
    assert available.get("ram") == float("inf")
    # our server counts as unmanaged (leaked) when its node is not known
    leaked = unmanaged_usage(adapter.list_instances(), name, set())
    assert leaked.as_dict() == {"cores": 3, "instances": 2, "ram": 5120}


def test_flavor_selection_and_label_quota(cloud_factory: Any) -> None:
    _, adapter = cloud_factory()
    q = adapter.get_quota_for_label(spec(flavor_name=None, min_ram=2000))
    assert q.as_dict() == {"cores": 2, "instances": 1, "ram": 4096}
    q = adapter.get_quota_for_label(spec(flavor_name="large"))
    assert q.as_dict() == {"cores": 4, "instances": 1, "ram": 8192}
    with pytest.raises(LaunchError, match="small-label"):
        adapter.get_quota_for_label(spec(flavor_name=None, min_ram=100000))
    (inst,) = run(adapter.get_create_state_machine(spec(flavor_name="me", min_ram=2000), LOG))
    assert inst is not None and inst.resources is not None
    assert inst.resources.as_dict()["ram"] == 4096


def test_many_machines_from_one_thread(cloud_factory: Any) -> None:
    sc, adapter = cloud_factory(boot_delay=0.3)
    machines = [adapter.get_create_state_machine(spec(i), LOG) for i in range(1, 16)]
    instances = run(*machines)
    assert len({i.external_id for i in instances if i is not None}) == 15
    listed = {i.external_id: i for i in adapter.list_instances()}
    assert set(listed) == {i.external_id for i in instances if i is not None}
    assert {i.node_id for i in listed.values()} == {f"{n:010d}" for n in range(1, 16)}
    run(*[adapter.get_delete_state_machine(i.external_id, LOG)
          for i in instances if i is not None])
    assert sc.admin("sim-a").servers() == []


def test_image_upload_list_delete(cloud_factory: Any, tmp_path: Path) -> None:
    sc, adapter = cloud_factory(image_formats=["vhd", "qcow2"])
    assert adapter.image_format == "vhd"  # from openstacksdk's cloud config
    path = tmp_path / "disk.vhd"
    path.write_bytes(b"\0" * 4096)
    image_id = adapter.upload_image("np-image-0001", str(path), None,
                                    {"nodepool_build_id": "0001", "nodepool_upload_id": "0001",
                                     "nodepool_provider_name": "prov"}, timeout=30)
    (image,) = [i for i in adapter.list_images() if i.external_id == image_id]
    assert image.metadata["nodepool_build_id"] == "0001"
    assert image.metadata["nodepool_provider_name"] == "prov"
    (seen,) = [i for i in sc.admin("sim-a").images() if i["id"] == image_id]
    assert seen["disk_format"] == "vhd" and seen["status"] == "active"
    adapter.delete_image(image_id)
    assert image_id not in [i["id"] for i in sc.admin("sim-a").images()]


def test_service_lookups_remembered_once_present(cloud_factory: Any) -> None:
    """`has_service` is asked per expanded server; a "yes" is answered from memory, and
    a "no" is asked again (openstacksdk also says no when the lookup failed)."""
    _, adapter = cloud_factory()
    conn = adapter.conn
    asked: list[str] = []
    original = type(conn).has_service

    def counting(service_key: str, version: str | None = None) -> bool:
        asked.append(service_key)
        return bool(original(conn, service_key, version))

    conn.has_service = counting
    remember_service_lookups(conn)
    assert conn.has_service("network") and conn.has_service("network")
    assert conn.has_service("compute")
    assert not conn.has_service("no-such-service")
    assert not conn.has_service("no-such-service")
    assert asked == ["network", "compute", "no-such-service", "no-such-service"]
    # The adapter's own expansion still finds the addresses (it asks through the memo).
    (instance,) = run(adapter.get_create_state_machine(spec(), LOG))
    assert instance is not None and instance.interface_ip

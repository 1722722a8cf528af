"""Quota errors and limits, injected 5xx and ERROR servers, BUILD -> ACTIVE by boot delay."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openstack.exceptions
import pytest

from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile


@pytest.fixture
def cloud() -> Iterator[SimCloudFixture]:
    with SimCloudFixture(simcloud_profile(1, quota={"instances": 3, "cores": 5,
                                                    "ram": 9000})) as c:
        yield c


def _boot(conn: object, name: str, flavor: str) -> object:
    return conn.compute.create_server(  # type: ignore[attr-defined]
        name=name, flavor_id={"small": "1", "medium": "2", "large": "3"}[flavor],
        image_id=conn.image.find_image("cirros").id,  # type: ignore[attr-defined]
        networks="auto")


@pytest.mark.parametrize(("flavors", "resource"), [
    (["small", "small", "small", "small"], "instances"),
    (["medium", "medium", "medium"], "cores"),
    (["large", "small"], "ram")])
def test_quota_exceeded_and_limits_show_usage(cloud: SimCloudFixture, flavors: list[str],
                                              resource: str) -> None:
    conn = cloud.connect("sim-a")
    if resource == "ram":
        cloud.admin("sim-a").set_quota(ram=9000 - 8192 + 8192)  # large fits, small does not
    for flavor in flavors[:-1]:
        _boot(conn, "n", flavor)
    with pytest.raises(openstack.exceptions.ForbiddenException,
                       match=f"Quota exceeded for {resource}: Requested"):
        _boot(conn, "n", flavors[-1])
    limits = conn.get_compute_limits()
    assert limits.total_instances_used == len(flavors) - 1
    assert limits.max_total_instances == 3
    assert limits.total_cores_used == sum({"small": 1, "medium": 2, "large": 4}[f]
                                          for f in flavors[:-1])


def test_injected_5xx_rate_is_observed(cloud: SimCloudFixture) -> None:
    conn = cloud.connect("sim-a")
    conn.list_flavors()  # authenticate before faults start
    cloud.admin("sim-a").set_faults(error_rate={"compute": 0.5})
    failures = 0
    for _ in range(60):
        response = conn.compute.get("/limits")
        failures += response.status_code == 500
        if response.status_code == 500:
            assert "computeFault" in response.json()
    assert 10 <= failures <= 50
    assert cloud.admin("sim-a").stats()["injected_errors"]["compute"] == failures


def test_error_servers_carry_a_fault(cloud: SimCloudFixture) -> None:
    admin = cloud.admin("sim-a")
    admin.set_quota(instances=-1, cores=-1, ram=-1)
    admin.set_faults(server_error_rate=0.5)
    conn = cloud.connect("sim-a")
    for i in range(30):
        _boot(conn, f"n{i}", "small")
    # As nova, the first read of a new server says BUILD (test_upstream_fidelity.py).
    assert {s.status for s in conn.compute.servers()} == {"BUILD"}
    servers = list(conn.compute.servers())
    errored = [s for s in servers if s.status == "ERROR"]
    assert 3 <= len(errored) <= 27
    assert all(s.fault and s.fault["message"] and s.fault["code"] == 500 for s in errored)
    assert admin.stats()["error_servers"] == len(errored)


def test_build_becomes_active_after_boot_delay(cloud: SimCloudFixture) -> None:
    cloud.admin("sim-a").set_boot_delay(0.3)
    conn = cloud.connect("sim-a")
    server = _boot(conn, "slow", "small")
    assert conn.compute.get_server(server).status == "BUILD"  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while conn.compute.get_server(server).status != "ACTIVE":  # type: ignore[arg-type]
        assert time.monotonic() < deadline
        time.sleep(0.05)

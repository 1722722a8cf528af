"""Behaviour upstream Nodepool 11's OpenStack driver relies on (found by tests/compat).

Plain openstacksdk, the calls upstream makes: `create_server(wait=False)`, a raw
`GET /servers/detail` (its `_simpleServerList`), then `meta.add_server_interfaces` on the
ACTIVE server; block-storage `/limits` from the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openstack.cloud.meta as meta
import pytest

from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile


class RawServer(dict[str, Any]):
    """A raw server dict with attribute access, as upstream's NodepoolOpenStackServer."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


@pytest.fixture
def cloud() -> Iterator[SimCloudFixture]:
    # boot_delay 0: the server is "ready" at once, the case that broke upstream.
    with SimCloudFixture(simcloud_profile(n=1, boot_delay=0.0)) as sim:
        yield sim


def _raw_list(conn: Any) -> list[RawServer]:
    body = conn.compute.get("/servers/detail", headers={"Accept": "application/json"}).json()
    return [RawServer(s) for s in body["servers"]]


def test_first_read_after_create_is_build_even_with_no_boot_delay(
        cloud: SimCloudFixture) -> None:
    conn = cloud.connect("sim-a")
    # create_server(wait=False) re-reads the server once: upstream keeps that record and only
    # expands addresses for ACTIVE servers it lists later. Nova never says ACTIVE here.
    created = conn.create_server("np0000000001", image="cirros", flavor="small", wait=False)
    assert created.status == "BUILD"
    deadline = time.monotonic() + 10
    while (listed := _raw_list(conn)) and listed[0]["status"] != "ACTIVE":
        assert time.monotonic() < deadline, "server never became ACTIVE"
        time.sleep(0.02)
    server = meta.add_server_interfaces(conn, listed[0])
    assert server["interface_ip"] and server["interface_ip"] == server["public_v4"]
    assert server["interface_ip"].startswith("127.")


def test_each_server_is_build_on_its_own_first_read(cloud: SimCloudFixture) -> None:
    conn = cloud.connect("sim-a")
    first = conn.create_server("a", image="cirros", flavor="small", wait=True, timeout=10)
    assert first.status == "ACTIVE"
    # The proxy call does not re-read the server: the list below is its first read.
    second = conn.compute.create_server(name="b", image_id=conn.get_image("cirros").id,
                                        flavor_id=conn.get_flavor("small").id)
    statuses = {s["id"]: s["status"] for s in _raw_list(conn)}
    assert statuses == {first.id: "ACTIVE", second.id: "BUILD"}
    statuses = {s["id"]: s["status"] for s in _raw_list(conn)}
    assert statuses == {first.id: "ACTIVE", second.id: "ACTIVE"}


def test_block_storage_limits_in_catalog(cloud: SimCloudFixture) -> None:
    # Upstream asks for volume limits on every pool pass; a missing service fails them all.
    limits = cloud.connect("sim-a").block_storage.get_limits()
    assert limits.absolute.max_total_volumes == -1
    assert limits.absolute.total_volumes_used == 0


def test_flavor_extra_specs_at_novas_path(cloud: SimCloudFixture) -> None:
    # openstacksdk's get_flavor reads GET /flavors/{id}/os-extra_specs (nova's spelling).
    flavor = cloud.connect("sim-a").get_flavor("small", get_extra=True)
    assert flavor is not None and flavor.extra_specs == {}

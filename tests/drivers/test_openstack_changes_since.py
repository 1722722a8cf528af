"""The OpenStack adapter's server list against simcloud: incremental polls with Nova's
`changes-since` see creations and deletions, and the periodic full list repairs what an
incremental poll cannot see (a deletion whose record the cloud no longer keeps)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodepool_ng.drivers.openstack import OpenStackAdapter
from tests.drivers.test_openstack_adapter import Provider, run, spec
from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile

LOG = logging.getLogger("test")


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[SimCloudFixture, OpenStackAdapter]]:
    with SimCloudFixture(simcloud_profile(1), directory=tmp_path) as sc:
        adapter = OpenStackAdapter(Provider(), clouds_yaml=str(sc.clouds_yaml),
                                   poll_interval=0.1, server_reconcile_interval=3600.0)
        try:
            yield sc, adapter
        finally:
            adapter.stop()


def listed(adapter: OpenStackAdapter) -> dict[str, str]:
    """A fresh poll: server id -> status."""
    return {i.external_id: i.status for i in
            (adapter.compute.instance_from_server(s, expanded=False)
             for s in adapter.servers.get(max_age=0.0).values())}


def boot(conn: Any, name: str) -> Any:
    return conn.compute.create_server(name=name, image_id=conn.get_image("cirros").id,
                                      flavor_id=conn.get_flavor("small").id)


def compute_requests(sc: SimCloudFixture) -> int:
    return int(sc.admin("sim-a").stats()["requests"].get("compute", 0))


def test_incremental_polls_see_creations_and_deletions(
        cloud: tuple[SimCloudFixture, OpenStackAdapter]) -> None:
    sc, adapter = cloud
    conn = sc.connect("sim-a")
    others = [boot(conn, f"other{i}") for i in range(3)]  # not ours: seen all the same
    assert set(listed(adapter)) == {s.id for s in others}
    assert adapter.compute.full_polls == 1
    # launches and deletions through the state machines, which poll the shared list
    made = run(*(adapter.get_create_state_machine(spec(n), LOG) for n in (1, 2)))
    ours = {i.external_id for i in made if i is not None}
    assert len(ours) == 2
    now = listed(adapter)
    assert set(now) == ours | {s.id for s in others}
    assert all(now[i] == "ready" for i in ours)
    conn.compute.delete_server(others[0])
    new = boot(conn, "late")
    now = listed(adapter)
    assert set(now) == (ours | {s.id for s in others[1:]} | {new.id})
    assert {i.external_id for i in adapter.list_instances()} == set(now)
    gone = sorted(ours)[0]
    run(adapter.get_delete_state_machine(gone, LOG))
    assert gone not in listed(adapter)
    assert adapter.compute.full_polls == 1 and adapter.compute.incremental_polls >= 3


def test_incremental_polls_send_only_what_changed(
        cloud: tuple[SimCloudFixture, OpenStackAdapter]) -> None:
    sc, adapter = cloud
    conn = sc.connect("sim-a")
    for i in range(30):
        boot(conn, f"s{i}")
    assert len(listed(adapter)) == 30  # full; the first read: all ACTIVE from now on
    adapter.compute.changes_since_slack = 0.0
    # the Date header and the query have whole seconds: two seconds without a change
    time.sleep(2.5)
    listed(adapter)
    before = compute_requests(sc)
    sizes: list[int] = []
    proxy = adapter.compute.conn.compute
    get = proxy.get

    def counting_get(url: str, **kw: Any) -> Any:
        response = get(url, **kw)
        sizes.append(len(response.content))
        return response

    proxy.get = counting_get
    try:
        assert len(listed(adapter)) == 30
    finally:
        del proxy.get
    assert compute_requests(sc) == before + 1
    assert sizes and sizes[0] < 100, sizes  # {"servers": []}, not 30 servers
    assert adapter.compute.full_polls == 1


def test_full_reconcile_repairs_a_missed_deletion(
        cloud: tuple[SimCloudFixture, OpenStackAdapter]) -> None:
    sc, adapter = cloud
    conn = sc.connect("sim-a")
    keep, lost = boot(conn, "keep"), boot(conn, "lost")
    assert set(listed(adapter)) == {keep.id, lost.id}
    conn.compute.delete_server(lost)
    assert sc.admin("sim-a").forget_deleted_servers() == 1  # as if its tombstone expired
    # an incremental poll cannot know: the stale entry stays until the next full list
    assert set(listed(adapter)) == {keep.id, lost.id}
    assert adapter.compute.full_polls == 1
    adapter.compute.reconcile_interval = 0.0
    assert set(listed(adapter)) == {keep.id}
    assert adapter.compute.full_polls == 2


def test_every_poll_is_full_when_reconcile_interval_is_zero(tmp_path: Path) -> None:
    with SimCloudFixture(simcloud_profile(1), directory=tmp_path) as sc:
        adapter = OpenStackAdapter(Provider(), clouds_yaml=str(sc.clouds_yaml),
                                   poll_interval=0.1, server_reconcile_interval=0.0)
        try:
            s = boot(sc.connect("sim-a"), "x")
            assert set(listed(adapter)) == {s.id}
            assert set(listed(adapter)) == {s.id}
            assert adapter.compute.full_polls == 2 and adapter.compute.incremental_polls == 0
        finally:
            adapter.stop()


def test_listing_converts_only_servers_that_changed(
        cloud: tuple[SimCloudFixture, OpenStackAdapter]) -> None:
    """`list_instances` runs for every pool's cloud-limit refresh: an unchanged server keeps
    its Instance (no re-conversion), a changed or new one is read afresh, a gone one dropped."""
    sc, adapter = cloud
    conn = sc.connect("sim-a")
    servers = [boot(conn, f"s{i}") for i in range(4)]
    for s in servers:
        conn.compute.wait_for_server(s, wait=30, interval=0.1)
    adapter.servers.get(max_age=0.0)
    first = {i.external_id: i for i in adapter.list_instances()}
    assert set(first) == {s.id for s in servers}
    conn.compute.update_server(servers[0], name="renamed")
    conn.compute.delete_server(servers[1])
    late = boot(conn, "late")
    adapter.servers.get(max_age=0.0)
    second = {i.external_id: i for i in adapter.list_instances()}
    assert set(second) == {servers[0].id, servers[2].id, servers[3].id, late.id}
    assert second[servers[0].id] is not first[servers[0].id]  # changed: re-read
    assert (first[servers[0].id].name, second[servers[0].id].name) == ("s0", "renamed")
    assert all(second[s.id] is first[s.id] for s in servers[2:])  # unchanged: kept

"""`GET /servers/detail?changes-since=...` through unmodified openstacksdk, with Nova's
semantics: servers whose `updated` is at or after the time, deleted ones included (status
DELETED), each once with its latest state; status changes by boot timing count as updates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from openstack import exceptions as os_exc

from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile


@pytest.fixture
def cloud() -> Iterator[SimCloudFixture]:
    with SimCloudFixture(simcloud_profile(n=1, boot_delay=0.0)) as sim:
        yield sim


def mark() -> str:
    """Wait for the next whole second and return it (ISO 8601): every change made before
    this call has an earlier `updated`, every change after it a later or equal one."""
    second = int(time.time()) + 1
    time.sleep(max(0.0, second - time.time()) + 0.02)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def changed(conn: Any, since: str, **query: Any) -> dict[str, Any]:
    servers = list(conn.compute.servers(details=True, changes_since=since, **query))
    ids = [s.id for s in servers]
    assert len(ids) == len(set(ids)), f"a server listed twice: {ids}"
    return {s.id: s for s in servers}


def boot(conn: Any, name: str) -> Any:
    return conn.compute.create_server(name=name, image_id=conn.get_image("cirros").id,
                                      flavor_id=conn.get_flavor("small").id)


def test_only_changed_servers_and_deleted_ones_as_deleted(cloud: SimCloudFixture) -> None:
    conn = cloud.connect("sim-a")
    a, b, c = (boot(conn, n) for n in ("a", "b", "c"))
    list(conn.compute.servers())  # first reads: all three show ACTIVE from now on
    assert {s.status for s in conn.compute.servers()} == {"ACTIVE"}
    since = mark()
    assert changed(conn, since) == {}
    conn.compute.update_server(b, name="b2")
    conn.compute.delete_server(c)
    d = boot(conn, "d")
    got = changed(conn, since)
    assert set(got) == {b.id, c.id, d.id}
    assert got[b.id].name == "b2" and got[b.id].status == "ACTIVE"
    assert got[c.id].status == "DELETED" and got[c.id].name == "c"
    assert got[c.id].metadata == {} and got[c.id].updated_at >= since
    assert got[d.id].status == "BUILD"
    # without changes-since a deleted server is gone, as in Nova
    assert {s.id for s in conn.compute.servers()} == {a.id, b.id, d.id}
    assert conn.compute.find_server(c.id) is None


def test_server_changed_twice_is_listed_once_with_its_latest_state(
        cloud: SimCloudFixture) -> None:
    conn = cloud.connect("sim-a")
    s = boot(conn, "x")
    list(conn.compute.servers())
    since = mark()
    conn.compute.update_server(s, name="x1")
    conn.compute.set_server_metadata(s, role="worker")
    conn.compute.update_server(s, name="x2")
    got = changed(conn, since)
    assert list(got) == [s.id]
    assert got[s.id].name == "x2" and got[s.id].metadata == {"role": "worker"}


def test_metadata_changes_and_deletion_after_changes_count(cloud: SimCloudFixture) -> None:
    conn = cloud.connect("sim-a")
    s = boot(conn, "m")
    list(conn.compute.servers())
    since = mark()
    conn.compute.set_server_metadata(s, k="v")
    assert list(changed(conn, since)) == [s.id]
    since = mark()
    conn.compute.delete_server_metadata(s, ["k"])
    assert list(changed(conn, since)) == [s.id]
    since = mark()
    conn.compute.delete_server(s)
    got = changed(conn, since)
    assert list(got) == [s.id] and got[s.id].status == "DELETED"


def test_becoming_active_by_boot_timing_counts_as_a_change() -> None:
    with SimCloudFixture(simcloud_profile(n=1, boot_delay=2.5)) as sim:
        conn = sim.connect("sim-a")
        s = boot(conn, "slow")
        assert conn.compute.get_server(s).status == "BUILD"
        since = mark()  # after the create, before the end of the boot delay
        assert changed(conn, since) == {}
        deadline = time.monotonic() + 10
        while conn.compute.get_server(s).status != "ACTIVE":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        got = changed(conn, since)
        assert list(got) == [s.id] and got[s.id].status == "ACTIVE"
        assert got[s.id].updated_at >= since


def test_first_read_after_boot_moves_updated(cloud: SimCloudFixture) -> None:
    # No boot delay, but Nova's first read says BUILD: ACTIVE is a change after that read.
    conn = cloud.connect("sim-a")
    s = boot(conn, "fast")
    since = mark()
    assert changed(conn, since) == {}  # still BUILD to the API: nothing changed since
    assert conn.compute.get_server(s).status == "BUILD"  # the first read
    got = changed(conn, since)
    assert list(got) == [s.id] and got[s.id].status == "ACTIVE"


def test_paging_keeps_changes_since_and_other_filters(cloud: SimCloudFixture) -> None:
    conn = cloud.connect("sim-a")
    old = [boot(conn, f"old{i}") for i in range(3)]
    list(conn.compute.servers())
    since = mark()
    new = [boot(conn, f"new{i}") for i in range(3)]
    conn.compute.delete_server(old[0])
    got = changed(conn, since, limit=1)
    assert set(got) == {old[0].id} | {s.id for s in new}
    got = changed(conn, since, limit=1, name="^new")
    assert set(got) == {s.id for s in new}
    assert set(changed(conn, since, status="DELETED")) == {old[0].id}


def test_forgotten_deleted_servers_and_bad_times(cloud: SimCloudFixture) -> None:
    conn = cloud.connect("sim-a")
    s = boot(conn, "gone")
    since = mark()
    conn.compute.delete_server(s)
    assert list(changed(conn, since)) == [s.id]
    admin = cloud.admin("sim-a")
    assert admin.summary()["deleted_servers"] == 1
    assert admin.forget_deleted_servers() == 1
    assert changed(conn, since) == {}
    # other ISO 8601 spellings
    assert changed(conn, since.replace("Z", "+00:00")) == {}
    assert changed(conn, since.replace("Z", ".000000")) == {}
    with pytest.raises(os_exc.BadRequestException):
        changed(conn, "yesterday")


def test_tombstones_are_bounded(cloud: SimCloudFixture) -> None:
    conn = cloud.connect("sim-a")
    state = cloud.service.states["sim-a"]
    state.max_tombstones = 2
    servers = [boot(conn, f"t{i}") for i in range(4)]
    since = mark()
    for s in servers:
        conn.compute.delete_server(s)
    assert set(changed(conn, since)) == {s.id for s in servers[2:]}
    state.tombstone_ttl = 0.0
    time.sleep(0.01)
    assert changed(conn, since) == {}

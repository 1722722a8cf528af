"""Cleanup against simcloud: max-ready-age, leaked servers, leaked floating IPs and DOWN ports,
with their `leaked.*` statsd counters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openstack.config
import openstack.connection
import pytest
from kazoo.client import KazooClient

from tests.fixtures.statsd import StatsdServer, statsd_server  # noqa: F401 (fixture)
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h
from tests.launcher.env import Env


@pytest.fixture
def env(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    statsd_server: StatsdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Env]:
    monkeypatch.setenv("STATSD_HOST", statsd_server.host)
    monkeypatch.setenv("STATSD_PORT", str(statsd_server.port))
    e = Env(tmp_path, zk_chroot)
    try:
        yield e
    finally:
        e.stop()


def connect(env: Env, cloud: str) -> openstack.connection.Connection:
    region = openstack.config.OpenStackConfig(
        config_files=[str(env.clouds_yaml)], vendor_files=[], load_envvars=False
    ).get_one(cloud=cloud)
    return openstack.connection.Connection(config=region)


def ready_idle(kz: KazooClient) -> list[str]:
    return sorted(
        nid for nid, n in h.all_nodes(kz).items() if n["state"] == "ready" and not n["allocated_to"]
    )


def test_max_ready_age_deletes_old_ready_nodes_and_min_ready_replaces_them(
    env: Env, kazoo_client: KazooClient
) -> None:
    sim = env.clouds([{"name": "cloud1"}])
    env.start(
        [h.provider("p1", "cloud1")],
        labels=[{"name": "small", "min-ready": 1, "max-ready-age": 2}],
    )
    first = h.wait_for("a ready node", lambda: ready_idle(kazoo_client))
    h.wait_for("first node expired", lambda: h.node(kazoo_client, first[0]) is None)
    second = h.wait_for("a replacement", lambda: ready_idle(kazoo_client), timeout=30)
    assert second != first
    h.wait_for(
        "old server gone",
        lambda: all(s.metadata["nodepool_node_id"] != first[0] for s in h.servers(sim, "cloud1")),
    )


def test_max_ready_age_leaves_allocated_nodes(env: Env, kazoo_client: KazooClient) -> None:
    env.clouds([{"name": "cloud1"}])
    launcher = env.start(
        [h.provider("p1", "cloud1")], labels=[{"name": "small", "max-ready-age": 1}]
    )
    rid = h.submit_request(kazoo_client, ["small"])
    nid = h.wait_request(kazoo_client, rid)["nodes"][0]
    passes = launcher.cleanup.passes
    h.wait_for("three cleanup passes", lambda: launcher.cleanup.passes >= passes + 3)
    node = h.node(kazoo_client, nid)
    assert node is not None and node["state"] == "ready" and node["allocated_to"] == rid


def test_leaked_server_deleted_after_two_passes_unmanaged_kept(
    env: Env,
    kazoo_client: KazooClient,
    statsd_server: StatsdServer,  # noqa: F811
) -> None:
    sim = env.clouds([{"name": "cloud1"}])
    conn = connect(env, "cloud1")
    owner = {
        "nodepool_node_id": "0000099999",
        "nodepool_provider_name": "p1",
        "nodepool_pool_name": "main",
    }
    leaked = conn.create_server("np0000099999", image="debian", flavor="small", meta=owner)
    other = conn.create_server("not-ours", image="debian", flavor="small", meta={})
    launcher = env.start([h.provider("p1", "cloud1")])
    h.wait_for("leaked server deleted", lambda: leaked.id not in ids(h.servers(sim, "cloud1")))
    # Seen in two passes before it went.
    assert launcher.cleanup.passes >= 2
    assert other.id in ids(h.servers(sim, "cloud1"))
    statsd_server.wait_for("nodepool.provider.p1.leaked.instances", "c")
    # Our own nodes are never taken for leaks.
    rid = h.submit_request(kazoo_client, ["small"])
    nid = h.wait_request(kazoo_client, rid)["nodes"][0]
    passes = launcher.cleanup.passes
    h.wait_for("three cleanup passes", lambda: launcher.cleanup.passes >= passes + 3)
    assert h.node(kazoo_client, nid)["state"] == "ready"  # type: ignore[index]
    assert len(statsd_server.find("nodepool.provider.p1.leaked.instances", "c")) == 1
    conn.close()


def ids(items: list[Any]) -> set[str]:
    return {i.id for i in items}


def test_leaked_floating_ips_and_down_ports_deleted(
    env: Env,
    kazoo_client: KazooClient,
    statsd_server: StatsdServer,  # noqa: F811
) -> None:
    sim = env.clouds([{"name": "cloud1", "address_model": "floating"}])
    conn = connect(env, "cloud1")
    public = conn.network.find_network("public")
    private = conn.network.find_network("private")
    prov = h.provider("p1", "cloud1")
    prov.update({"clean-floating-ips": True, "port-cleanup-interval": 1})
    launcher = env.start([prov])
    # A node in use keeps its floating IP and its port.
    rid = h.submit_request(kazoo_client, ["small"])
    nid = h.wait_request(kazoo_client, rid)["nodes"][0]
    node = h.node(kazoo_client, nid)
    assert node is not None
    state = sim.states["cloud1"]
    used_fip = {f.id for f in state.floating_ips.values() if f.address == node["public_ipv4"]}
    used_ports = {f.port_id for f in state.floating_ips.values() if f.id in used_fip}
    assert used_fip and used_ports

    fip = conn.network.create_ip(floating_network_id=public.id)
    port = conn.network.create_port(network_id=private.id, device_owner="compute:nova")
    h.wait_for("leaked floating ip deleted", lambda: fip.id not in state.floating_ips)
    h.wait_for("DOWN port deleted", lambda: port.id not in state.ports)
    statsd_server.wait_for("nodepool.provider.p1.leaked.floatingips", "c")
    statsd_server.wait_for("nodepool.provider.p1.leaked.ports", "c")
    passes = launcher.cleanup.passes
    h.wait_for("two more cleanup passes", lambda: launcher.cleanup.passes >= passes + 2)
    assert used_fip <= set(state.floating_ips) and used_ports <= set(state.ports)
    assert h.node(kazoo_client, nid)["state"] == "ready"  # type: ignore[index]
    conn.close()


def test_ports_listed_once_per_port_cleanup_interval(env: Env) -> None:
    """Upstream's cadence: ports are listed once per `port-cleanup-interval`, not on every
    cleanup pass (a fleet of thousands has thousands of ports to decode)."""
    sim = env.clouds([{"name": "cloud1"}])
    prov = h.provider("p1", "cloud1")
    prov.update({"port-cleanup-interval": 600})
    launcher = env.start([prov])
    state = sim.states["cloud1"]
    h.wait_for("a first cleanup pass", lambda: launcher.cleanup.passes >= 2)
    before, passes = state.requests["network"], launcher.cleanup.passes
    h.wait_for("five more cleanup passes", lambda: launcher.cleanup.passes >= passes + 5)
    assert state.requests["network"] == before

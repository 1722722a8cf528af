"""The launcher end to end: real ZooKeeper (own chroot), simcloud over HTTP, openstacksdk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.launcher.service import Launcher
from nodepool_ng.simcloud.service import SimCloudService
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h

ZUUL_NODE_KEYS = {
    "state",
    "state_time",
    "cloud",
    "provider",
    "pool",
    "type",
    "allocated_to",
    "az",
    "region",
    "public_ipv4",
    "private_ipv4",
    "public_ipv6",
    "host_id",
    "interface_ip",
    "connection_port",
    "ssh_port",
    "image_id",
    "launcher",
    "created_time",
    "external_id",
    "hostname",
    "comment",
    "user_data",
    "hold_job",
    "host_keys",
    "username",
    "connection_type",
    "shell_type",
    "hold_expiration",
    "resources",
    "slot",
    "attributes",
    "python_path",
    "tenant_name",
    "driver_data",
    "requestor",
    "node_properties",
}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimCloudService]:
    service = h.start_clouds([{"name": "cloud1"}, {"name": "cloud2"}], tmp_path / "clouds.yaml")
    try:
        yield service
    finally:
        service.stop()


class Env:
    def __init__(self, tmp_path: Path, zk: ZooKeeperChroot, sim: SimCloudService) -> None:
        self.tmp_path, self.zk, self.sim = tmp_path, zk, sim
        self.launchers: list[Launcher] = []

    def start(
        self, providers: list[dict], labels: list[dict] | None = None, **options: object
    ) -> Launcher:
        cfg = h.write_config(self.tmp_path / "nodepool.yaml", self.zk, providers, labels)
        launcher = h.start_launcher(cfg, self.tmp_path / "clouds.yaml", **options)
        self.launchers.append(launcher)
        return launcher

    def stop(self) -> None:
        for launcher in self.launchers:
            launcher.stop()


@pytest.fixture
def env(tmp_path: Path, zk_chroot: ZooKeeperChroot, sim: SimCloudService) -> Iterator[Env]:
    e = Env(tmp_path, zk_chroot, sim)
    try:
        yield e
    finally:
        e.stop()


def test_one_node_request_fulfilled_and_used_node_deleted(
    env: Env, kazoo_client: KazooClient
) -> None:
    launcher = env.start([h.provider("p1", "cloud1")])
    rid = h.submit_request(kazoo_client, ["small"])
    req = h.wait_request(kazoo_client, rid)
    assert req["state"] == "fulfilled"
    assert len(req["nodes"]) == 1
    # Every key Zuul reads back survived our rewrite, unchanged.
    assert req["requestor_data"]["job_name"] == "job"
    for key in ("requestor", "node_types", "provider", "state_time", "event_id"):
        assert key in req
    nid = req["nodes"][0]
    n = h.node(kazoo_client, nid)
    assert n is not None
    assert n["state"] == "ready" and n["allocated_to"] == rid
    assert set(n) == ZUUL_NODE_KEYS
    assert n["launcher"].startswith(f"{launcher.options.hostname}-PoolWorker.p1-main-")
    assert n["hostname"] == f"np{nid}" and n["interface_ip"].startswith("127.")
    assert not h.node_locked(kazoo_client, nid)
    srv = h.servers(env.sim, "cloud1")
    assert len(srv) == 1 and srv[0].name == f"np{nid}"
    assert srv[0].metadata["nodepool_node_id"] == nid
    assert srv[0].metadata["nodepool_provider_name"] == "p1"
    assert srv[0].metadata["nodepool_pool_name"] == "main"

    h.accept_and_use(kazoo_client, rid)
    h.wait_for("node deleted", lambda: h.node(kazoo_client, nid) is None)
    h.wait_for("server deleted", lambda: not h.servers(env.sim, "cloud1"))


def test_multi_node_request_in_node_types_order(env: Env, kazoo_client: KazooClient) -> None:
    env.start([h.provider("p1", "cloud1", labels=("small", "big"))])
    rid = h.submit_request(kazoo_client, ["big", "small", "big"])
    req = h.wait_request(kazoo_client, rid)
    assert req["state"] == "fulfilled"
    types = [h.node(kazoo_client, nid)["type"] for nid in req["nodes"]]  # type: ignore[index]
    assert types == [["big"], ["small"], ["big"]]


def test_unknown_label_fails_with_every_pool_declining(env: Env, kazoo_client: KazooClient) -> None:
    launcher = env.start([h.provider("p1", "cloud1"), h.provider("p2", "cloud2")])
    rid = h.submit_request(kazoo_client, ["nope"])
    req = h.wait_request(kazoo_client, rid)
    assert req["state"] == "failed"
    pool_ids = {p.ctx.pool_id for prov in launcher.providers.values() for p in prov.pools.values()}
    assert set(req["declined_by"]) == pool_ids


def set_cloud(env: Env, cloud: str, **values: object) -> None:
    state = env.sim.states[cloud]
    with state.lock:
        for key, value in values.items():
            section, _, name = key.partition("__")
            getattr(state, section)[name] = value


def test_min_ready_kept_per_label(env: Env, kazoo_client: KazooClient) -> None:
    env.start(
        [h.provider("p1", "cloud1", labels=("small", "big"))],
        labels=[{"name": "small", "min-ready": 2}, {"name": "big", "min-ready": 1}],
    )

    def ready(label: str) -> list[str]:
        return [
            nid
            for nid, n in h.all_nodes(kazoo_client).items()
            if n["state"] == "ready" and not n["allocated_to"] and n["type"] == [label]
        ]

    h.wait_for("2 small + 1 big ready", lambda: len(ready("small")) == 2 and len(ready("big")))
    # A request takes a ready node at once; min-ready replaces it.
    taken = set(ready("small"))
    rid = h.submit_request(kazoo_client, ["small"])
    req = h.wait_request(kazoo_client, rid)
    assert req["nodes"][0] in taken
    h.accept_and_use(kazoo_client, rid)
    h.wait_for("min-ready refilled", lambda: len(ready("small")) == 2)
    # min-ready requests are cleaned up once their nodes are released.
    h.wait_for(
        "no min-ready requests left",
        lambda: (
            not [r for r in kazoo_client.get_children("/nodepool/requests") if r.startswith("900-")]
        ),
    )


def test_max_servers_queues_until_nodes_are_freed(env: Env, kazoo_client: KazooClient) -> None:
    launcher = env.start([h.provider("p1", "cloud1", **{"max-servers": 1})])
    first = h.submit_request(kazoo_client, ["small"])
    second = h.submit_request(kazoo_client, ["small"])
    h.wait_request(kazoo_client, first)
    # The second waits (pending, pool paused) while the pool is full.
    h.wait_for("second pending", lambda: h.request(kazoo_client, second)["state"] == "pending")
    comp = next(c for c in launcher.registry.pools() if c.provider_name == "p1")
    h.wait_for("pool paused", lambda: launcher.registry.pools()[0].paused)
    assert comp.id
    assert len(h.servers(env.sim, "cloud1")) == 1
    h.accept_and_use(kazoo_client, first)
    assert h.wait_request(kazoo_client, second)["state"] == "fulfilled"
    assert len(h.servers(env.sim, "cloud1")) == 1


def test_cloud_quota_respected(env: Env, kazoo_client: KazooClient) -> None:
    set_cloud(env, "cloud1", quota__instances=1)
    env.start([h.provider("p1", "cloud1")])
    first = h.submit_request(kazoo_client, ["small"])
    second = h.submit_request(kazoo_client, ["small"])
    h.wait_request(kazoo_client, first)
    h.wait_for("second pending", lambda: h.request(kazoo_client, second)["state"] == "pending")
    assert len(h.servers(env.sim, "cloud1")) == 1
    h.accept_and_use(kazoo_client, first)
    assert h.wait_request(kazoo_client, second)["state"] == "fulfilled"


def test_two_providers_serve_one_label_and_preference(env: Env, kazoo_client: KazooClient) -> None:
    env.start(
        [
            h.provider("p1", "cloud1", **{"max-servers": 2}),
            h.provider("p2", "cloud2", **{"max-servers": 2}),
        ]
    )
    rids = [h.submit_request(kazoo_client, ["small"]) for _ in range(4)]
    providers = set()
    for rid in rids:
        req = h.wait_request(kazoo_client, rid)
        assert req["state"] == "fulfilled"
        providers.add(h.node(kazoo_client, req["nodes"][0])["provider"])  # type: ignore[index]
    assert providers == {"p1", "p2"}
    for rid in rids:
        h.accept_and_use(kazoo_client, rid)
    for _ in range(3):
        rid = h.submit_request(kazoo_client, ["small"], provider="p2")
        req = h.wait_request(kazoo_client, rid)
        assert h.node(kazoo_client, req["nodes"][0])["provider"] == "p2"  # type: ignore[index]
        h.accept_and_use(kazoo_client, rid)


def test_full_pool_leaves_requests_to_a_pool_with_room(
    env: Env, kazoo_client: KazooClient
) -> None:
    """Upstream would accept a request in a full pool and pause there while another pool
    sits idle; here the full pool leaves it to the pool with room."""
    env.start(
        [
            h.provider("p1", "cloud1", **{"max-servers": 1}),
            h.provider("p2", "cloud2", **{"max-servers": 3}),
        ]
    )
    held = h.submit_request(kazoo_client, ["small"], provider="p1")
    assert h.wait_request(kazoo_client, held)["state"] == "fulfilled"  # p1 is full now
    rids = [h.submit_request(kazoo_client, ["small"]) for _ in range(3)]
    for rid in rids:
        req = h.wait_request(kazoo_client, rid)
        assert req["state"] == "fulfilled"
        assert h.node(kazoo_client, req["nodes"][0])["provider"] == "p2"  # type: ignore[index]
    # p1 showed itself full (paused) while it left requests to p2; with nothing left to
    # place, neither pool is paused: nobody accepted a request it had no room for.
    pools = kazoo_client.get_children("/nodepool/components/pool")
    h.wait_for("no pool paused", lambda: not any(
        h.read(kazoo_client, f"/nodepool/components/pool/{p}")["paused"]  # type: ignore[index]
        for p in pools))
    for rid in [held, *rids]:
        h.accept_and_use(kazoo_client, rid)


def test_launch_failures_retried_then_declined(env: Env, kazoo_client: KazooClient) -> None:
    set_cloud(env, "cloud1", faults__server_error_rate=1.0)
    env.start([h.provider("p1", "cloud1", **{"launch-retries": 2})])
    rid = h.submit_request(kazoo_client, ["small"])
    req = h.wait_request(kazoo_client, rid)
    assert req["state"] == "failed" and len(req["declined_by"]) == 1
    # Both attempts reached the cloud; failed servers and nodes are cleaned up.
    assert env.sim.states["cloud1"].requests["compute"] > 0
    h.wait_for("no nodes left", lambda: not h.all_nodes(kazoo_client))
    h.wait_for("no servers left", lambda: not h.servers(env.sim, "cloud1"))


def test_launch_timeout(env: Env, kazoo_client: KazooClient) -> None:
    set_cloud(env, "cloud1", boot__delay=30.0)
    env.start([h.provider("p1", "cloud1", **{"launch-retries": 1, "launch-timeout": 1})])
    rid = h.submit_request(kazoo_client, ["small"])
    assert h.wait_request(kazoo_client, rid)["state"] == "failed"
    h.wait_for("no servers left", lambda: not h.servers(env.sim, "cloud1"))


def test_request_deleted_mid_launch_leaves_no_allocated_node(
    env: Env, kazoo_client: KazooClient
) -> None:
    set_cloud(env, "cloud1", boot__delay=1.0)
    env.start([h.provider("p1", "cloud1")])
    rid = h.submit_request(kazoo_client, ["small"])
    h.wait_for(
        "building node",
        lambda: any(n["state"] == "building" for n in h.all_nodes(kazoo_client).values()),
    )
    kazoo_client.delete(f"/nodepool/requests/{rid}")
    h.wait_for(
        "node ready and unallocated",
        lambda: (
            (ns := h.all_nodes(kazoo_client))
            and all(n["state"] == "ready" and n["allocated_to"] is None for n in ns.values())
        ),
    )
    nid = next(iter(h.all_nodes(kazoo_client)))
    h.wait_for("node unlocked", lambda: not h.node_locked(kazoo_client, nid))


def test_config_change_restarts_only_changed_providers(env: Env, kazoo_client: KazooClient) -> None:
    launcher = env.start([h.provider("p1", "cloud1")])
    p1_id = launcher.providers["p1"].pools["main"].ctx.pool_id
    h.write_config(
        env.tmp_path / "nodepool.yaml",
        env.zk,
        [h.provider("p1", "cloud1"), h.provider("p2", "cloud2", labels=("big",))],
    )
    h.wait_for(
        "p2 registered",
        lambda: {c.provider_name for c in launcher.registry.pools()} == {"p1", "p2"},
    )
    assert launcher.providers["p1"].pools["main"].ctx.pool_id == p1_id
    rid = h.submit_request(kazoo_client, ["big"])
    req = h.wait_request(kazoo_client, rid)
    assert h.node(kazoo_client, req["nodes"][0])["provider"] == "p2"  # type: ignore[index]


def test_burst_accepted_concurrently_never_exceeds_max_servers(
    env: Env, kazoo_client: KazooClient
) -> None:
    """Accepts run in the background with quota reserved up front: a burst bigger than the
    pool is served in full, and the pool never holds more than max-servers nodes/servers."""
    env.start([h.provider("p1", "cloud1", **{"max-servers": 3})])
    rids = [h.submit_request(kazoo_client, ["small"]) for _ in range(9)]
    served: set[str] = set()
    peak = {"nodes": 0, "servers": 0}

    def serve() -> bool:
        live = [n for n in h.all_nodes(kazoo_client).values() if n["state"] != "deleted"]
        peak["nodes"] = max(peak["nodes"], len(live))
        peak["servers"] = max(peak["servers"], len(h.servers(env.sim, "cloud1")))
        for rid in rids:
            req = h.request(kazoo_client, rid)
            if rid not in served and req is not None and req["state"] == "fulfilled":
                h.accept_and_use(kazoo_client, rid)
                served.add(rid)
        return len(served) == len(rids)

    h.wait_for("every request served", serve, timeout=60)
    assert peak == {"nodes": 3, "servers": 3}

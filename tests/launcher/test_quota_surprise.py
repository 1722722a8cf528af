"""Quota the launcher did not expect: the cloud refuses a create, or the pool is full of idle
nodes of another label (upstream pauses and frees the oldest unused node)."""

from __future__ import annotations

import pytest
from kazoo.client import KazooClient

from tests.fixtures.statsd import StatsdServer, statsd_server  # noqa: F401 (fixture)
from tests.launcher import harness as h
from tests.launcher.env import Env


def test_cloud_quota_error_aborts_node_pauses_and_relaunches(
    env: Env,
    kazoo_client: KazooClient,
    statsd_server: StatsdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATSD_HOST", statsd_server.host)
    monkeypatch.setenv("STATSD_PORT", str(statsd_server.port))
    sim = env.clouds([{"name": "cloud1"}])
    # The launcher reads the cloud's limits once and keeps them (a long cache).
    launcher = env.start([h.provider("p1", "cloud1")], cloud_quota_ttl=3600.0)
    first = h.submit_request(kazoo_client, ["small"])
    assert h.wait_request(kazoo_client, first)["state"] == "fulfilled"

    # The operator lowers the quota behind the launcher's back.
    state = sim.states["cloud1"]
    with state.lock:
        state.quota["instances"] = 1
    second = h.submit_request(kazoo_client, ["small"])
    # The cloud refuses the create: the node is aborted and the handler pauses.
    statsd_server.wait_for("nodepool.launch.provider.p1.error.quota", "c")
    h.wait_for("pool paused", lambda: any(p.paused for p in launcher.registry.pools()))
    req = h.request(kazoo_client, second)
    assert req is not None and req["state"] == "pending"
    assert len(h.servers(sim, "cloud1")) == 1
    # The aborted node goes away; nothing else is left of it.
    h.wait_for(
        "aborted node removed",
        lambda: [n["state"] for n in h.all_nodes(kazoo_client).values()] == ["ready"],
    )

    # Quota frees: the request is still served, by a relaunch.
    h.accept_and_use(kazoo_client, first)
    req = h.wait_request(kazoo_client, second)
    assert req["state"] == "fulfilled"
    nid = req["nodes"][0]
    srv = h.servers(sim, "cloud1")
    assert [s.metadata["nodepool_node_id"] for s in srv] == [nid]
    h.wait_for("pool unpaused", lambda: not any(p.paused for p in launcher.registry.pools()))


def test_full_pool_of_idle_nodes_frees_oldest_for_another_label(
    env: Env, kazoo_client: KazooClient
) -> None:
    sim = env.clouds([{"name": "cloud1"}])
    env.start([h.provider("p1", "cloud1", labels=("small", "big"), **{"max-servers": 2})])
    rids = [h.submit_request(kazoo_client, ["small"]) for _ in range(2)]
    small = []
    for rid in rids:
        small += h.wait_request(kazoo_client, rid)["nodes"]
        kazoo_client.delete(f"/nodepool/requests/{rid}")  # requester gone: nodes go back idle
    h.wait_for(
        "two idle ready small nodes",
        lambda: all(
            (n := h.node(kazoo_client, nid)) and n["state"] == "ready" and not n["allocated_to"]
            for nid in small
        ),
    )
    oldest = min(small, key=lambda nid: h.node(kazoo_client, nid)["state_time"])  # type: ignore[index]

    rid = h.submit_request(kazoo_client, ["big"])
    req = h.wait_request(kazoo_client, rid)
    assert req["state"] == "fulfilled"
    big = h.node(kazoo_client, req["nodes"][0])
    assert big is not None and big["type"] == ["big"] and big["state"] == "ready"
    # The oldest idle node made room; the other one is untouched.
    h.wait_for("oldest node deleted", lambda: h.node(kazoo_client, oldest) is None)
    survivor = next(nid for nid in small if nid != oldest)
    assert h.node(kazoo_client, survivor)["state"] == "ready"  # type: ignore[index]
    h.wait_for("max-servers kept", lambda: len(h.servers(sim, "cloud1")) == 2)

"""statsd: a launch reports counters and timers, the stats leader node gauges."""

from __future__ import annotations

import pytest
from kazoo.client import KazooClient

from tests.fixtures.statsd import StatsdServer, statsd_server  # noqa: F401 (fixture)
from tests.launcher import harness as h
from tests.launcher.env import Env


def test_launch_and_node_state_stats(
    env: Env,
    kazoo_client: KazooClient,
    statsd_server: StatsdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATSD_HOST", statsd_server.host)
    monkeypatch.setenv("STATSD_PORT", str(statsd_server.port))
    env.clouds([{"name": "cloud1"}])
    env.start([h.provider("p1", "cloud1", **{"max-servers": 5})], stats_interval=0.2)
    rid = h.submit_request(kazoo_client, ["small"])
    assert h.wait_request(kazoo_client, rid)["state"] == "fulfilled"

    for key in (
        "nodepool.launch.ready",
        "nodepool.launch.provider.p1.ready",
        "nodepool.launch.requestor.zuul-scheduler-1.ready",
    ):
        assert statsd_server.wait_for(key, "c") == ["1"]
        timings = statsd_server.wait_for(key, "ms")
        assert len(timings) == 1 and float(timings[0]) >= 0
    # Gauges from the stats leader reflect the node's state.
    statsd_server.wait_for("nodepool.nodes.ready", "g", value="1")
    statsd_server.wait_for("nodepool.provider.p1.nodes.ready", "g", value="1")
    statsd_server.wait_for("nodepool.label.small.nodes.ready", "g", value="1")
    statsd_server.wait_for("nodepool.provider.p1.max_servers", "g", value="5")
    assert "0" in statsd_server.find("nodepool.nodes.building", "g")

    h.accept_and_use(kazoo_client, rid)
    h.wait_for("node deleted", lambda: not h.all_nodes(kazoo_client))
    count = len(statsd_server.metrics())
    h.wait_for("a later report", lambda: len(statsd_server.metrics()) > count)
    h.wait_for(
        "ready gauge back to 0",
        lambda: statsd_server.find("nodepool.nodes.ready", "g")[-1] == "0",
    )

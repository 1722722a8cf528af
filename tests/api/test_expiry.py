"""A lease that lapses: its nodes go back (and their servers), its waiting request is
cancelled; the deleter keeps the in-use nodes of a valid lease whose keeper is gone."""

from __future__ import annotations

import time

from kazoo.client import KazooClient

from nodepool_ng import prometheus
from nodepool_ng.zk import locks, paths
from tests.api.conftest import ApiEnv
from tests.launcher import harness as h


def _expiries(token: str) -> float:
    return prometheus.REGISTRY.get_sample_value(
        "nodepool_api_lease_expiries_total", {"token": token}) or 0.0


def test_fulfilled_lease_lapses(api_env: ApiEnv, kazoo_client: KazooClient) -> None:
    api = api_env.start()
    before = _expiries("ci")
    lease_id = api.create(["small"], lease_seconds=3).json()["id"]
    view = api.wait_state(lease_id, ("fulfilled",))
    node_id = view["nodes"][0]["id"]
    h.wait_for("lease counted held", lambda: prometheus.REGISTRY.get_sample_value(
        "nodepool_api_leases_held", {"token": "ci"}) == 1.0)
    # Long-poll: answered at the expiry, not at the end of the wait.
    started = time.monotonic()
    expired = api.call("GET", f"/requests/{lease_id}", params={"wait": 30}).json()
    assert expired["state"] == "expired" and time.monotonic() - started < 10
    h.wait_for("server deleted", lambda: not api_env.servers(), timeout=30)
    h.wait_for("node removed", lambda: h.node(kazoo_client, node_id) is None)
    h.wait_for("expiry counted", lambda: _expiries("ci") == before + 1)
    lease = h.read(kazoo_client, paths.api_lease_path(lease_id))
    assert lease is not None and lease["state"] == "expired" and lease["released"]


def test_waiting_lease_lapses(api_env: ApiEnv, kazoo_client: KazooClient) -> None:
    api = api_env.start(cloud={"boot_delay": 30.0})
    lease_id = api.create(["small"], lease_seconds=2).json()["id"]
    api.wait_state(lease_id, ("expired",), timeout=15)  # shown at once
    h.wait_for("node request cancelled", lambda: h.request(kazoo_client, lease_id) is None)
    h.wait_for("lease record expired", lambda: (h.read(
        kazoo_client, paths.api_lease_path(lease_id)) or {}).get("failure_reason"))
    view = api.call("GET", f"/requests/{lease_id}").json()
    assert view["state"] == "expired" and "ran out before" in view["failure_reason"]


def test_deleter_keeps_nodes_of_a_valid_lease(api_env: ApiEnv,
                                              kazoo_client: KazooClient) -> None:
    """The keeper is stopped and its locks are gone (as when its launcher dies): the
    unlocked in-use nodes stay while the lease is valid, and go once it lapsed."""
    api = api_env.start()
    launcher = api_env.launcher
    assert launcher is not None
    lease_id = api.create(["small"], lease_seconds=6).json()["id"]
    node_id = api.wait_state(lease_id, ("fulfilled",))["nodes"][0]["id"]
    expires = h.read(kazoo_client, paths.api_lease_path(lease_id))["expires"]  # type: ignore[index]
    launcher.lease_keeper.stop()
    launcher.lease_keeper.join(5)
    assert launcher.zk_client is not None
    locks.force_unlock(launcher.zk_client, paths.node_lock_path(node_id))
    locks.force_unlock(launcher.zk_client, paths.api_lease_lock_path(lease_id))
    h.wait_for("node unlocked", lambda: not h.node_locked(kazoo_client, node_id))
    passes = launcher.deleter.passes
    h.wait_for("deleter passes", lambda: launcher.deleter.passes >= passes + 2)
    time.sleep(1.0)
    assert time.time() < expires - 1, "the test machine was too slow to judge"
    node = h.node(kazoo_client, node_id)
    assert node is not None and node["state"] == "in-use"
    assert len(api_env.servers()) == 1
    # Lapsed: nothing keeps it any more (no keeper either: the deleter alone removes it).
    h.wait_for("node deleted after the lease lapsed",
               lambda: h.node(kazoo_client, node_id) is None, timeout=30)
    assert time.time() >= expires
    h.wait_for("server deleted", lambda: not api_env.servers(), timeout=30)

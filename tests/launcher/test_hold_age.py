"""max-hold-age and `hold_expiration`: cleanup deletes held nodes past the
smaller of the two (a numeric string accepted, a bad value ignored) and keeps the others.
Real ZooKeeper + simcloud; nodes are held the way Zuul's autohold does it."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

from nodepool_ng.launcher.hold_age import expired_holds, hold_limit
from nodepool_ng.launcher.service import Launcher
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.simcloud.service import SimCloudService
from tests.launcher import harness as h
from tests.launcher.env import Env

UNSET = object()


def start(env: Env, max_hold_age: int | None = None) -> tuple[Launcher, SimCloudService]:
    sim = env.clouds([{"name": "cloud1"}])
    cfg = env.config([h.provider("p1", "cloud1")])
    if max_hold_age is not None:
        raw = yaml.safe_load(cfg.read_text())
        raw["max-hold-age"] = max_hold_age
        cfg.write_text(yaml.safe_dump(raw))
    launcher = h.start_launcher(cfg, env.clouds_yaml)
    env.launchers.append(launcher)
    return launcher, sim


def held_nodes(kz: KazooClient, count: int) -> list[tuple[str, str]]:
    """(node id, server id) of `count` fresh nodes, accepted by "Zuul" (request deleted)."""
    rid = h.submit_request(kz, ["small"] * count)
    nodes = h.wait_request(kz, rid)["nodes"]
    out = []
    for nid in nodes:
        data = h.node(kz, nid)
        assert data is not None
        out.append((nid, data["external_id"]))
    kz.delete(f"/nodepool/requests/{rid}")
    return out


def hold(kz: KazooClient, nid: str, expiration: Any = UNSET) -> None:
    """Zuul autohold: lock, state `hold` (new state_time), optional hold_expiration, unlock."""
    lock = Lock(kz, f"/nodepool/nodes/{nid}/lock")
    assert lock.acquire(timeout=10)
    try:
        data = h.node(kz, nid)
        assert data is not None
        data.update(state="hold", state_time=time.time(), allocated_to=None,
                    hold_job="t project job .*", comment="held for a test")
        if expiration is not UNSET:
            data["hold_expiration"] = expiration
        kz.set(f"/nodepool/nodes/{nid}", json.dumps(data).encode())
    finally:
        lock.release()


def server_ids(sim: SimCloudService) -> set[str]:
    return {s.id for s in h.servers(sim, "cloud1")}


def test_hold_expiration_deletes_held_nodes_others_kept(
    env: Env, kazoo_client: KazooClient
) -> None:
    kz = kazoo_client
    launcher, sim = start(env)  # no max-hold-age
    (a, a_srv), (b, b_srv), (c, c_srv), (d, d_srv), (e, e_srv) = held_nodes(kz, 5)
    hold(kz, a, 1)
    hold(kz, b, "2")  # a string, as some writers store it
    hold(kz, c)  # no expiration
    hold(kz, d, "soon")  # bad: ignored, as upstream
    hold(kz, e, 0)  # 0: no expiration
    h.wait_for("node with hold_expiration 1 deleted", lambda: h.node(kz, a) is None)
    h.wait_for("node with hold_expiration '2' deleted", lambda: h.node(kz, b) is None)
    h.wait_for("their servers deleted", lambda: not {a_srv, b_srv} & server_ids(sim))
    passes = launcher.cleanup.passes
    h.wait_for("two more cleanup passes", lambda: launcher.cleanup.passes >= passes + 2)
    for nid in (c, d, e):
        data = h.node(kz, nid)
        assert data is not None and data["state"] == "hold", nid
    assert {c_srv, d_srv, e_srv} <= server_ids(sim)


def test_max_hold_age_deletes_held_nodes_and_caps_longer_expirations(
    env: Env, kazoo_client: KazooClient
) -> None:
    kz = kazoo_client
    launcher, sim = start(env, max_hold_age=1)
    (a, a_srv), (b, b_srv), (c, _) = held_nodes(kz, 3)
    hold(kz, a)
    hold(kz, b, 3600)  # longer than max-hold-age: the config's limit wins
    h.wait_for("held nodes deleted", lambda: h.node(kz, a) is None and h.node(kz, b) is None)
    h.wait_for("their servers deleted", lambda: not {a_srv, b_srv} & server_ids(sim))
    # Only held nodes expire: the READY one stays.
    passes = launcher.cleanup.passes
    h.wait_for("two more cleanup passes", lambda: launcher.cleanup.passes >= passes + 2)
    data = h.node(kz, c)
    assert data is not None and data["state"] == "ready"


# -- pure parts --------------------------------------------------------------------------
def test_hold_limit_is_the_smaller_positive_value() -> None:
    assert hold_limit(None, None) is None
    assert hold_limit(0, 0) is None
    assert hold_limit(5, None) == 5
    assert hold_limit(None, 7) == 7
    assert hold_limit(5, 7) == 5
    assert hold_limit(9, 7) == 7
    assert hold_limit(0, 7) == 7
    assert hold_limit(-1, None) is None


def test_expired_holds_filters_state_provider_and_age() -> None:
    now = 1000.0

    def held(nid: str, age: float, exp: Any = None, provider: str = "p1",
             state: NodeState = NodeState.HOLD) -> Node:
        return Node.from_dict(nid, {"state": str(state), "state_time": now - age,
                                    "provider": provider, "hold_expiration": exp})

    nodes = [
        held("1", 10, 5),  # expired by its own limit
        held("2", 3, 5),  # not yet
        held("3", 10, "5"),  # string coerced
        held("4", 10, "x"),  # bad: no limit of its own; max-hold-age 60 not reached
        held("5", 100),  # max-hold-age reached
        held("6", 100, provider="other"),  # not our provider
        held("7", 100, 5, state=NodeState.READY),  # not held
    ]
    assert expired_holds(nodes, 60, {"p1"}, now) == [("1", 5.0), ("3", 5.0), ("5", 60.0)]
    assert expired_holds(nodes, None, {"p1"}, now) == [("1", 5.0), ("3", 5.0)]

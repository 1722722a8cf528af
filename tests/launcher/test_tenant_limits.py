"""tenant-resource-limits: a tenant's request waits, `requested` and
unlocked, while the tenant's nodes plus the request would exceed its limits; other tenants
are unaffected; freeing the tenant's node lets it in. Real ZooKeeper + simcloud."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient

from nodepool_ng.config.models import TenantResourceLimitConfig
from nodepool_ng.launcher.ledger import PoolLedger
from nodepool_ng.launcher.service import Launcher
from nodepool_ng.launcher.tenant_limits import limit_gauges, tenant_pass, tenant_usage
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.quota import Quota
from nodepool_ng.model.request import NodeRequest
from tests.fixtures.statsd import StatsdServer, statsd_server  # noqa: F401 (fixture)
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h
from tests.launcher.env import Env

SMALL = Quota.of(cores=1, instances=1, ram=1024)  # simcloud's `small` flavor
BIG = Quota.of(cores=2, instances=1, ram=4096)  # simcloud's `medium` flavor


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


def start(env: Env, limits: list[dict[str, Any]]) -> Launcher:
    env.clouds([{"name": "cloud1"}])
    prov = h.provider("p1", "cloud1", labels=("small", "big"))
    prov["pools"][0]["labels"][1]["flavor-name"] = "medium"
    cfg = env.config([prov])
    raw = yaml.safe_load(cfg.read_text())
    raw["tenant-resource-limits"] = limits
    cfg.write_text(yaml.safe_dump(raw))
    launcher = h.start_launcher(cfg, env.clouds_yaml)
    env.launchers.append(launcher)
    return launcher


def submit(kz: KazooClient, labels: list[str], tenant: str | None) -> str:
    now = time.time()
    data = {
        "requestor_data": {"tenant_name": tenant, "job_name": "job"},
        "node_types": labels,
        "requestor": "zuul-scheduler-1",
        "created_time": now,
        "provider": None,
        "state": "requested",
        "state_time": now,
        "relative_priority": 0,
        "event_id": None,
        "tenant_name": tenant,
    }
    path = kz.create("/nodepool/requests/200-", json.dumps(data).encode(), makepath=True,
                     sequence=True)
    return path.rsplit("/", 1)[-1]


def assert_waiting(kz: KazooClient, rid: str) -> None:
    """Deferred, not accepted nor declined: requested, unlocked, no nodes allocated to it."""
    req = h.request(kz, rid)
    assert req is not None
    assert req["state"] == "requested"
    assert req.get("declined_by", []) == []
    lock = f"/nodepool/requests-lock/{rid}"
    assert not (kz.exists(lock) and kz.get_children(lock))
    assert not [n for n in h.all_nodes(kz).values() if n["allocated_to"] == rid]


def test_max_servers_defers_second_request_until_first_node_is_deleted(
    env: Env,
    kazoo_client: KazooClient,
    statsd_server: StatsdServer,  # noqa: F811
) -> None:
    kz = kazoo_client
    start(env, [{"tenant-name": "limited", "max-servers": 1}])
    first = submit(kz, ["small"], "limited")
    second = submit(kz, ["small"], "limited")
    other = submit(kz, ["small"], "other")
    untenanted = submit(kz, ["small"], None)
    done = h.wait_request(kz, first)
    assert done["state"] == "fulfilled"
    for rid in (other, untenanted):
        assert h.wait_request(kz, rid)["state"] == "fulfilled"
    nid = done["nodes"][0]
    assert h.node(kz, nid)["tenant_name"] == "limited"  # type: ignore[index]
    # Passes that saw the waiting request again: another tenant's request served meanwhile.
    later = submit(kz, ["small", "small"], "other")
    assert h.wait_request(kz, later)["state"] == "fulfilled"
    assert_waiting(kz, second)
    # The tenant's node is used and deleted: the waiting request gets its turn.
    h.accept_and_use(kz, first)
    got = h.wait_request(kz, second)
    assert got["state"] == "fulfilled"
    assert h.node(kz, nid) is None
    assert h.node(kz, got["nodes"][0])["tenant_name"] == "limited"  # type: ignore[index]
    statsd_server.wait_for("nodepool.tenant_limits.limited.instances", "g", value="1")


def test_max_cores_counts_flavor_cores(env: Env, kazoo_client: KazooClient) -> None:
    kz = kazoo_client
    start(env, [{"tenant-name": "limited", "max-cores": 2}])
    big = submit(kz, ["big"], "limited")  # 2 cores: the whole limit
    assert h.wait_request(kz, big)["state"] == "fulfilled"
    small = submit(kz, ["small"], "limited")  # 1 more core: over
    other = submit(kz, ["big", "big"], "other")
    assert h.wait_request(kz, other)["state"] == "fulfilled"
    assert_waiting(kz, small)
    h.accept_and_use(kz, big)
    assert h.wait_request(kz, small)["state"] == "fulfilled"


def test_request_larger_than_tenant_limit_waits_and_pool_keeps_serving(
    env: Env, kazoo_client: KazooClient
) -> None:
    kz = kazoo_client
    start(env, [{"tenant-name": "limited", "max-servers": 1}])
    too_big = submit(kz, ["small", "small"], "limited")
    fits = submit(kz, ["small"], "limited")  # later in order, but within the limit
    assert h.wait_request(kz, fits)["state"] == "fulfilled"
    other = submit(kz, ["small"], "other")
    assert h.wait_request(kz, other)["state"] == "fulfilled"
    assert_waiting(kz, too_big)


# -- pure parts --------------------------------------------------------------------------
LIMITS = {"t": TenantResourceLimitConfig("t", {"max-servers": 2, "max-cores": 2})}


def node(nid: str, tenant: str | None, cost: Quota, allocated_to: str | None = None,
         state: NodeState = NodeState.READY) -> Node:
    return Node(id=nid, state=state, tenant_name=tenant, resources=cost.as_dict(),
                allocated_to=allocated_to)


def req(rid: str, labels: list[str], tenant: str | None = "t") -> NodeRequest:
    return NodeRequest(id=rid, node_types=labels, tenant_name=tenant)


def cost(label: str) -> Quota:
    return {"small": SMALL, "big": BIG}[label]


def test_usage_counts_deleting_but_not_deleted_or_unrecorded_nodes() -> None:
    nodes = [
        node("1", "t", SMALL),
        node("2", "t", SMALL, state=NodeState.DELETING),
        node("3", "t", SMALL, state=NodeState.DELETED),
        node("4", "x", BIG),
        Node(id="5", state=NodeState.READY, tenant_name="t"),  # no resources: not counted
    ]
    usage = tenant_usage(nodes, {"t"})
    assert usage["t"].get("instances") == 2 and usage["t"].get("cores") == 2
    assert "x" not in usage


def test_pass_counts_promises_until_the_cache_shows_their_nodes() -> None:
    ledger = PoolLedger()
    nodes: list[Node] = []
    labels = {"small", "big"}
    tp = tenant_pass(LIMITS, lambda: nodes, ledger, cost, labels)
    assert tp.fits(req("a", ["small"]))
    tp.promise(req("a", ["small"]))
    assert tp.fits(req("b", ["small"]))
    tp.promise(req("b", ["small"]))
    assert not tp.fits(req("c", ["small"]))  # 3 servers > 2
    assert tp.fits(req("d", ["small"], tenant="x"))  # no limits for x
    assert tp.fits(req("e", ["small"], tenant=None))
    # Next pass, a and b still being accepted, the cache shows a's node only: no double count.
    nodes.append(node("1", "t", SMALL, allocated_to="a"))
    tp = tenant_pass(LIMITS, lambda: nodes, ledger, cost, labels)
    assert tp.usage["t"].get("instances") == 2
    assert not tp.fits(req("c", ["small"]))
    # b's accept failed (no longer in flight): its promise is gone.
    ledger.close_request("b")
    tp = tenant_pass(LIMITS, lambda: nodes, ledger, cost, labels)
    assert tp.usage["t"].get("instances") == 1
    assert tp.fits(req("c", ["small"]))
    assert not tp.fits(req("f", ["big"]))  # 1 + 2 cores > 2 (servers: 2, fine)
    # Labels the pool does not serve do not count (the pool declines them).
    assert tp.fits(req("g", ["small", "gpu"]))


def test_no_limits_never_reads_the_node_cache() -> None:
    def boom() -> list[Node]:
        raise AssertionError("node cache read without tenant limits")

    tp = tenant_pass({}, boom, PoolLedger(), cost, {"small"})
    assert tp.fits(req("a", ["small"]))


def test_limit_gauges_use_resource_names() -> None:
    limits = {"te.n": TenantResourceLimitConfig("te.n", {"max-servers": 2, "max-gpus": 4})}
    assert limit_gauges(limits) == {
        "nodepool.tenant_limits.te_n.instances": 2.0,
        "nodepool.tenant_limits.te_n.gpus": 4.0,
    }

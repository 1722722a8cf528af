"""Component registry and stats election, including re-registration after session expiry."""

from __future__ import annotations

import json
from collections.abc import Callable

from kazoo.client import KazooClient

from nodepool_ng.model.component import (
    ComponentState,
    LauncherComponent,
    PoolComponent,
)
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.components import ComponentRegistry
from nodepool_ng.zk.election import LeaderElection
from tests.zk.util import expire_session, wait_for


def test_register_update_and_list(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient,
    make_client: Callable[..., ZooKeeperClient],
) -> None:
    registry = ComponentRegistry(zk_client)
    launcher = LauncherComponent(hostname="host1", version="0.1")
    pool = PoolComponent(hostname="host1", id="host1-PoolWorker.p-main-abc", name="main",
                         provider_name="p", supported_labels=["small"])
    registry.register(launcher)
    path = registry.register(pool)
    assert path.startswith("/nodepool/components/pool/host1") and path[-10:].isdigit()
    stat = kazoo_client.exists(path)
    assert stat is not None and stat.ephemeralOwner != 0

    registry.update(pool, paused=True, supported_labels=["small", "large"],
                    state=ComponentState.RUNNING)
    data = json.loads(kazoo_client.get(path)[0])
    assert data["paused"] is True and data["supported_labels"] == ["small", "large"]
    assert data["state"] == "running" and data["kind"] == "pool" and data["model_api"] == 0

    # Another launcher sees it, through a direct read and through its cache.
    observer = ComponentRegistry(make_client())
    assert [p.id for p in observer.pools()] == [pool.id]
    assert observer.start_cache(timeout=10)
    try:
        assert observer.pool_ids() == {pool.id}
        assert [c.hostname for c in observer.components("launcher")] == ["host1"]
        registry.update(pool, priority=5)
        wait_for(lambda: [p.priority for p in observer.pools()] == [5], what="pool update")
        registry.unregister(pool)
        wait_for(lambda: observer.pools() == [], what="pool gone")
    finally:
        observer.stop_cache()


def test_reregister_after_session_expiry(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    registry = ComponentRegistry(zk_client)
    pool = PoolComponent(hostname="h", id="h-PoolWorker.p-main-1", name="main",
                         provider_name="p", supported_labels=["a"])
    old_path = registry.register(pool)
    generation = zk_client.session_generation
    expire_session(zk_client)
    assert zk_client.session_generation == generation + 1
    wait_for(lambda: pool.path != old_path and kazoo_client.exists(pool.path or "x"),
             what="re-registration")
    assert not kazoo_client.exists(old_path)
    data = json.loads(kazoo_client.get(pool.path)[0])
    assert data["id"] == pool.id and data["supported_labels"] == ["a"]
    # Updates go to the new znode.
    registry.update(pool, paused=True)
    assert json.loads(kazoo_client.get(pool.path)[0])["paused"] is True


def test_stats_election_single_leader_and_failover(
    make_client: Callable[..., ZooKeeperClient],
) -> None:
    first = LeaderElection(make_client(), identifier="one")
    second = LeaderElection(make_client(), identifier="two")
    first.start()
    assert first.wait_leader(10)
    second.start()
    assert not second.is_leader
    first.stop()
    assert second.wait_leader(10)
    assert not first.is_leader
    second.stop()

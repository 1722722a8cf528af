"""The lease keeper on its own (real ZooKeeper, no cloud): finished leases are removed
after the retention; a lease is kept by one keeper at a time and taken over when its
owner's session ends; an API node request left without its lease is deleted."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from nodepool_ng.api import keeper as keeper_module
from nodepool_ng.api.keeper import LeaseKeeper
from nodepool_ng.model.lease import API_REQUESTOR_DATA, Lease, LeaseState
from nodepool_ng.model.request import NodeRequest
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.leases import LeaseStore
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h


class Side:
    """One process's session, stores and keeper."""

    def __init__(self, zk: ZooKeeperChroot, name: str, retention: float) -> None:
        self.client = ZooKeeperClient(zk.hosts, session_timeout=2.0)
        self.client.start()
        self.leases = LeaseStore(self.client)
        self.requests = RequestStore(self.client)
        self.nodes = NodeStore(self.client)
        for store in (self.leases, self.requests, self.nodes):
            store.start_cache()
        self.keeper = LeaseKeeper(self.leases, self.requests, self.nodes, name,
                                  retention=retention)
        self.leases.add_listener(self.keeper.on_lease)
        self.requests.add_listener(self.keeper.on_request)
        self.keeper.start()

    def stop(self) -> None:
        self.keeper.stop()
        self.keeper.join(5)
        for store in (self.leases, self.requests, self.nodes):
            store.stop_cache()
        self.client.stop()


@pytest.fixture
def sides(zk_chroot: ZooKeeperChroot) -> Iterator[list[Side]]:
    made = [Side(zk_chroot, name, retention=1.0) for name in ("keeper-a", "keeper-b")]
    try:
        yield made
    finally:
        for side in made:
            if side.client.kazoo.connected:
                side.stop()


def test_finished_lease_removed_after_retention(sides: list[Side]) -> None:
    store = sides[0].leases
    store.create(Lease(id="200-0000000007", requestor="ci", labels=["small"],
                       state=LeaseState.RETURNED, released=True, expires=time.time()))
    assert store.exists("200-0000000007")
    started = time.monotonic()
    h.wait_for("finished lease removed", lambda: not store.exists("200-0000000007"), 10)
    assert time.monotonic() - started >= 0.5  # not at once: clients may still read it


def test_one_owner_and_takeover(sides: list[Side]) -> None:
    a, b = sides
    request_id = a.requests.submit(NodeRequest(node_types=["small"], requestor="ci"), "200")
    a.leases.create(Lease(id=request_id, requestor="ci", labels=["small"],
                          lease_seconds=60, expires=time.time() + 60))
    h.wait_for("one keeper owns it", lambda: a.keeper.owned() or b.keeper.owned())
    time.sleep(0.3)
    assert len(a.keeper.owned() + b.keeper.owned()) == 1
    owner, other = (a, b) if a.keeper.owned() else (b, a)
    owner.stop()  # its session ends: its lock goes
    h.wait_for("the other keeper takes it", lambda: other.keeper.owned() == [request_id])
    # No launcher serves the request here: it stays requested, the lease waiting.
    assert other.leases.get(request_id).state is LeaseState.REQUESTED


def test_api_request_without_lease_deleted(zk_chroot: ZooKeeperChroot,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keeper_module, "ORPHAN_AGE", 0.5)
    monkeypatch.setattr(keeper_module, "ORPHAN_CHECK", 0.2)
    side = Side(zk_chroot, "keeper-a", retention=60.0)
    try:
        orphan = side.requests.submit(NodeRequest(
            node_types=["small"], requestor="ci", requestor_data=dict(API_REQUESTOR_DATA)))
        zuuls = side.requests.submit(NodeRequest(
            node_types=["small"], requestor="zuul", requestor_data={"job_name": "x"}))
        h.wait_for("the API request without a lease deleted",
                   lambda: not side.requests.exists(orphan), 10)
        assert side.requests.exists(zuuls)
    finally:
        side.stop()

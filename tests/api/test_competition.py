"""Zuul's requests (written to ZooKeeper as Zuul writes them) and the REST API's compete for
one small pool (max-servers 2): both kinds are served in one order, by request id
(`<priority>-<sequence>`: lower priority number first, then the sequence), and none starves.

The pool is kept full so that the requests queue: two nodes held in use by Zuul, then a
blocker request (priority 000) the launcher accepts and pauses on while the competitors are
written, interleaved. From then on one slot turns over at a time (the other stays held), so
each freed slot goes to exactly one request: the order in which they are fulfilled is the
launcher's order."""

from __future__ import annotations

import json

from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

from tests.api.conftest import Api, ApiEnv
from tests.launcher import harness as h

# (kind, priority), in the order they are written.
COMPETITORS = [("zuul", "300"), ("api", "300"), ("zuul", "100"), ("api", "100"),
               ("api", "200"), ("zuul", "200"), ("api", "050"), ("zuul", "300")]


def hold(kz: KazooClient, request_id: str) -> list[Lock]:
    """Zuul accepts and keeps its nodes in use (a running job): the locks to release."""
    request = h.wait_request(kz, request_id)
    assert request["state"] == "fulfilled", request
    locks = []
    for node_id in request["nodes"]:
        lock = Lock(kz, f"/nodepool/nodes/{node_id}/lock")
        assert lock.acquire(timeout=10)
        locks.append(lock)
        data = h.node(kz, node_id)
        assert data is not None
        data["state"] = "in-use"
        kz.set(f"/nodepool/nodes/{node_id}", json.dumps(data).encode())
    kz.delete(f"/nodepool/requests/{request_id}")
    return locks


def release(kz: KazooClient, locks: list[Lock]) -> None:
    """The job is done: its nodes `used` and unlocked (the launcher deletes them)."""
    for lock in locks:
        node_id = lock.path.split("/")[-2]
        data = h.node(kz, node_id)
        assert data is not None
        data["state"] = "used"
        kz.set(f"/nodepool/nodes/{node_id}", json.dumps(data).encode())
        lock.release()


def fulfilled(kz: KazooClient, api: Api, kind: str, request_id: str) -> bool:
    if kind == "zuul":
        request = h.request(kz, request_id)
        return request is not None and request["state"] == "fulfilled"
    lease = api.call("GET", f"/requests/{request_id}").json()
    assert lease["state"] in ("requested", "pending", "fulfilled"), lease
    return bool(lease["state"] == "fulfilled")


def test_zuul_and_api_requests_served_in_priority_order(
        api_env: ApiEnv, kazoo_client: KazooClient) -> None:
    kz = kazoo_client
    api = api_env.start(providers=[h.provider("p1", "cloud1", ("small",),
                                              **{"max-servers": 2})])
    held = [hold(kz, h.submit_request(kz, ["small"])) for _ in range(2)]
    blocker = h.submit_request(kz, ["small"], priority="000")
    h.wait_request(kz, blocker, ("pending",))  # accepted at quota: the pool pauses on it

    kinds: dict[str, str] = {}
    for kind, priority in COMPETITORS:
        if kind == "zuul":
            request_id = h.submit_request(kz, ["small"], priority=priority)
        else:
            response = api.create(["small"], lease_seconds=300, priority=priority)
            assert response.status_code == 201, response.text
            request_id = response.json()["id"]
        assert request_id.startswith(f"{priority}-")
        kinds[request_id] = kind
    expected = sorted(kinds, key=lambda rid: (rid[:3], int(rid[4:])))
    # Both kinds are mixed in the expected order (the test means something).
    assert [kinds[rid] for rid in expected] == ["api", "zuul", "api", "api", "zuul", "zuul",
                                               "api", "zuul"]

    release(kz, held.pop())  # one slot turns over from here on
    slot = hold(kz, blocker)
    order: list[str] = []
    while len(order) < len(kinds):
        release(kz, slot)
        waiting = [rid for rid in kinds if rid not in order]
        served = h.wait_for(
            f"one of {waiting} fulfilled",
            lambda waiting=waiting: [rid for rid in waiting if fulfilled(kz, api, kinds[rid], rid)],
            timeout=30)
        assert len(served) == 1, f"more than one request got the freed slot: {served}"
        [request_id] = served
        order.append(request_id)
        if kinds[request_id] == "zuul":
            slot = hold(kz, request_id)
        else:
            returned = api.call("DELETE", f"/requests/{request_id}")  # its keeper gives
            assert returned.status_code == 200, returned.text  # the node back
            slot = []
    assert order == expected, (
        f"fulfilled in the order {[(rid, kinds[rid]) for rid in order]}")
    release(kz, slot)
    release(kz, held.pop())

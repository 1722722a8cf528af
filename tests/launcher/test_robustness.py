"""Bad input and unlucky timing must not stop, wedge or corrupt a pool (issue 8, defects 1, 2).

Real ZooKeeper and simcloud; Zuul's side is plain kazoo writing what a buggy or hostile
requester could write.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kazoo.client import KazooClient

from tests.launcher import harness as h
from tests.launcher.env import Env


def _good_request(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node_types": ["small"],
        "requestor": "zuul-scheduler-1",
        "requestor_data": {},
        "state": "requested",
        "state_time": 1.0,
        "provider": None,
        "relative_priority": 0,
        "tenant_name": "t",
    }
    data.update(changes)
    return data


def _write(kz: KazooClient, name: str, data: Any, sequence: bool = False) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    path = kz.create(f"/nodepool/requests/{name}", raw, makepath=True, sequence=sequence)
    return path.rsplit("/", 1)[-1]


# Requests with a good name whose fields are wrong: failed, with the field named.
MALFORMED_FIELDS = [
    ({"node_types": [{"a": 1}]}, "node_types"),
    ({"node_types": [1, None]}, "node_types"),
    ({"node_types": "small"}, "node_types"),
    ({"declined_by": "somebody"}, "declined_by"),
    ({"relative_priority": "high"}, "relative_priority"),
    ({"reuse": "no"}, "reuse"),
    ({"provider": ["p1"]}, "provider"),
]


def test_malformed_requests_fail_alone_and_good_ones_are_served(
    env: Env, kazoo_client: KazooClient
) -> None:
    env.clouds([{"name": "cloud1"}])
    env.start([h.provider("p1", "cloud1")])
    kz = kazoo_client
    bad = {_write(kz, "200-", _good_request(**fields), sequence=True): field
           for fields, field in MALFORMED_FIELDS}
    # Names that are no request id at all (upstream's sort would raise on them): ignored.
    ignored = [_write(kz, name, _good_request())
               for name in ("garbage", "1-0000000001", "1000-0000000001")]
    ignored.append(_write(kz, "200-", b"not json", sequence=True))

    good = h.submit_request(kz, ["small"])
    assert h.wait_request(kz, good)["state"] == "fulfilled"

    for rid, field in bad.items():
        req = h.wait_request(kz, rid, states=("failed",))
        assert field in req["failure_reason"], (rid, req)
    for rid in ignored:
        raw, _ = kz.get(f"/nodepool/requests/{rid}")
        assert b"failed" not in raw, rid

    # Still serving afterwards, with every bad znode in place.
    again = h.submit_request(kz, ["small"])
    assert h.wait_request(kz, again)["state"] == "fulfilled"


def test_malformed_request_keeps_the_requesters_fields(
    env: Env, kazoo_client: KazooClient
) -> None:
    env.clouds([{"name": "cloud1"}])
    env.start([h.provider("p1", "cloud1")])
    rid = _write(kazoo_client, "200-", _good_request(node_types="small", extra_key=7),
                 sequence=True)
    req = h.wait_request(kazoo_client, rid, states=("failed",))
    assert req["node_types"] == "small"
    assert req["extra_key"] == 7
    assert req["requestor"] == "zuul-scheduler-1"
    assert "node_types" in req["failure_reason"]


@pytest.mark.parametrize("max_servers", [1, 2])
def test_a_pool_keeps_its_slots_when_nodes_come_and_go_between_passes(
    env: Env, kazoo_client: KazooClient, max_servers: int
) -> None:
    """One request at a time, each node used and deleted before the next request: the node
    is created and gone between two planning passes. Every request must still be served
    (each such node used to keep its max-servers slot reserved for good)."""
    env.clouds([{"name": "cloud1"}])
    env.start([h.provider("p1", "cloud1", **{"max-servers": max_servers})])
    kz = kazoo_client
    for _ in range(max_servers + 3):
        rid = h.submit_request(kz, ["small"])
        req = h.wait_request(kz, rid, timeout=30)
        assert req["state"] == "fulfilled", req
        for nid in h.accept_and_use(kz, rid):
            h.wait_for(f"node {nid} deleted", lambda nid=nid: h.node(kz, nid) is None)


def _pool_passes(launcher: Any) -> int:
    return sum(w.passes for w in launcher._pool_workers())


def test_full_pools_sleep_while_requests_wait(env: Env, kazoo_client: KazooClient) -> None:
    """Two full pools and a dozen waiting requests: nothing changes, so the pool workers
    must sleep (they used to pass hundreds of times a second)."""
    env.clouds([{"name": "cloud1"}, {"name": "cloud2"}])
    launcher = env.start([h.provider("p1", "cloud1", **{"max-servers": 2}),
                          h.provider("p2", "cloud2", **{"max-servers": 1})])
    kz = kazoo_client
    held = [h.submit_request(kz, ["small"]) for _ in range(3)]
    for rid in held:
        assert h.wait_request(kz, rid)["state"] == "fulfilled"
    waiting = [h.submit_request(kz, ["small"]) for _ in range(12)]
    # Let the pools take in the new requests (accept, pause, yield) and settle.
    h.wait_for("a pool paused on a waiting request",
               lambda: any(h.request(kz, rid)["state"] == "pending" for rid in waiting))
    time.sleep(2.0)
    before = _pool_passes(launcher)
    time.sleep(3.0)
    passes = _pool_passes(launcher) - before
    assert passes <= 10, f"{passes} pool passes in 3 s with nothing changing"
    # And they still serve the waiting requests as soon as nodes come back.
    h.accept_and_use(kz, held[0])
    h.wait_for("a waiting request fulfilled",
               lambda: any(h.request(kz, rid)["state"] == "fulfilled" for rid in waiting),
               timeout=30)

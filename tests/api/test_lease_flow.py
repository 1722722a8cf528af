"""A lease over HTTP against a running launcher (real ZooKeeper, simcloud): requested,
fulfilled with addresses, renewed, returned; the servers go."""

from __future__ import annotations

import time

from kazoo.client import KazooClient

from tests.api.conftest import ApiEnv
from tests.launcher import harness as h


def test_create_wait_renew_return(api_env: ApiEnv, kazoo_client: KazooClient) -> None:
    api = api_env.start()
    response = api.create(["small", "big"], lease_seconds=60)
    assert response.status_code == 201, response.text
    lease = response.json()
    lease_id = lease["id"]
    assert response.headers["Location"] == f"/api/v1/requests/{lease_id}"
    assert lease["state"] in ("requested", "pending") and lease["requestor"] == "ci"
    # An ordinary node request, named by the token (never its secret).
    request = h.request(kazoo_client, lease_id)
    assert request is not None and request["requestor"] == "ci"
    assert request["node_types"] == ["small", "big"]

    view = api.wait_state(lease_id, ("fulfilled",))
    assert [n["label"] for n in view["nodes"]] == ["small", "big"]
    for node in view["nodes"]:
        assert node["interface_ip"] and node["provider"] == "p1"
        assert node["username"] and node["connection_port"] == 22
    node_ids = [n["id"] for n in view["nodes"]]
    # Accepted as Zuul accepts: nodes locked and in-use, the request gone.
    h.wait_for("request deleted", lambda: h.request(kazoo_client, lease_id) is None)
    for node_id in node_ids:
        node = h.node(kazoo_client, node_id)
        assert node is not None and node["state"] == "in-use"
        assert node["user_data"]["api_lease"] == lease_id
        assert h.node_locked(kazoo_client, node_id)
    assert len(api_env.servers()) == 2

    before = view["expires"]
    time.sleep(0.05)
    renewed = api.call("POST", f"/requests/{lease_id}/renew", json={"lease_seconds": 120})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["expires"] > before + 50
    assert renewed.json()["lease_seconds"] == 120

    listed = api.call("GET", "/requests").json()["requests"]
    assert [item["id"] for item in listed] == [lease_id]

    returned = api.call("DELETE", f"/requests/{lease_id}")
    assert returned.status_code == 200 and returned.json()["state"] == "returned"
    h.wait_for("servers deleted in the cloud", lambda: not api_env.servers(), timeout=30)
    h.wait_for("node records removed",
               lambda: all(h.node(kazoo_client, n) is None for n in node_ids))
    assert api.call("GET", f"/requests/{lease_id}").json()["state"] == "returned"


def test_failed_request_fails_the_lease(api_env: ApiEnv, kazoo_client: KazooClient) -> None:
    api = api_env.start(cloud={"faults": {"server_error_rate": 1.0}},
                        providers=[h.provider("p1", "cloud1", ("small", "big"),
                                              **{"launch-retries": 1})])
    lease_id = api.create(["small"]).json()["id"]
    view = api.wait_state(lease_id, ("failed",))
    assert view["nodes"] == [] and "p1" in view["failure_reason"], view
    h.wait_for("node request deleted", lambda: h.request(kazoo_client, lease_id) is None)
    # A failed lease holds nothing: it does not count against max-nodes, nor renews.
    assert api.call("POST", f"/requests/{lease_id}/renew").status_code == 409

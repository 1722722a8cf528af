"""What the API refuses, over HTTP against a running launcher: 401, 400 naming the field,
403, 404, 409, 429, and the API off without tokens (upstream's paths unchanged)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from nodepool_ng import prometheus
from nodepool_ng.api.app import MAX_BODY
from nodepool_ng.cmd import admin
from tests.api.conftest import LIMITED_SECRET, SECRET, ApiEnv
from tests.launcher import harness as h


def _refused(response: requests.Response, status: int, field: str | None,
             words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["field"] == field, body
    assert words in body["error"], body
    return body


def test_refusals(api_env: ApiEnv) -> None:
    api = api_env.start(providers=[h.provider("p1", "cloud1", ("small", "big"),
                                              **{"max-servers": 3})])
    before = prometheus.REGISTRY.get_sample_value(
        "nodepool_api_requests_total", {"token": "-", "status": "401"}) or 0.0

    # 401: no token, another scheme, an unknown token.
    response = api.call("GET", "/requests", secret=None)
    _refused(response, 401, "Authorization", "an API token is required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    _refused(api.call("GET", "/requests", secret=None, headers={"Authorization": "Basic x"}),
             401, "Authorization", "Bearer")
    _refused(api.call("GET", "/requests", secret=SECRET + "x"), 401, "Authorization",
             "unknown API token")
    after = prometheus.REGISTRY.get_sample_value(
        "nodepool_api_requests_total", {"token": "-", "status": "401"})
    assert after == before + 3

    # 400, naming the field (counted under the token that asked).
    refused_before = prometheus.REGISTRY.get_sample_value(
        "nodepool_api_requests_total", {"token": "ci", "status": "400"}) or 0.0
    _refused(api.create(["huge"]), 400, "labels", "unknown label 'huge'")
    _refused(api.create([]), 400, "labels", "non-empty list")
    _refused(api.call("POST", "/requests", json={"lease_seconds": 5}), 400, "labels",
             "required")
    _refused(api.create(["small"] * 4, provider="p1"), 400, "labels",
             "more than any pool of provider 'p1' serves at once (at most 3)")
    _refused(api.create(["small"], lease_seconds="10"), 400, "lease_seconds",  # type: ignore[arg-type]
             "not an integer")
    _refused(api.create(["small"], lease_seconds=0), 400, "lease_seconds", "between 1")
    _refused(api.create(["small"], provider="nowhere"), 400, "provider", "unknown provider")
    _refused(api.create(["small"], priority="high"), 400, "priority", "not a priority")
    _refused(api.create(["small"], colour="red"), 400, "colour", "unknown field")
    _refused(api.call("POST", "/requests", data=b"{not json"), 400, "body", "not JSON")
    _refused(api.call("POST", "/requests", data=b" " * (MAX_BODY + 1)), 413, "body",
             "more than")
    _refused(api.call("GET", "/requests/100-0000000001", params={"wait": "soon"}), 400,
             "wait", "not a number")
    _refused(api.call("GET", "/requests/100-0000000001", params={"wait": 600}), 400,
             "wait", "between 0 and 60")
    assert prometheus.REGISTRY.get_sample_value(
        "nodepool_api_requests_total", {"token": "ci", "status": "400"}) == refused_before + 12

    # 404: unknown ids (also names that are no request id), unknown paths.
    _refused(api.call("GET", "/requests/100-0000009999"), 404, "id", "no request")
    _refused(api.call("GET", "/requests/..%2F..%2Fnodes"), 404, "id", "no request")
    _refused(api.call("DELETE", "/requests/100-0000009999"), 404, "id", "no request")
    _refused(api.call("GET", "/nothing-here"), 404, None, "not found")

    # 403: labels the token may not use; another token's lease.
    _refused(api.create(["big"], secret=LIMITED_SECRET), 403, "labels", "may not request big")
    mine = api.create(["small"], lease_seconds=30)
    assert mine.status_code == 201
    lease_id = mine.json()["id"]
    _refused(api.call("GET", f"/requests/{lease_id}", secret=LIMITED_SECRET), 403, "id",
             "another token")
    _refused(api.call("DELETE", f"/requests/{lease_id}", secret=LIMITED_SECRET), 403, "id",
             "another token")
    _refused(api.call("GET", "/requests", secret=LIMITED_SECRET, params={"requestor": "ci"}),
             403, "requestor", "only its own")
    assert api.call("GET", "/requests", secret=LIMITED_SECRET).json() == {"requests": []}

    # 429: max-nodes counts what the token holds and has requested.
    first = api.create(["small"], secret=LIMITED_SECRET)
    assert first.status_code == 201
    body = _refused(api.create(["small", "small"], secret=LIMITED_SECRET), 429, "labels",
                    "holds or has requested 1 node(s); 2 more would exceed its max-nodes (2)")
    assert LIMITED_SECRET not in body["error"]
    assert api.create(["small"], secret=LIMITED_SECRET).status_code == 201  # 2 of 2
    _refused(api.create(["small"], secret=LIMITED_SECRET), 429, "labels", "max-nodes (2)")
    # A returned lease no longer counts.
    api.wait_state(first.json()["id"], ("fulfilled",), secret=LIMITED_SECRET)
    assert api.call("DELETE", f"/requests/{first.json()['id']}",
                    secret=LIMITED_SECRET).status_code == 200
    assert api.create(["small"], secret=LIMITED_SECRET).status_code == 201

    # 409: a finished lease cannot be renewed; returning it again changes nothing.
    assert api.call("DELETE", f"/requests/{lease_id}").json()["state"] == "returned"
    _refused(api.call("POST", f"/requests/{lease_id}/renew"), 409, "state",
             "returned: it cannot be renewed")
    assert api.call("DELETE", f"/requests/{lease_id}").json()["state"] == "returned"

    # The description needs no token.
    spec = api.call("GET", "/openapi.json", secret=None)
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")
    assert "/requests/{id}/renew" in spec.json()["paths"]


def test_api_off_without_tokens(api_env: ApiEnv) -> None:
    api = api_env.start(tokens=[])
    _refused(api.call("GET", "/requests"), 404, None, "the REST request API is off")
    _refused(api.create(["small"]), 404, None, "no webapp.api-tokens")
    # Upstream's read-only paths are served as before.
    assert api_env.web is not None
    status = requests.get(f"http://127.0.0.1:{api_env.web.port}/node-list", timeout=10)
    assert status.status_code == 200
    h.wait_for("launcher serving", lambda: api_env.launcher and api_env.launcher.ready.is_set())


def test_waiting_request_cancelled(api_env: ApiEnv, kazoo_client: Any,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    api = api_env.start(cloud={"boot_delay": 30.0})
    lease_id = api.create(["small"]).json()["id"]
    assert api.wait_state(lease_id, ("pending",))["nodes"] == []
    assert h.request(kazoo_client, lease_id) is not None
    # An ordinary request: `nodepool request-list` shows it with the token's name.
    capsys.readouterr()
    assert admin.main(["-c", str(api_env.tmp_path / "nodepool.yaml"), "request-list"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if lease_id in row)
    assert "ci" in line.split() and "pending" in line.split()
    returned = api.call("DELETE", f"/requests/{lease_id}")
    assert returned.status_code == 200 and returned.json()["state"] == "returned"
    h.wait_for("node request deleted", lambda: h.request(kazoo_client, lease_id) is None)
    assert api.call("GET", f"/requests/{lease_id}").json()["state"] == "returned"

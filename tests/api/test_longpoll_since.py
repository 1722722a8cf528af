"""A change between two long-polls is not missed: the client names the state it last saw
(`since`), and a waiting GET answers at once when the lease's state differs from it, even if
the change came before the call (a wait without `since` compares with the state at the
call's arrival, and would sleep its whole `wait`)."""

from __future__ import annotations

import threading
import time
from typing import Any

from werkzeug.test import Client

from nodepool_ng.api.app import ApiApp
from nodepool_ng.model.lease import LeaseState
from tests.api.conftest import SECRET, ApiEnv
from tests.api.test_app import CONFIG
from tests.launcher import harness as h

WAIT = 20  # seconds each long-poll asks for: far longer than an answer at once takes
AT_ONCE = 2.0  # seconds within which a call that must answer at once does


def _timed_get(api: Any, lease_id: str, **params: Any) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    response = api.call("GET", f"/requests/{lease_id}", params=params)
    assert response.status_code == 200, response.text
    return time.monotonic() - started, response.json()


def test_change_between_two_polls_answers_at_once(api_env: ApiEnv) -> None:
    api = api_env.start()
    assert api_env.launcher is not None and api_env.launcher.api is not None
    leases = api_env.launcher.api._leases
    created = api.create(["small"])
    assert created.status_code == 201, created.text
    seen = created.json()
    lease_id = seen["id"]
    assert seen["state"] == "requested"  # what the client saw last
    # The lease changes while the client is not asking (a ready node: tens of ms).
    h.wait_for("lease fulfilled", lambda: getattr(
        leases.cached_lease(lease_id), "state", None) is LeaseState.FULFILLED)
    # The next poll names what the client saw: the answer comes at once, the new state.
    elapsed, view = _timed_get(api, lease_id, wait=WAIT, since=seen["state"])
    assert view["state"] == "fulfilled" and view["nodes"], view
    assert elapsed < AT_ONCE, f"answered after {elapsed:.1f} s of a {WAIT} s wait"

    # `since` the state it has: the call waits, and answers at the change.
    answers: list[tuple[float, dict[str, Any]]] = []

    def poll() -> None:
        response = api.call("GET", f"/requests/{lease_id}",
                            params={"wait": WAIT, "since": "fulfilled"})
        answers.append((time.monotonic(), response.json()))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)
    assert not answers, "a wait since the current state answered before any change"
    returned_at = time.monotonic()
    assert api.call("DELETE", f"/requests/{lease_id}").status_code == 200
    poller.join(WAIT + 5)
    assert answers and answers[0][1]["state"] == "returned"
    assert answers[0][0] - returned_at < AT_ONCE

    # Without `since`, today's behaviour: a change from the state at arrival (none comes).
    elapsed, view = _timed_get(api, lease_id, wait=1)
    assert view["state"] == "returned" and 0.9 <= elapsed < 1 + AT_ONCE


def test_since_must_be_a_state(api_env: ApiEnv) -> None:
    api = api_env.start()
    lease_id = api.create(["small"]).json()["id"]
    for bad in ("done", "", "FULFILLED"):
        response = api.call("GET", f"/requests/{lease_id}",
                            params={"wait": 5, "since": bad})
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["field"] == "since"
        assert "requested, pending, fulfilled" in response.json()["error"]
    # `since` alone (no wait): the lease now.
    response = api.call("GET", f"/requests/{lease_id}", params={"since": "requested"})
    assert response.status_code == 200 and response.json()["id"] == lease_id


def test_an_answer_at_once_takes_no_wait_slot(api_env: ApiEnv) -> None:
    """With every wait slot taken, a GET whose `since` is stale still gets its answer (no
    `Retry-After`: it is the change, not a refusal to wait); one that would wait gets the
    lease as it is and `Retry-After`."""
    api = api_env.start()
    launcher = api_env.launcher
    assert launcher is not None and launcher.api is not None
    lease_id = api.create(["small"]).json()["id"]
    api.wait_state(lease_id, ("fulfilled",))
    no_slots = Client(ApiApp(lambda: launcher.api, lambda: launcher.config, wait_slots=0))
    auth = {"Authorization": f"Bearer {SECRET}"}

    started = time.monotonic()
    stale = no_slots.get(f"/requests/{lease_id}?wait={WAIT}&since=pending", headers=auth)
    assert stale.status_code == 200 and stale.json is not None
    assert stale.json["state"] == "fulfilled" and "Retry-After" not in stale.headers
    assert time.monotonic() - started < AT_ONCE

    current = no_slots.get(f"/requests/{lease_id}?wait={WAIT}&since=fulfilled", headers=auth)
    assert current.status_code == 200 and current.json is not None
    assert current.json["state"] == "fulfilled" and current.headers["Retry-After"] == "1"
    assert time.monotonic() - started < 2 * AT_ONCE


def test_openapi_describes_since() -> None:
    spec = Client(ApiApp(lambda: None, lambda: CONFIG)).get("/openapi.json").json
    assert spec is not None
    [since] = [p for p in spec["paths"]["/requests/{id}"]["get"]["parameters"]
               if p["name"] == "since"]
    assert since["in"] == "query" and since["schema"]["enum"] == [s.value for s in LeaseState]

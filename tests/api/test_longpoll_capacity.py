"""More long-polls than the web server has worker threads: the health checks (and the rest of
the app) still answer at once, and every long-poll still gets a correct answer, either at the
lease's change or at once with the lease as it is and `Retry-After` (no wait slot left)."""

from __future__ import annotations

import threading
import time
from typing import Any

import requests

from nodepool_ng.web import server
from tests.api.conftest import SECRET, ApiEnv

PROMPT = 2.0  # seconds a health check may take while the long-polls wait
WAIT = 20  # each long-poll's `wait`: far longer than the test needs


def _answer_promptly(base: str, path: str) -> float:
    started = time.monotonic()
    try:
        response = requests.get(base + path, timeout=PROMPT)
    except requests.Timeout:
        raise AssertionError(f"{path} did not answer within {PROMPT} s while "
                             "long-polls wait") from None
    elapsed = time.monotonic() - started
    assert response.status_code == 200, (path, response.status_code, response.text)
    return elapsed


def test_long_polls_leave_threads_for_the_rest(api_env: ApiEnv) -> None:
    api = api_env.start()
    assert api_env.web is not None and api_env.launcher is not None
    service = api_env.launcher.api
    assert service is not None
    base = f"http://127.0.0.1:{api_env.web.port}"
    lease_id = api.create(["small"]).json()["id"]
    api.wait_state(lease_id, ("fulfilled",))

    clients = server.THREADS + 4  # more than the server could serve at once
    answers: list[tuple[float, int, str | None, dict[str, Any]]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def long_poll() -> None:
        try:
            response = requests.get(f"{base}/api/v1/requests/{lease_id}",
                                    params={"wait": WAIT},
                                    headers={"Authorization": f"Bearer {SECRET}"},
                                    timeout=WAIT + 10)
            with lock:
                answers.append((time.monotonic(), response.status_code,
                                response.headers.get("Retry-After"), response.json()))
        except BaseException as e:  # reported by the test
            with lock:
                failures.append(e)

    pollers = [threading.Thread(target=long_poll, daemon=True) for _ in range(clients)]
    for poller in pollers:
        poller.start()

    def settled() -> bool:
        with lock:
            return service._waiters.count() + len(answers) + len(failures) >= clients

    # Every long-poll waits or was answered (a server without a cap never gets there: the
    # last ones sit in its queue; the health checks below then fail the test).
    deadline = time.monotonic() + 10
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.05)
    waiting = service._waiters.count()
    # The app's other paths answer at once while the long-polls wait.
    for path in ("/health/live", "/health/ready", "/health/live", "/health/ready"):
        _answer_promptly(base, path)
    assert _answer_promptly(base, "/") < PROMPT
    with lock:
        early = list(answers)
    # Those that got no wait slot were answered at once: the lease now, and a hint.
    assert waiting + len(early) == clients, (waiting, len(early))
    for _, status, retry_after, view in early:
        assert status == 200 and view["id"] == lease_id and view["state"] == "fulfilled"
        assert retry_after == "1"
    # The change answers the waiting ones at once, with the new state.
    returned_at = time.monotonic()
    released = requests.delete(f"{base}/api/v1/requests/{lease_id}",
                               headers={"Authorization": f"Bearer {SECRET}"}, timeout=PROMPT)
    assert released.status_code == 200, released.text
    for poller in pollers:
        poller.join(10)
    assert not failures, failures
    assert len(answers) == clients
    late = answers[len(early):]
    assert len(late) == waiting
    for answered_at, status, retry_after, view in late:
        assert status == 200 and view["state"] == "returned" and retry_after is None
        assert answered_at - returned_at < PROMPT
    assert service._waiters.count() == 0
    # A wait slot is free again once the waits ended: a long-poll waits (no Retry-After).
    started = time.monotonic()
    again = api.call("GET", f"/requests/{lease_id}", params={"wait": 1})
    assert again.status_code == 200 and "Retry-After" not in again.headers
    assert time.monotonic() - started >= 0.9

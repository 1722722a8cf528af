"""Long-poll answers at the change, not at the end of the wait; token secrets reach neither
ZooKeeper nor the logs (a secret from the secure file included)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient

from tests.api.conftest import LIMITED_SECRET, SECRET, ApiEnv


def test_long_poll_returns_at_the_change(api_env: ApiEnv) -> None:
    api = api_env.start()
    lease_id = api.create(["small"]).json()["id"]
    api.wait_state(lease_id, ("fulfilled",))
    # Nothing changes: the wait runs out, same state.
    started = time.monotonic()
    same = api.call("GET", f"/requests/{lease_id}", params={"wait": 1}).json()
    assert same["state"] == "fulfilled" and 0.9 <= time.monotonic() - started < 3
    # A change answers a waiting GET at once.
    answers: list[tuple[float, dict[str, Any]]] = []

    def wait() -> None:
        response = api.call("GET", f"/requests/{lease_id}", params={"wait": 30})
        answers.append((time.monotonic(), response.json()))

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)  # the GET is waiting
    assert not answers
    returned_at = time.monotonic()
    assert api.call("DELETE", f"/requests/{lease_id}").status_code == 200
    waiter.join(10)
    assert answers, "the waiting GET did not return"
    answered_at, view = answers[0]
    assert view["state"] == "returned"
    latency = answered_at - returned_at
    assert latency < 2.0, latency


def _zk_dump(kz: KazooClient, path: str = "/") -> bytes:
    data, _ = kz.get(path)
    out = [path.encode(), data or b""]
    for child in kz.get_children(path):
        out.append(_zk_dump(kz, f"{path.rstrip('/')}/{child}"))
    return b"\n".join(out)


def test_secrets_absent_from_zookeeper_and_logs(api_env: ApiEnv, kazoo_client: KazooClient,
                                                tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secure = tmp_path / "secure.yaml"
    secure.write_text(yaml.safe_dump({"webapp": {"api-tokens": [
        {"name": "limited", "secret": LIMITED_SECRET}]}}))
    api = api_env.start(tokens=[{"name": "ci", "secret": SECRET},
                                {"name": "limited", "labels": ["small"], "max-nodes": 2}],
                        secure=secure)
    for secret in (SECRET, LIMITED_SECRET):
        lease_id = api.create(["small"], secret=secret).json()["id"]
        api.wait_state(lease_id, ("fulfilled",), secret=secret)
        assert api.call("POST", f"/requests/{lease_id}/renew", secret).status_code == 200
        assert api.call("GET", "/requests", secret).status_code == 200
        assert api.call("GET", "/requests", SECRET[:-1] + "x").status_code == 401
        dump = _zk_dump(kazoo_client)
        assert b'"requestor": "limited"' in dump or b'"requestor": "ci"' in dump
        assert api.call("DELETE", f"/requests/{lease_id}", secret).status_code == 200
    dump = _zk_dump(kazoo_client)
    logs = caplog.text
    assert "Lease " in logs  # the log was captured
    for secret in (SECRET, LIMITED_SECRET, SECRET[:-1] + "x"):
        assert secret.encode() not in dump
        assert secret not in logs

"""`nodepool request-create|show|renew|return` as console commands (subprocesses) against a
running launcher's REST request API (real ZooKeeper, simcloud, the web app over HTTP): the
nodes printed with their addresses, JSON that parses, nodes given back (servers deleted),
and refusals as exit status 2 with a message naming the problem and never the token."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from nodepool_ng.cmd import admin
from nodepool_ng.cmd import admin_requests_api as requests_api
from tests.api.conftest import SECRET, ApiEnv
from tests.launcher import harness as h

NODEPOOL = str(Path(sys.executable).parent / "nodepool")


def nodepool(env: ApiEnv, *args: str, token: str | None = SECRET,
             timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """The console script, the API's URL and token in its environment."""
    assert env.web is not None
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NODEPOOL_API_")}
    environ["NODEPOOL_API_URL"] = f"http://127.0.0.1:{env.web.port}/api/v1"
    if token is not None:
        environ["NODEPOOL_API_TOKEN"] = token
    return subprocess.run([NODEPOOL, *args], capture_output=True, text=True, env=environ,
                          timeout=timeout)


def test_create_wait_show_renew_return(api_env: ApiEnv, kazoo_client: KazooClient) -> None:
    api_env.start()
    result = nodepool(api_env, "request-create", "small", "big", "--wait", "--lease", "60")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    request_id = lines[0]
    assert request_id.startswith("200-"), result.stdout  # the default priority
    assert lines[2].split("|")[1:-1] == [" ID         ", " Label ", " Provider ",
                                         " Interface IP ", " Username ", " Port "]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[4:-1]]
    assert [row[1] for row in rows] == ["small", "big"]
    for node_id, _label, provider, address, username, port in rows:
        record = h.node(kazoo_client, node_id)
        assert record is not None and record["state"] == "in-use"
        assert (provider, address, username, port) == (
            "p1", record["interface_ip"], record["username"], "22")
        assert address
    node_ids = [row[0] for row in rows]

    shown = nodepool(api_env, "request-show", request_id, "--json")
    assert shown.returncode == 0, shown.stderr
    lease = json.loads(shown.stdout)
    assert lease["state"] == "fulfilled" and [n["id"] for n in lease["nodes"]] == node_ids
    text = nodepool(api_env, "request-show", request_id)
    assert text.stdout.startswith(f"Request {request_id}: fulfilled, labels small,big")

    renewed = nodepool(api_env, "--json", "request-renew", request_id, "--lease", "600")
    assert renewed.returncode == 0, renewed.stderr
    assert json.loads(renewed.stdout)["lease_seconds"] == 600
    assert json.loads(renewed.stdout)["expires"] > lease["expires"] + 500

    returned = nodepool(api_env, "request-return", request_id)
    assert returned.returncode == 0, returned.stderr
    assert returned.stdout.startswith(f"Request {request_id}: returned")
    h.wait_for("servers deleted in simcloud", lambda: not api_env.servers(), timeout=30)
    h.wait_for("node records removed",
               lambda: all(h.node(kazoo_client, n) is None for n in node_ids))


def test_json_and_token_file(api_env: ApiEnv, tmp_path: Path) -> None:
    api_env.start()
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    created = nodepool(api_env, "request-create", "small", "--wait", "--json", "--priority",
                       "50", "--provider", "p1", "--api-token-file", str(token_file),
                       token=None)
    assert created.returncode == 0, created.stderr
    lease = json.loads(created.stdout)
    assert lease["id"].startswith("050-") and lease["state"] == "fulfilled"
    assert lease["requestor"] == "ci" and lease["provider"] == "p1"
    [node] = lease["nodes"]
    assert node["label"] == "small" and node["interface_ip"] and node["connection_port"] == 22
    returned = nodepool(api_env, "request-return", lease["id"], "--json", token=SECRET)
    assert json.loads(returned.stdout)["state"] == "returned"
    h.wait_for("server deleted in simcloud", lambda: not api_env.servers(), timeout=30)

    # Without --wait: the id alone, at once.
    quick = nodepool(api_env, "request-create", "big")
    assert quick.returncode == 0, quick.stderr
    assert quick.stdout.strip().startswith("200-") and "\n" not in quick.stdout.strip()


def test_timeout_then_cancel(api_env: ApiEnv, kazoo_client: KazooClient) -> None:
    api_env.start(cloud={"boot_delay": 30})
    result = nodepool(api_env, "request-create", "small", "--wait", "--timeout", "0.5")
    assert result.returncode == 1, result.stdout + result.stderr
    request_id = result.stdout.strip()
    assert f"request {request_id} is still" in result.stderr
    assert f"nodepool request-return {request_id}" in result.stderr
    cancelled = nodepool(api_env, "request-return", request_id)
    assert cancelled.returncode == 0 and ": returned" in cancelled.stdout
    h.wait_for("node request deleted", lambda: h.request(kazoo_client, request_id) is None)


def test_refusals_exit_2(api_env: ApiEnv, tmp_path: Path) -> None:
    api_env.start()
    bad = "not-the-secret-0123456789"
    result = nodepool(api_env, "request-create", "small", "--wait", token=bad)
    assert result.returncode == 2
    assert "HTTP 401: unknown API token" in result.stderr
    assert bad not in result.stdout + result.stderr

    result = nodepool(api_env, "request-create", "nope")
    assert result.returncode == 2
    assert "unknown label 'nope'" in result.stderr and "(field: labels)" in result.stderr

    result = nodepool(api_env, "request-return", "200-0000099999")
    assert result.returncode == 2 and "HTTP 404" in result.stderr

    result = nodepool(api_env, "request-create", "small", token=None)
    assert result.returncode == 2
    assert "NODEPOOL_API_TOKEN" in result.stderr
    result = nodepool(api_env, "request-create", "small", "--api-token-file",
                      str(tmp_path / "missing"), token=None)
    assert result.returncode == 2 and "--api-token-file: cannot read" in result.stderr

    result = nodepool(api_env, "request-create", "small", "--api-url",
                      "http://127.0.0.1:1/api/v1")
    assert result.returncode == 2 and "cannot reach the API at" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def doc_script(marker: str) -> str:
    """The bash block of doc/api.md whose second line names `marker`."""
    text = (Path(__file__).resolve().parents[2] / "doc" / "api.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    found = [b for b in blocks if b.splitlines()[1].startswith(f"# {marker}:")]
    assert len(found) == 1, f"doc/api.md has {len(found)} scripts for {marker}"
    return found[0]


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl, jq")
def test_github_runner_hooks_of_the_doc(api_env: ApiEnv, tmp_path: Path,
                                        kazoo_client: KazooClient) -> None:
    api = api_env.start()
    assert api_env.web is not None
    hooks = {}
    for name in ("ACTIONS_RUNNER_HOOK_JOB_STARTED", "ACTIONS_RUNNER_HOOK_JOB_COMPLETED"):
        hooks[name] = tmp_path / f"{name.lower()}.sh"
        hooks[name].write_text(doc_script(name))
    (tmp_path / "token").write_text(SECRET)
    github_env, state = tmp_path / "github_env", tmp_path / "state"
    environ = {**os.environ, "NODEPOOL_API_URL": f"http://127.0.0.1:{api_env.web.port}/api/v1",
               "NODEPOOL_API_TOKEN_FILE": str(tmp_path / "token"),
               "NODEPOOL_HOOK_STATE": str(state), "NODEPOOL_LABEL": "small",
               "GITHUB_ENV": str(github_env)}

    def hook(name: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-e", str(hooks[name])], capture_output=True,
                              text=True, env={**environ, **extra}, timeout=60)

    started = hook("ACTIONS_RUNNER_HOOK_JOB_STARTED")
    assert started.returncode == 0, started.stdout + started.stderr
    request_id = state.read_text().strip()
    [node] = api.call("GET", f"/requests/{request_id}").json()["nodes"]
    record = h.node(kazoo_client, node["id"])
    assert record is not None and record["state"] == "in-use"
    assert github_env.read_text().splitlines() == [
        f"NODEPOOL_NODE_IP={record['interface_ip']}", f"NODEPOOL_NODE_USER={record['username']}",
        "NODEPOOL_NODE_PORT=22"]

    completed = hook("ACTIONS_RUNNER_HOOK_JOB_COMPLETED")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"nodepool request {request_id}: returned"
    assert not state.exists()
    h.wait_for("server deleted in simcloud", lambda: not api_env.servers(), timeout=30)

    refused = hook("ACTIONS_RUNNER_HOOK_JOB_STARTED", NODEPOOL_LABEL="nope")
    assert refused.returncode != 0
    assert "::error::nodepool API: POST /requests:" in refused.stderr
    assert "unknown label 'nope'" in refused.stderr


@contextmanager
def stub_api(app: Callable[[Request], Response]) -> Iterator[str]:
    """A stand-in API (werkzeug, threaded) on a free loopback port: its `/api/v1` URL."""
    server = make_server("127.0.0.1", 0, Request.application(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api/v1"
    finally:
        server.shutdown()


def stub_nodepool(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "token").write_text(SECRET)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NODEPOOL_API_")}
    return subprocess.run([NODEPOOL, *args, "--api-url", url,
                           "--api-token-file", str(tmp_path / "token")],
                          capture_output=True, text=True, env=environ, timeout=60)


def stub_lease(state: str) -> dict[str, Any]:
    nodes = [{"id": "0000000007", "label": "small", "provider": "p1",
              "interface_ip": "127.0.0.7", "username": "zuul", "connection_port": 22}]
    return {"id": "200-0000000001", "state": state, "labels": ["small"],
            "nodes": nodes if state == "fulfilled" else [], "expires": 0.0,
            "failure_reason": None}


def test_wait_answered_at_once_is_paced(tmp_path: Path) -> None:
    """An API with no wait slot free answers every long-poll at once, unchanged, with
    `Retry-After`: `--wait` asks again after a pause, not in a busy loop."""
    gets: list[float] = []

    def app(request: Request) -> Response:
        if request.method == "GET":
            gets.append(time.monotonic())
        response = Response(json.dumps(stub_lease("pending")),
                            status=201 if request.method == "POST" else 200,
                            mimetype="application/json")
        response.headers["Retry-After"] = "1"
        return response

    with stub_api(app) as url:
        result = stub_nodepool(url, tmp_path, "request-create", "small", "--wait",
                               "--timeout", "3")
    assert result.returncode == 1 and "is still pending after 3 s" in result.stderr
    assert 2 <= len(gets) <= 6, f"{len(gets)} GETs in 3 s"


def test_wait_names_the_state_seen_and_outlives_a_restart(tmp_path: Path) -> None:
    """Each long-poll of `--wait` names the state last seen (`since`), so a change between
    two is answered at once; a launcher restarting mid-wait (503, then the answer) is asked
    again after a short pause instead of ending the wait with exit 2."""
    gets: list[tuple[float, dict[str, str]]] = []

    def app(request: Request) -> Response:
        if request.method == "POST":
            return Response(json.dumps(stub_lease("requested")), status=201,
                            mimetype="application/json")
        gets.append((time.monotonic(), dict(request.args)))
        if len(gets) <= 2:
            return Response(json.dumps({"error": "the launcher is not connected to "
                                        "ZooKeeper yet", "field": None}), status=503,
                            mimetype="application/json")
        return Response(json.dumps(stub_lease("fulfilled")), mimetype="application/json")

    with stub_api(app) as url:
        result = stub_nodepool(url, tmp_path, "request-create", "small", "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "200-0000000001"
    assert "127.0.0.7" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2 and all("HTTP 503" in w and "trying again" in w
                                      for w in warnings), result.stderr
    assert [args for _, args in gets] == [{"wait": "30", "since": "requested"}] * 3
    pauses = [b - a for (a, _), (b, _) in itertools.pairwise(gets)]
    assert 0.9 <= pauses[0] < 1.9 and 1.9 <= pauses[1] < 2.9, pauses


def test_wait_gives_up_after_a_few_tries(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    """A launcher that stays away (503, or no connection): a few tries, then exit 2 with the
    message. A refusal (404) is not tried again."""
    monkeypatch.setattr(requests_api, "RETRY_DELAYS", (0.05, 0.05))
    monkeypatch.setenv("NODEPOOL_API_TOKEN", SECRET)
    status = {"code": 503}
    gets: list[str] = []

    def app(request: Request) -> Response:
        gets.append(request.path)
        return Response(json.dumps({"error": "ZooKeeper is unavailable: lost",
                                    "field": None}), status=status["code"],
                        mimetype="application/json")

    with stub_api(app) as url:
        code = admin.main(["request-show", "200-0000000001", "--wait", "5", "--since",
                           "pending", "--api-url", url])
        err = capsys.readouterr().err
        assert code == 2 and len(gets) == 3, (code, gets, err)
        assert err.count("trying again") == 2
        assert err.splitlines()[-1].startswith("nodepool: error: the API refused GET ")
        assert "HTTP 503: ZooKeeper is unavailable: lost" in err
        assert err.splitlines()[-1].endswith("(gave up after 3 tries)")

        status["code"] = 404
        gets.clear()
        code = admin.main(["request-show", "200-0000000001", "--wait", "5", "--api-url", url])
        err = capsys.readouterr().err
        assert code == 2 and len(gets) == 1 and "HTTP 404" in err and "trying" not in err

    code = admin.main(["request-show", "200-0000000001", "--wait", "5", "--api-url",
                       "http://127.0.0.1:1/api/v1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("trying again") == 2
    assert "cannot reach the API at" in err and "(gave up after 3 tries)" in err
    assert SECRET not in err

    code = admin.main(["request-show", "200-0000000001", "--since", "pending", "--api-url",
                       "http://127.0.0.1:1/api/v1"])
    assert code == 2 and "--since needs --wait" in capsys.readouterr().err

"""Host-key scan through the launcher against a real sshd listening where the node will be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from tests.fixtures.sshd import SshdServer
from tests.fixtures.statsd import StatsdServer, statsd_server  # noqa: F401 (fixture)
from tests.launcher import harness as h
from tests.launcher.env import Env, first_address, random_cidr


def scanning_provider(port: int, **extra: Any) -> dict[str, Any]:
    prov = h.provider("p1", "cloud1", **{"host-key-checking": True, **extra})
    prov["cloud-images"] = [{"name": "debian", "connection-port": port}]
    return prov


def test_host_keys_scanned_from_real_sshd(
    env: Env, tmp_path: Path, kazoo_client: KazooClient
) -> None:
    cidr = random_cidr()
    sshd = SshdServer(tmp_path / "sshd", host=first_address(cidr))
    sshd.start()
    try:
        env.clouds([{"name": "cloud1", "public_cidr": cidr}])
        env.start([scanning_provider(sshd.port, **{"boot-timeout": 20})])
        rid = h.submit_request(kazoo_client, ["small"])
        req = h.wait_request(kazoo_client, rid)
        assert req["state"] == "fulfilled"
        node = h.node(kazoo_client, req["nodes"][0])
        assert node is not None and node["state"] == "ready"
        assert node["interface_ip"] == sshd.host
        assert node["connection_port"] == sshd.port
        assert sorted(node["host_keys"]) == sorted(sshd.host_keys)
    finally:
        sshd.stop()


def test_no_sshd_launch_fails_is_retried_then_declined(
    env: Env,
    kazoo_client: KazooClient,
    statsd_server: StatsdServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATSD_HOST", statsd_server.host)
    monkeypatch.setenv("STATSD_PORT", str(statsd_server.port))
    cidr = random_cidr()  # nothing listens there
    env.clouds([{"name": "cloud1", "public_cidr": cidr}])
    env.start([scanning_provider(22, **{"boot-timeout": 1, "launch-retries": 2})])
    rid = h.submit_request(kazoo_client, ["small"])
    req = h.wait_request(kazoo_client, rid, timeout=40)
    assert req["state"] == "failed" and len(req["declined_by"]) == 1
    # Both attempts timed out in the key scan (one retry, then the node failed).
    statsd_server.wait_for("nodepool.launch.provider.p1.error.keyscan", "c")
    h.wait_for(
        "two keyscan failures",
        lambda: len(statsd_server.find("nodepool.launch.provider.p1.error.keyscan", "c")) == 2,
    )
    assert not statsd_server.find("nodepool.launch.ready")
    h.wait_for("no nodes left", lambda: not h.all_nodes(kazoo_client))
    assert env.sim is not None
    h.wait_for("no servers left", lambda: not h.servers(env.sim, "cloud1"))  # type: ignore[arg-type]

"""Zuul 14.3's own client code (tools/compat/zuul_client.py, zuul14 venv) against OUR launcher.

Zuul submits with `submitNodeRequest`, notices completion through its request cache, accepts
(allocated_to check, lock, request deleted), sets in-use then used and unlocks; our launcher
must then delete the nodes and their servers.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient

from tests.compat.conftest import ZUUL14, TlsZooKeeper, require_venv
from tests.launcher import harness as h

pytestmark = pytest.mark.upstream

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "compat" / "zuul_client.py"


def test_zuul_client_uses_and_returns_our_nodes(
        tmp_path: Path, tls_zookeeper: TlsZooKeeper, tls_chroot: str,
        tls_kazoo: KazooClient) -> None:
    python = require_venv(ZUUL14, "Zuul 14.3", "zuul-scheduler")
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds([{"name": "cloud1"}], clouds_yaml)
    cfg: dict[str, Any] = {
        **tls_zookeeper.config(tls_chroot), "zookeeper-timeout": 5.0,
        "labels": [{"name": "small"}, {"name": "big"}],
        "providers": [h.provider("p1", "cloud1", labels=("small", "big"),
                                 **{"node-attributes": {"executor-zone": "z1"}})],
    }
    config = tmp_path / "nodepool.yaml"
    config.write_text(yaml.safe_dump(cfg))
    launcher = h.start_launcher(config, clouds_yaml)
    try:
        proc = subprocess.run(
            [str(python), str(SCRIPT), "--hosts",
             f"127.0.0.1:{tls_zookeeper.port}{tls_chroot}", "--cert", tls_zookeeper.cert,
             "--key", tls_zookeeper.key, "--ca", tls_zookeeper.ca, "--labels", "big,small,big"],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["state"] == "fulfilled", out
        assert out["tenant_name"] == "tenant-one" and out["event_id"]
        assert out["request_exists_after_accept"] is False
        assert {"supported_labels": ["big", "small"]}.items() <= out["launchers"][0].items()
        accepted = out["accepted"]
        # nodes[i] serves node_types[i]: Zuul zips them without checking.
        assert [n["type"] for n in accepted] == [["big"], ["small"], ["big"]]
        assert [n["id"] for n in accepted] == out["nodes"]
        for n in accepted:
            assert n["allocated_to"] == out["request_id"]
            assert n["state"] == "ready" and n["provider"] == "p1" and n["cloud"] == "cloud1"
            assert n["interface_ip"].startswith("127.") and n["connection_port"] == 22
            assert n["username"] == "zuul" and n["host_keys"] == []
            assert n["attributes"] == {"executor-zone": "z1"}
            assert n["resources"]["instances"] == 1
        assert out["in_use"] == ["in-use"] * 3
        # Returned (used, unlocked): our launcher deletes nodes and servers.
        for nid in out["nodes"]:
            h.wait_for(f"node {nid} deleted", lambda nid=nid: h.node(tls_kazoo, nid) is None,
                       timeout=30)
        h.wait_for("servers deleted", lambda: not h.servers(sim, "cloud1"), timeout=30)
    finally:
        launcher.stop()
        sim.stop()

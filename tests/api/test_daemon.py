"""`nodepool-launcher` itself serves the API at `/api/v1` of its web app (the mount
`cmd.launcher.web_mounts` builds), and its metrics count the calls by token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from tests.api.conftest import SECRET, TOKENS, Api, write_api_config
from tests.fixtures.ports import free_port
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h


def test_launcher_daemon_serves_the_api(tmp_path: Path, zk_chroot: ZooKeeperChroot) -> None:
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds([{"name": "cloud1"}], clouds_yaml)
    cfg = write_api_config(tmp_path / "nodepool.yaml", zk_chroot,
                           [h.provider("p1", "cloud1")], TOKENS)
    port = free_port()
    raw = yaml.safe_load(cfg.read_text())
    raw["webapp"].update(port=port, listen_address="127.0.0.1")
    cfg.write_text(yaml.safe_dump(raw))
    log = tmp_path / "launcher.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nodepool_ng.cmd.launcher", "-c", str(cfg), "-f",
             "--clouds-yaml", str(clouds_yaml)],
            stdout=out, stderr=subprocess.STDOUT, cwd=os.getcwd())
    try:
        base = f"http://127.0.0.1:{port}"
        h.wait_for("launcher ready", lambda: _ok(f"{base}/health/ready"), timeout=30)
        api = Api(f"{base}/api/v1")
        created = api.create(["small"], lease_seconds=30)
        assert created.status_code == 201, created.text
        lease_id = created.json()["id"]
        view = api.wait_state(lease_id, ("fulfilled",))
        assert view["nodes"][0]["interface_ip"]
        assert api.call("DELETE", f"/requests/{lease_id}").json()["state"] == "returned"
        h.wait_for("server deleted", lambda: not h.servers(sim, "cloud1"), timeout=30)
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert 'nodepool_api_requests_total{status="201",token="ci"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert SECRET not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sim.stop()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False

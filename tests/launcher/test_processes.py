"""Two launcher PROCESSES on one ZooKeeper; one is SIGKILLed mid-launch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h


def spawn(cfg: Path, clouds_yaml: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nodepool_ng.cmd.launcher",
                "-c",
                str(cfg),
                "-f",
                "--no-webapp",
                "--clouds-yaml",
                str(clouds_yaml),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=os.getcwd(),
        )


@pytest.mark.slow
def test_sigkill_mid_launch_other_launcher_serves_lost_request(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, kazoo_client: KazooClient
) -> None:
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds([{"name": "cloud1", "boot_delay": 2.0}], clouds_yaml)
    cfg = h.write_config(tmp_path / "nodepool.yaml", zk_chroot, [h.provider("p1", "cloud1")])
    procs = []
    try:
        first = spawn(cfg, clouds_yaml, tmp_path / "a.log")
        procs.append(first)
        h.wait_for(
            "launcher a registered",
            lambda: (
                kazoo_client.exists("/nodepool/components/pool")
                and kazoo_client.get_children("/nodepool/components/pool")
            ),
            timeout=30,
        )
        rid = h.submit_request(kazoo_client, ["small"])
        h.wait_for("server being built", lambda: h.servers(sim, "cloud1"), timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = spawn(cfg, clouds_yaml, tmp_path / "b.log")
        procs.append(second)
        req = h.wait_request(kazoo_client, rid, timeout=60)
        assert req["state"] == "fulfilled"
        n = h.node(kazoo_client, req["nodes"][0])
        assert n is not None and n["state"] == "ready"

        def no_orphan_server() -> bool:
            node_ids = set(h.all_nodes(kazoo_client))
            return all(
                s.metadata.get("nodepool_node_id") in node_ids for s in h.servers(sim, "cloud1")
            )

        h.wait_for("no server without a node", no_orphan_server, timeout=60)
        assert len(h.servers(sim, "cloud1")) == 1
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sim.stop()

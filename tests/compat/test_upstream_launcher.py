"""Upstream Nodepool 11's launcher (unmodified, own venv) against simcloud over HTTP.

Zuul's side is plain kazoo (tests/launcher/harness.py): submit, wait, accept, use, release.
Every gap upstream finds here is a simcloud fidelity bug.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient

from tests.compat.conftest import NODEPOOL11, TlsZooKeeper, require_venv
from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile
from tests.fixtures.sshd import SshdServer
from tests.launcher import harness as h
from tests.launcher.env import first_address, random_cidr

pytestmark = pytest.mark.upstream


def upstream_config(path: Path, zk: TlsZooKeeper, chroot: str, cloud: str,
                    cloud_image: dict[str, Any] | None = None, **pool: Any) -> Path:
    pool_cfg: dict[str, Any] = {
        "name": "main", "max-servers": 4, "host-key-checking": False,
        "labels": [{"name": "small", "cloud-image": "cirros", "flavor-name": "small"}],
    }
    pool_cfg.update(pool)
    cfg = {
        **zk.config(chroot),
        "zookeeper-timeout": 10.0,
        "labels": [{"name": "small", "min-ready": 0}],
        "providers": [{
            "name": "sim", "driver": "openstack", "cloud": cloud, "rate": 0.001,
            "boot-timeout": 30, "launch-timeout": 60, "launch-retries": 1,
            "cloud-images": [{"name": "cirros", **(cloud_image or {})}],
            "pools": [pool_cfg],
        }],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.contextmanager
def upstream_launcher(tmp_path: Path, zk: TlsZooKeeper, chroot: str,
                      cloud: dict[str, Any] | None = None,
                      cloud_image: dict[str, Any] | None = None,
                      **pool: Any) -> Iterator[tuple[SimCloudFixture, Path]]:
    """simcloud `sim-a` plus upstream's `nodepool-launcher` process serving it."""
    require_venv(NODEPOOL11, "upstream Nodepool 11", "nodepool-launcher")
    with SimCloudFixture(simcloud_profile(n=1, **(cloud or {})), directory=tmp_path) as sim:
        cfg = upstream_config(tmp_path / "nodepool.yaml", zk, chroot, "sim-a", cloud_image,
                              **pool)
        log = tmp_path / "upstream-launcher.log"
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(sim.clouds_yaml)}
        env.pop("STATSD_HOST", None)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(NODEPOOL11 / "bin" / "nodepool-launcher"), "-c", str(cfg), "-f",
                 "--no-webapp"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            yield sim, log
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            print(log.read_text()[-20000:])  # shown by pytest only when the test fails


def serve_one(sim: SimCloudFixture, log: Path, kz: KazooClient) -> dict[str, Any]:
    """Submit as Zuul, check upstream fulfilled it from simcloud; returns the node JSON."""
    rid = h.submit_request(kz, ["small"])
    req = h.wait_request(kz, rid, timeout=90)
    assert req["state"] == "fulfilled", log.read_text()[-5000:]
    assert req["requestor_data"]["job_name"] == "job"
    nid = req["nodes"][0]
    node = h.node(kz, nid)
    assert node is not None and node["state"] == "ready"
    (server,) = sim.admin("sim-a").servers()
    assert server["status"] == "ACTIVE"
    assert node["external_id"] == server["id"]
    assert node["interface_ip"] and node["interface_ip"].startswith("127.")
    assert node["public_ipv4"] == node["interface_ip"]
    assert node["provider"] == "sim" and node["cloud"] == "sim-a"
    assert server["metadata"]["nodepool_node_id"] == nid
    assert server["metadata"]["nodepool_provider_name"] == "sim"
    h.accept_and_use(kz, rid)
    h.wait_for("node deleted", lambda: h.node(kz, nid) is None, timeout=60)
    h.wait_for("server deleted", lambda: not sim.admin("sim-a").servers(), timeout=30)
    return node


def test_upstream_launcher_fulfils_request_from_simcloud(
        tmp_path: Path, tls_zookeeper: TlsZooKeeper, tls_chroot: str,
        tls_kazoo: KazooClient) -> None:
    with upstream_launcher(tmp_path, tls_zookeeper, tls_chroot) as (sim, log):
        node = serve_one(sim, log, tls_kazoo)
    assert node["host_keys"] == []  # host-key-checking off


def test_upstream_launcher_scans_host_keys_of_real_sshd(
        tmp_path: Path, tls_zookeeper: TlsZooKeeper, tls_chroot: str,
        tls_kazoo: KazooClient) -> None:
    cidr = random_cidr()
    sshd = SshdServer(tmp_path / "sshd", host=first_address(cidr))
    sshd.start()
    try:
        with upstream_launcher(tmp_path, tls_zookeeper, tls_chroot,
                               cloud={"public_cidr": cidr},
                               cloud_image={"connection-port": sshd.port},
                               **{"host-key-checking": True}) as (sim, log):
            node = serve_one(sim, log, tls_kazoo)
    finally:
        sshd.stop()
    assert node["interface_ip"] == sshd.host and node["connection_port"] == sshd.port
    # Upstream scans once per offered host-key algorithm: the RSA key comes back once for
    # each rsa-sha2-* variant (a duplicate). Same keys, so compare as sets.
    assert set(node["host_keys"]) == set(sshd.host_keys)

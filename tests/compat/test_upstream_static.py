"""The static driver next to upstream's: one nodepool.yaml, one real sshd host.

Upstream Nodepool 11's launcher (own venv) registers the host in one chroot and ours does in
another; the node records must match field by field (ids and times aside). Upstream's CLI
validates the same file and lists our static nodes.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compat.conftest import NODEPOOL11, TlsZooKeeper, require_venv
from tests.fixtures.sshd import SshdServer, sshd  # noqa: F401 (fixture)
from tests.launcher import harness as h

pytestmark = pytest.mark.upstream

# Differ by nature between two registrations of the same host.
PER_RECORD = {"created_time", "state_time", "id"}


def static_config(path: Path, zk: TlsZooKeeper, chroot: str, host: SshdServer) -> Path:
    cfg = {
        **zk.config(chroot),
        "zookeeper-timeout": 10.0,
        "labels": [{"name": "small"}, {"name": "big"}],
        "providers": [{
            "name": "lab", "driver": "static",
            "pools": [{
                "name": "main",
                "node-attributes": {"rack": "r1"},
                # A list: given as one string "small big", upstream registers the node
                # with type ["small big"], which no request for `small` matches (we split).
                "nodes": [{"name": "127.0.0.1", "labels": ["small", "big"], "username": "ci",
                           "connection-port": host.port, "max-parallel-jobs": 2,
                           "timeout": 5, "python-path": "/usr/bin/python3",
                           "shell-type": "bash"}],
            }],
        }],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def ready_records(zk: TlsZooKeeper, chroot: str, count: int) -> list[dict[str, Any]]:
    kz = zk.kazoo(chroot)
    try:
        def ready() -> list[dict[str, Any]]:
            nodes = [n for n in h.all_nodes(kz).values() if n.get("state") == "ready"]
            return nodes if len(nodes) == count else []
        return sorted(h.wait_for("static nodes registered", ready, timeout=60),
                      key=lambda n: n["slot"])
    finally:
        kz.stop()
        kz.close()


def fresh_chroot(zk: TlsZooKeeper) -> str:
    chroot = f"/compat/{uuid.uuid4().hex}"
    kz = zk.kazoo()
    try:
        kz.ensure_path(chroot)
    finally:
        kz.stop()
        kz.close()
    return chroot


def test_static_nodes_match_upstream_field_by_field(
        tmp_path: Path, tls_zookeeper: TlsZooKeeper, tls_chroot: str,
        sshd: SshdServer) -> None:  # noqa: F811
    require_venv(NODEPOOL11, "upstream Nodepool 11", "nodepool-launcher")
    theirs_cfg = static_config(tmp_path / "upstream.yaml", tls_zookeeper, tls_chroot, sshd)
    log = tmp_path / "upstream-launcher.log"
    env = {k: v for k, v in os.environ.items() if k != "STATSD_HOST"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(NODEPOOL11 / "bin" / "nodepool-launcher"), "-c", str(theirs_cfg), "-f",
             "--no-webapp"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        theirs = ready_records(tls_zookeeper, tls_chroot, 2)
    finally:
        proc.terminate()
        proc.wait(30)
        print(log.read_text()[-10000:])

    our_chroot = fresh_chroot(tls_zookeeper)
    ours_cfg = static_config(tmp_path / "ours.yaml", tls_zookeeper, our_chroot, sshd)
    launcher = h.start_launcher(ours_cfg, tmp_path / "no-clouds.yaml")
    try:
        ours = ready_records(tls_zookeeper, our_chroot, 2)
    finally:
        launcher.stop()

    for upstream_node, our_node in zip(theirs, ours, strict=True):
        assert set(our_node) == set(upstream_node), (
            f"keys only ours: {set(our_node) - set(upstream_node)}, "
            f"only upstream's: {set(upstream_node) - set(our_node)}")
        for key in sorted(set(upstream_node) - PER_RECORD):
            mine, its = our_node[key], upstream_node[key]
            if key == "host_keys":  # upstream lists the RSA key once per rsa-sha2 variant
                mine, its = set(mine), set(its)
            assert mine == its, f"{key}: ours {mine!r}, upstream {its!r}"


def test_upstream_cli_validates_and_lists_our_static_nodes(
        tmp_path: Path, tls_zookeeper: TlsZooKeeper, tls_chroot: str,
        sshd: SshdServer) -> None:  # noqa: F811
    require_venv(NODEPOOL11, "upstream Nodepool 11", "nodepool")
    cfg = static_config(tmp_path / "nodepool.yaml", tls_zookeeper, tls_chroot, sshd)
    cli = [str(NODEPOOL11 / "bin" / "nodepool"), "-c", str(cfg)]
    validated = subprocess.run([*cli, "config-validate"], capture_output=True, text=True,
                               timeout=60)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    launcher = h.start_launcher(cfg, tmp_path / "no-clouds.yaml")
    try:
        ours = ready_records(tls_zookeeper, tls_chroot, 2)
        listed = subprocess.run([*cli, "list", "--detail"], capture_output=True, text=True,
                                timeout=60)
    finally:
        launcher.stop()
    out = listed.stdout + listed.stderr
    assert listed.returncode == 0 and "Traceback" not in out, out
    rows = [ln for ln in listed.stdout.splitlines() if ln.startswith("|") and "127.0.0.1" in ln]
    assert len(rows) == len(ours) == 2, out
    for row in rows:
        assert "lab" in row and "small,big" in row and "static driver" in row, row

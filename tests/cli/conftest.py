"""Fixtures for the `nodepool` CLI and web app tests: a config on the test's ZK chroot."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from nodepool_ng.cmd.admin import main
from tests.fixtures.zookeeper import ZooKeeperChroot

CONFIG = """\
zookeeper-servers:
  - host: {host}
    port: {port}
    chroot: {chroot}
labels:
  - name: small
    min-ready: 1
  - name: large
providers:
  - name: cloud1
    cloud: cloud1
    diskimages:
      - name: debian
    pools:
      - name: main
        max-servers: 4
        labels:
          - name: small
            diskimage: debian
            flavor-name: m1.small
  - name: cloud2
    cloud: cloud2
    diskimages:
      - name: debian
    pools:
      - name: main
        max-servers: 4
        labels:
          - name: large
            diskimage: debian
            flavor-name: m1.large
diskimages:
  - name: debian
    elements:
      - debian-minimal
  - name: frozen
    elements:
      - debian-minimal
    pause: true
"""


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def np_config(tmp_path: Path, zk_chroot: ZooKeeperChroot) -> Path:
    path = tmp_path / "nodepool.yaml"
    path.write_text(
        CONFIG.format(host=zk_chroot.host, port=zk_chroot.port, chroot=zk_chroot.chroot)
    )
    return path


@pytest.fixture
def run_cli(np_config: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    def run(*args: str, config: Path | None = None) -> CliResult:
        capsys.readouterr()
        rc = main(["-c", str(config or np_config), *args])
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)

    return run


def write_node(zk: KazooClient, node_id: str, **fields: Any) -> dict[str, Any]:
    """A node znode in upstream's JSON, written by a plain kazoo client (as Zuul would see it)."""
    now = time.time()
    data: dict[str, Any] = {
        "state": "ready",
        "state_time": now - 3725,
        "cloud": "cloud1",
        "provider": "cloud1",
        "pool": "main",
        "type": ["small"],
        "allocated_to": None,
        "az": "nova",
        "region": None,
        "public_ipv4": "127.0.0.5",
        "private_ipv4": "127.0.1.5",
        "public_ipv6": None,
        "host_id": "h1",
        "interface_ip": "127.0.0.5",
        "connection_port": 22,
        "ssh_port": 22,
        "image_id": "/nodepool/images/debian/builds/abc/providers/cloud1/images/0000000001",
        "launcher": "host-PoolWorker.cloud1-main-0123",
        "created_time": now - 4000,
        "external_id": f"server-{node_id}",
        "hostname": f"np{node_id}",
        "comment": None,
        "user_data": None,
        "hold_job": None,
        "host_keys": [],
        "username": "zuul",
        "connection_type": "ssh",
        "shell_type": None,
        "hold_expiration": None,
        "resources": {"cores": 1, "instances": 1, "ram": 1024},
        "attributes": None,
        "python_path": "auto",
        "tenant_name": None,
        "driver_data": None,
        "requestor": None,
        "node_properties": {},
        "zuul_extra": "kept",
    }
    data.update(fields)
    zk.create(f"/nodepool/nodes/{node_id}", json.dumps(data).encode(), makepath=True)
    return data


def read_json(zk: KazooClient, path: str) -> dict[str, Any]:
    raw, _stat = zk.get(path)
    data: dict[str, Any] = json.loads(raw.decode())
    return data

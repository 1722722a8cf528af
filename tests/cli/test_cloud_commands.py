"""`nodepool delete --now` and `alien-image-list` against simcloud (real HTTP, openstacksdk)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.cmd.admin import main
from tests.cli.conftest import CliResult, write_node
from tests.fixtures.simcloud import SimCloudFixture
from tests.fixtures.simcloud import simcloud as simcloud
from tests.fixtures.zookeeper import ZooKeeperChroot

CLOUD_CONFIG = """\
zookeeper-servers:
  - host: {host}
    port: {port}
    chroot: {chroot}
labels:
  - name: small
providers:
  - name: sim-a
    cloud: sim-a
    rate: 0.001
    cloud-images:
      - name: cirros
    pools:
      - name: main
        host-key-checking: false
        labels:
          - name: small
            cloud-image: cirros
            flavor-name: small
"""


@pytest.fixture
def cloud_cli(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    simcloud: SimCloudFixture,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., CliResult]:
    config = tmp_path / "cloud.yaml"
    config.write_text(
        CLOUD_CONFIG.format(host=zk_chroot.host, port=zk_chroot.port, chroot=zk_chroot.chroot)
    )

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        rc = main(["-c", str(config), "--clouds-yaml", str(simcloud.clouds_yaml), *args])
        out = capsys.readouterr()
        return CliResult(rc, out.out, out.err)

    return run


def test_delete_now_removes_server_and_record(
    cloud_cli: Callable[..., CliResult],
    simcloud: SimCloudFixture,
    kazoo_client: KazooClient,
) -> None:
    conn = simcloud.connect("sim-a")
    server = conn.create_server(
        "np0000000007",
        image="cirros",
        flavor="small",
        wait=True,
        meta={"nodepool_node_id": "0000000007", "nodepool_provider_name": "sim-a"},
    )
    write_node(kazoo_client, "0000000007", provider="sim-a", external_id=server.id)

    result = cloud_cli("--json", "delete", "--now", "0000000007")
    assert result.rc == 0, result.err
    assert result.json()[0]["state"] == "deleted"
    assert not kazoo_client.exists("/nodepool/nodes/0000000007")
    assert [s["id"] for s in simcloud.admin("sim-a").servers()] == []


def test_delete_now_of_unknown_provider_is_refused(
    cloud_cli: Callable[..., CliResult], kazoo_client: KazooClient
) -> None:
    write_node(kazoo_client, "0000000008", provider="gone", external_id="srv-1")
    result = cloud_cli("delete", "--now", "0000000008")
    assert result.rc == 1
    assert "provider 'gone'" in result.err
    assert json.loads(kazoo_client.get("/nodepool/nodes/0000000008")[0])["state"] == "ready"


def test_alien_image_list(
    cloud_cli: Callable[..., CliResult],
    simcloud: SimCloudFixture,
    kazoo_client: KazooClient,
    tmp_path: Path,
) -> None:
    conn = simcloud.connect("sim-a")
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"\0" * 1024)
    known = conn.create_image(
        "known",
        filename=str(disk),
        disk_format="qcow2",
        container_format="bare",
        wait=True,
        meta={"nodepool_build_id": "b1", "nodepool_upload_id": "0000000000"},
    )
    alien = conn.create_image(
        "alien",
        filename=str(disk),
        disk_format="qcow2",
        container_format="bare",
        wait=True,
        meta={"nodepool_build_id": "b0", "nodepool_upload_id": "0000000000"},
    )
    upload = {
        "state": "ready",
        "state_time": 1.0,
        "external_id": known.id,
        "external_name": "known",
        "format": "qcow2",
    }
    build = {"state": "ready", "state_time": 1.0}
    kazoo_client.create(
        "/nodepool/images/debian/builds/b1", json.dumps(build).encode(), makepath=True
    )
    kazoo_client.create(
        "/nodepool/images/debian/builds/b1/providers/sim-a/images/0000000000",
        json.dumps(upload).encode(),
        makepath=True,
    )

    rows = cloud_cli("--json", "alien-image-list").json()
    # The cloud image `cirros` has no nodepool_build_id and is not listed either.
    assert rows == [{"provider": "sim-a", "name": "alien", "image_id": alien.id}]
    assert cloud_cli("alien-image-list", "nosuch").rc == 1

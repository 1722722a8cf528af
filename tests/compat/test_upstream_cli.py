"""Upstream Nodepool 11's `nodepool` CLI (own venv) reading the tree OUR launcher writes.

Our launcher serves a request on a TLS ZooKeeper; upstream's CLI, with the same nodepool.yaml,
must parse every record and print the right values. Build/upload records are written with
our ImageStore. Any parse error or wrong value is a bug in our records.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient

from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.images import ImageStore
from tests.compat.conftest import NODEPOOL11, TlsZooKeeper, require_venv
from tests.launcher import harness as h

pytestmark = pytest.mark.upstream


class UpstreamCli:
    def __init__(self, config: Path, clouds_yaml: Path) -> None:
        self.config = config
        # Upstream's config loader resolves each provider's cloud in clouds.yaml.
        self.env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds_yaml)}

    def run(self, *args: str, ok: bool = True) -> str:
        proc = subprocess.run(
            [str(NODEPOOL11 / "bin" / "nodepool"), "-c", str(self.config), *args],
            capture_output=True, text=True, timeout=60, env=self.env)
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out, f"nodepool {' '.join(args)}:\n{out}"
        if ok:
            assert proc.returncode == 0, f"nodepool {' '.join(args)} rc={proc.returncode}:\n{out}"
        return proc.stdout

    def table(self, *args: str) -> list[dict[str, str]]:
        """Rows of a PrettyTable as dicts keyed by the header."""
        lines = [ln for ln in self.run(*args).splitlines() if ln.startswith("|")]
        if not lines:
            return []
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        return [dict(zip(cells[0], row, strict=True)) for row in cells[1:]]


@pytest.fixture
def ours(tmp_path: Path, tls_zookeeper: TlsZooKeeper, tls_chroot: str,
         ) -> Iterator[tuple[Any, UpstreamCli, ZooKeeperClient]]:
    require_venv(NODEPOOL11, "upstream Nodepool 11", "nodepool")
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds([{"name": "cloud1"}], clouds_yaml)
    cfg: dict[str, Any] = {
        **tls_zookeeper.config(tls_chroot), "zookeeper-timeout": 5.0,
        "labels": [{"name": "small"}],
        "diskimages": [{"name": "ubuntu", "formats": ["qcow2"], "elements": ["debian"]}],
        "providers": [{**h.provider("p1", "cloud1"), "diskimages": [{"name": "ubuntu"}]}],
    }
    config = tmp_path / "nodepool.yaml"
    config.write_text(yaml.safe_dump(cfg))
    launcher = h.start_launcher(config, clouds_yaml)
    zk = ZooKeeperClient(f"127.0.0.1:{tls_zookeeper.port}{tls_chroot}",
                         tls_cert=tls_zookeeper.cert, tls_key=tls_zookeeper.key,
                         tls_ca=tls_zookeeper.ca, operation_timeout=5)
    zk.start(timeout=10)
    try:
        yield sim, UpstreamCli(config, clouds_yaml), zk
    finally:
        zk.stop()
        launcher.stop()
        sim.stop()


def test_upstream_cli_reads_our_nodes_and_requests(
        ours: tuple[Any, UpstreamCli, ZooKeeperClient], tls_kazoo: KazooClient) -> None:
    sim, cli, _ = ours
    rid = h.submit_request(tls_kazoo, ["small"])
    req = h.wait_request(tls_kazoo, rid)
    assert req["state"] == "fulfilled"
    nid = req["nodes"][0]
    node = h.node(tls_kazoo, nid)
    assert node is not None

    (row,) = cli.table("list")
    assert row["ID"] == nid and row["Provider"] == "p1" and row["Label"] == "small"
    assert row["Server ID"] == node["external_id"]
    assert row["Public IPv4"] == node["public_ipv4"]
    assert row["State"] == "ready" and row["Locked"] == "unlocked"

    (row,) = cli.table("list", "--detail")
    assert row["Pool"] == "main" and row["Allocated To"] == rid
    assert row["Private IPv4"] == (node["private_ipv4"] or "None")
    assert row["Username"] == node["username"] and row["Port"] == "22"
    assert row["Launcher"] == node["launcher"]

    (row,) = cli.table("request-list")
    assert row["Request ID"] == rid and row["State"] == "fulfilled"
    assert row["Node Types"] == "small" and row["Nodes"] == nid
    assert row["Requestor"] == "zuul-scheduler-1"

    # hold, then delete: upstream takes our node lock and writes our JSON back.
    held = cli.run("hold", nid)
    assert nid in held
    assert h.node(tls_kazoo, nid)["state"] == "hold"  # type: ignore[index]
    cli.run("delete", nid)
    print("after delete:", h.node(tls_kazoo, nid))
    h.wait_for("node deleted by our launcher", lambda: h.node(tls_kazoo, nid) is None,
               timeout=30)
    h.wait_for("server gone", lambda: not h.servers(sim, "cloud1"), timeout=30)
    assert cli.table("list") == []


def test_upstream_cli_reads_our_image_records(
        ours: tuple[Any, UpstreamCli, ZooKeeperClient]) -> None:
    _, cli, zk = ours
    images = ImageStore(zk)
    build = ImageBuild(image_name="ubuntu", builder="b1.example.org", builder_id="bid-1",
                       formats=["qcow2", "raw"])
    build_id = images.builds.create_build(build)
    build.state = BuildState.READY
    images.builds.store_build(build)
    upload = ImageUpload(image_name="ubuntu", build_id=build_id, provider_name="p1",
                         external_id="ext-1", external_name="ubuntu-1700000000",
                         format="qcow2")
    upload_id = images.uploads.create_upload(upload)
    upload.state = UploadState.READY
    images.uploads.store_upload(upload)
    images.flags.request_build("ubuntu")

    (row,) = cli.table("dib-image-list")
    assert row["ID"] == f"ubuntu-{build_id}" and row["Image"] == "ubuntu"
    assert row["Builder"] == "b1.example.org" and row["State"] == "ready"
    assert row["Formats"] == "qcow2,raw"

    (row,) = cli.table("image-list")
    assert row["Build ID"] == build_id and row["Upload ID"] == upload_id
    assert row["Provider"] == "p1" and row["Image"] == "ubuntu"
    assert row["Provider Image Name"] == "ubuntu-1700000000"
    assert row["Provider Image ID"] == "ext-1" and row["State"] == "ready"

    (row,) = cli.table("image-status")
    assert row["Image"] == "ubuntu" and row["Paused"] == "False"
    assert row["Build Request"] == "pending"

    images.flags.set_paused("ubuntu", True)
    (row,) = cli.table("dib-image-list")
    assert row["State"] == "paused"
    (row,) = cli.table("image-status")
    assert row["Paused"] == "True"


def test_upstream_cli_reads_in_flight_records(
        ours: tuple[Any, UpstreamCli, ZooKeeperClient], tls_kazoo: KazooClient) -> None:
    sim, cli, _ = ours
    state = sim.states["cloud1"]
    with state.lock:
        state.boot["delay"] = 10.0  # upstream's CLI takes ~2 s a call: keep them building
    rid = h.submit_request(tls_kazoo, ["small", "small"])
    h.wait_for("pending request", lambda: (h.request(tls_kazoo, rid) or {}).get("state")
               == "pending")
    (req_row,) = cli.table("request-list")
    assert req_row["Request ID"] == rid and req_row["State"] == "pending"
    assert req_row["Node Types"] == "small,small"
    rows = cli.table("list", "--detail")
    assert len(rows) == 2
    for row in rows:
        assert row["State"] == "building" and row["Allocated To"] == rid
        assert row["Locked"] == "locked"  # our launcher holds building nodes' locks
        assert row["Server ID"] != "None"  # external_id stored once the cloud answered
    req = h.wait_request(tls_kazoo, rid)
    assert req["state"] == "fulfilled"
    assert sorted(r["ID"] for r in cli.table("list")) == sorted(req["nodes"])

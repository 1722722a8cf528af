"""The launcher boots `diskimage:` labels from the newest ready upload in each provider and
declines while none exists (builder + launcher + three simcloud clouds, all real)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.launcher.service import Launcher
from tests.builder.support import (
    THREE_CLOUDS,
    diskimage,
    provider,
    three_cloud_profile,
    wait_for,
    write_config,
)
from tests.fixtures.simcloud import SimCloudFixture
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher.harness import start_launcher, submit_request, wait_request

FAST = BuilderTiming(
    build_interval=0.3, upload_interval=0.3, cleanup_interval=0.5, config_interval=0.2
)


def label(cloud: str) -> str:
    return f"debian-{cloud}"


def config_for(tmp_path: Path, zk: ZooKeeperChroot) -> Path:
    providers = []
    for cloud in THREE_CLOUDS:
        p = provider(cloud, label=label(cloud))
        p["pools"][0]["host-key-checking"] = False
        providers.append(p)
    return write_config(
        tmp_path,
        zk,
        [diskimage("debian")],
        providers,
        labels=[{"name": label(c)} for c in THREE_CLOUDS],
    )


@pytest.fixture
def clouds(tmp_path: Path) -> Iterator[SimCloudFixture]:
    with SimCloudFixture(three_cloud_profile(), directory=tmp_path / "sim") as cloud:
        yield cloud


@pytest.fixture
def launcher(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, clouds: SimCloudFixture
) -> Iterator[Launcher]:
    launcher = start_launcher(config_for(tmp_path, zk_chroot), clouds.clouds_yaml)
    yield launcher
    launcher.stop()


def test_declines_while_no_upload_exists(launcher: Launcher, kazoo_client: KazooClient) -> None:
    rid = submit_request(kazoo_client, [label("qcow-cloud")])
    req = wait_request(kazoo_client, rid)
    assert req["state"] == "failed"
    assert req["declined_by"]


def test_boots_diskimage_label_in_each_cloud(
    tmp_path: Path, launcher: Launcher, clouds: SimCloudFixture, kazoo_client: KazooClient
) -> None:
    builder = Builder(
        str(tmp_path / "nodepool.yaml"),
        timing=FAST,
        hostname="builder-test",
        clouds_yaml=str(clouds.clouds_yaml),
    )
    builder.start()
    try:
        assert builder.ctx is not None
        store = builder.ctx.images.uploads
        uploads = {
            c: wait_for(lambda c=c: store.latest_ready_upload("debian", c), what=f"upload to {c}")
            for c in THREE_CLOUDS
        }
        requests = {c: submit_request(kazoo_client, [label(c)]) for c in THREE_CLOUDS}
        for cloud, rid in requests.items():
            req = wait_request(kazoo_client, rid)
            assert req["state"] == "fulfilled", req
            (nid,) = req["nodes"]
            node: dict[str, Any] = json.loads(kazoo_client.get(f"/nodepool/nodes/{nid}")[0])
            assert node["provider"] == cloud
            assert node["image_id"] == uploads[cloud].path
            state = clouds.service.states[cloud]
            with state.lock:
                server = state.servers[node["external_id"]]
            assert server.image_id == uploads[cloud].external_id
    finally:
        builder.stop()

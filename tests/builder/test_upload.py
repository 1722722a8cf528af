"""Uploads to three simulated clouds (qcow2 by PUT, vhd by task import, raw by PUT), rotation
and fault containment: real ZooKeeper, real qemu-img, simcloud over HTTP with openstacksdk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.model.image import BuildState, ImageUpload, UploadState
from tests.builder.support import (
    THREE_CLOUDS,
    cloud_images,
    diskimage,
    provider,
    read_builds,
    read_uploads,
    three_cloud_profile,
    wait_for,
    write_config,
)
from tests.fixtures.simcloud import SimCloudFixture
from tests.fixtures.zookeeper import ZooKeeperChroot

FAST = BuilderTiming(
    build_interval=0.3,
    upload_interval=0.3,
    cleanup_interval=0.5,
    config_interval=0.2,
    upload_retry_base=0.2,
    upload_retry_cap=1.0,
)
CLOUDS = list(THREE_CLOUDS)


@pytest.fixture
def clouds(tmp_path: Path) -> Iterator[SimCloudFixture]:
    with SimCloudFixture(three_cloud_profile(), directory=tmp_path / "sim") as cloud:
        yield cloud


@pytest.fixture
def builder(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, clouds: SimCloudFixture
) -> Iterator[Builder]:
    config = write_config(
        tmp_path,
        zk_chroot,
        [diskimage("debian")],
        [provider(c, label="debian-node") for c in CLOUDS],
        labels=[{"name": "debian-node"}],
    )
    b = Builder(
        str(config),
        timing=FAST,
        hostname="builder-test",
        upload_workers=4,
        clouds_yaml=str(clouds.clouds_yaml),
    )
    b.start()
    yield b
    b.stop()


def ready_uploads(kazoo: KazooClient, provider: str) -> list[ImageUpload]:
    return [u for u in read_uploads(kazoo, provider) if u.state == UploadState.READY]


def test_each_cloud_gets_its_format(
    builder: Builder, clouds: SimCloudFixture, kazoo_client: KazooClient
) -> None:
    uploads = {
        c: wait_for(lambda c=c: ready_uploads(kazoo_client, c), what=f"upload to {c}")[0]
        for c in CLOUDS
    }
    (build,) = [b for b in read_builds(kazoo_client) if b.state == BuildState.READY]
    assert sorted(build.formats) == ["qcow2", "raw", "vhd"]
    for cloud, upload in uploads.items():
        fmt = THREE_CLOUDS[cloud]["image_formats"][0]
        assert upload.build_id == build.id
        assert upload.format == fmt
        (image,) = cloud_images(clouds.admin(cloud))
        assert image["id"] == upload.external_id
        assert image["name"] == upload.external_name
        assert image["status"] == "active"
        assert image["disk_format"] == fmt
        props = image["properties"]
        assert props["nodepool_build_id"] == build.id
        assert props["nodepool_upload_id"] == upload.id
        assert props["nodepool_provider_name"] == cloud


def test_third_build_rotates_out_the_first(
    builder: Builder, clouds: SimCloudFixture, kazoo_client: KazooClient
) -> None:
    assert builder.ctx is not None
    store = builder.ctx.images.flags
    build_ids: list[str] = []
    for n in range(3):
        if n:
            store.request_build("debian")
        new = wait_for(
            lambda: [
                b.id
                for b in read_builds(kazoo_client)
                if b.state == BuildState.READY and b.id not in build_ids
            ],
            what=f"build {n + 1}",
            timeout=30,
        )
        build_ids.append(new[-1] or "")
        for c in CLOUDS:
            wait_for(
                lambda c=c: [
                    u for u in ready_uploads(kazoo_client, c) if u.build_id == build_ids[-1]
                ],
                what=f"build {n + 1} uploaded to {c}",
                timeout=30,
            )
    first = build_ids[0]

    def rotated() -> bool:
        ready = [b.id for b in read_builds(kazoo_client) if b.state == BuildState.READY]
        if sorted(ready) != sorted(build_ids[1:]) or len(read_builds(kazoo_client)) != 2:
            return False
        for c in CLOUDS:
            ups = read_uploads(kazoo_client, c)
            if len(ups) != 2 or {u.build_id for u in ups} != set(build_ids[1:]):
                return False
            if cloud_images(clouds.admin(c), first):
                return False
        return True

    wait_for(rotated, what="rotation to 2 builds and 2 uploads per provider", timeout=30)
    for c in CLOUDS:
        assert len(cloud_images(clouds.admin(c))) == 2
    images_dir = Path(builder.watcher.config.images_dir or "")  # type: ignore[union-attr]
    assert not list(images_dir.glob(f"debian-{first}*"))


def test_failing_cloud_does_not_delay_others_and_recovers(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    clouds: SimCloudFixture,
    kazoo_client: KazooClient,
) -> None:
    clouds.admin("qcow-cloud").set_faults(error_rate={"image": 1.0})
    config = write_config(tmp_path, zk_chroot, [diskimage("debian")], [provider(c) for c in CLOUDS])
    b = Builder(
        str(config),
        timing=FAST,
        hostname="builder-test",
        upload_workers=2,
        clouds_yaml=str(clouds.clouds_yaml),
    )
    b.start()
    try:
        for c in ("vhd-cloud", "raw-cloud"):
            wait_for(lambda c=c: ready_uploads(kazoo_client, c), what=f"upload to {c}")
        # Both healthy clouds are served while the broken one has not succeeded once.
        assert not ready_uploads(kazoo_client, "qcow-cloud")
        assert not cloud_images(clouds.admin("qcow-cloud"))
        wait_for(
            lambda: clouds.admin("qcow-cloud").stats()["injected_errors"].get("image"),
            what="a failed attempt",
        )
        clouds.admin("qcow-cloud").set_faults(error_rate={"image": 0.0})
        (upload,) = wait_for(
            lambda: ready_uploads(kazoo_client, "qcow-cloud"), what="retry succeeds", timeout=30
        )
        (image,) = cloud_images(clouds.admin("qcow-cloud"))
        assert image["id"] == upload.external_id
        # The failed attempts' records are cleaned up.
        wait_for(
            lambda: (
                [u.state for u in read_uploads(kazoo_client, "qcow-cloud")] == [UploadState.READY]
            ),
            what="failed records removed",
        )
    finally:
        b.stop()


def test_config_changes_remove_uploads_from_clouds(
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    clouds: SimCloudFixture,
    builder: Builder,
    kazoo_client: KazooClient,
) -> None:
    for c in CLOUDS:
        wait_for(lambda c=c: ready_uploads(kazoo_client, c), what=f"upload to {c}")
    # raw-cloud stops using the image: its upload leaves the cloud and ZooKeeper.
    providers = [provider(c) for c in CLOUDS]
    providers[2]["diskimages"] = []
    write_config(tmp_path, zk_chroot, [diskimage("debian")], providers)
    wait_for(
        lambda: (
            not read_uploads(kazoo_client, "raw-cloud")
            and not cloud_images(clouds.admin("raw-cloud"))
        ),
        what="raw-cloud upload deleted",
    )
    assert ready_uploads(kazoo_client, "qcow-cloud") and ready_uploads(kazoo_client, "vhd-cloud")
    # A second diskimage added by a reload gets built and uploaded.
    providers[0]["diskimages"] = [{"name": "debian"}, {"name": "other"}]
    write_config(tmp_path, zk_chroot, [diskimage("debian"), diskimage("other")], providers)
    wait_for(lambda: read_uploads(kazoo_client, "qcow-cloud", "other"), what="new image uploaded")
    # The image leaves the config entirely: every build, upload and cloud image goes.
    for p in providers:
        p["diskimages"] = [{"name": "other"}] if p is providers[0] else []
    write_config(tmp_path, zk_chroot, [diskimage("other")], providers)
    wait_for(
        lambda: (
            not read_builds(kazoo_client)
            and all(not cloud_images(clouds.admin(c), None) or c == "qcow-cloud" for c in CLOUDS)
        ),
        what="image removed everywhere",
    )
    (left,) = cloud_images(clouds.admin("qcow-cloud"))
    assert left["name"].startswith("other-")

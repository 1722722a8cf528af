"""A provider removed from the config loses its uploads: the records and the cloud images, both
when the running builder reloads the config and when a restarted builder finds them (it uses
the clouds.yaml cloud the upload recorded). Real ZooKeeper, simcloud over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.model.image import UploadState
from tests.builder.support import (
    cloud_images,
    diskimage,
    provider,
    read_uploads,
    three_cloud_profile,
    wait_for,
    write_config,
)
from tests.fixtures.simcloud import SimCloudFixture
from tests.fixtures.zookeeper import ZooKeeperChroot

FAST = BuilderTiming(
    build_interval=0.3, upload_interval=0.3, cleanup_interval=0.3, config_interval=0.2
)
KEPT, REMOVED = "qcow-cloud", "raw-cloud"


@pytest.fixture
def clouds(tmp_path: Path) -> Iterator[SimCloudFixture]:
    with SimCloudFixture(three_cloud_profile(), directory=tmp_path / "sim") as cloud:
        yield cloud


def _start(config: Path, clouds: SimCloudFixture) -> Builder:
    b = Builder(str(config), timing=FAST, hostname="removed", clouds_yaml=str(clouds.clouds_yaml))
    b.start()
    return b


def _uploaded_to_both(kazoo: KazooClient, clouds: SimCloudFixture) -> None:
    for c in (KEPT, REMOVED):
        wait_for(
            lambda c=c: [u for u in read_uploads(kazoo, c) if u.state == UploadState.READY],
            what=f"upload to {c}",
        )
        assert len(cloud_images(clouds.admin(c))) == 1
    (upload,) = read_uploads(kazoo, REMOVED)
    assert upload.extra["cloud"] == REMOVED


def _removed_everywhere(kazoo: KazooClient, clouds: SimCloudFixture) -> None:
    wait_for(
        lambda: not read_uploads(kazoo, REMOVED) and not cloud_images(clouds.admin(REMOVED)),
        what=f"{REMOVED} upload record and cloud image deleted",
    )
    assert [u.state for u in read_uploads(kazoo, KEPT)] == [UploadState.READY]
    assert len(cloud_images(clouds.admin(KEPT))) == 1


def test_reload_without_provider_deletes_its_uploads(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, clouds: SimCloudFixture, kazoo_client: KazooClient
) -> None:
    both = [provider(KEPT), provider(REMOVED)]
    config = write_config(tmp_path, zk_chroot, [diskimage("debian")], both)
    b = _start(config, clouds)
    try:
        _uploaded_to_both(kazoo_client, clouds)
        write_config(tmp_path, zk_chroot, [diskimage("debian")], [provider(KEPT)])
        _removed_everywhere(kazoo_client, clouds)
        assert b.ctx is not None
        wait_for(lambda: not b.ctx.retired_providers(), what="removed adapter released")
    finally:
        b.stop()


def test_restarted_builder_deletes_uploads_of_removed_provider(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, clouds: SimCloudFixture, kazoo_client: KazooClient
) -> None:
    both = [provider(KEPT), provider(REMOVED)]
    config = write_config(tmp_path, zk_chroot, [diskimage("debian")], both)
    b = _start(config, clouds)
    try:
        _uploaded_to_both(kazoo_client, clouds)
    finally:
        b.stop()
    write_config(tmp_path, zk_chroot, [diskimage("debian")], [provider(KEPT)])
    b = _start(config, clouds)
    try:
        _removed_everywhere(kazoo_client, clouds)
    finally:
        b.stop()


def test_unreachable_removed_cloud_is_given_up(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, clouds: SimCloudFixture, kazoo_client: KazooClient
) -> None:
    both = [provider(KEPT), provider(REMOVED)]
    config = write_config(tmp_path, zk_chroot, [diskimage("debian")], both)
    b = _start(config, clouds)
    try:
        _uploaded_to_both(kazoo_client, clouds)
        clouds.admin(REMOVED).set_faults(error_rate={"image": 1.0})
        write_config(tmp_path, zk_chroot, [diskimage("debian")], [provider(KEPT)])
        # After REMOVED_PROVIDER_ATTEMPTS failed deletes the record goes; the image stays.
        wait_for(lambda: not read_uploads(kazoo_client, REMOVED), what="record given up")
        clouds.admin(REMOVED).set_faults(error_rate={"image": 0.0})
        assert len(cloud_images(clouds.admin(REMOVED))) == 1
        assert [u.state for u in read_uploads(kazoo_client, KEPT)] == [UploadState.READY]
    finally:
        b.stop()

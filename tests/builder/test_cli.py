"""The admin CLI against a running builder: `image-build --wait` shows the build, then each
provider's upload; the list commands show what the builder wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.cmd import admin
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

FAST = BuilderTiming(
    build_interval=0.3, upload_interval=0.3, cleanup_interval=0.5, config_interval=0.2
)


@pytest.fixture
def setup(tmp_path: Path, zk_chroot: ZooKeeperChroot) -> Iterator[tuple[Path, Builder]]:
    with SimCloudFixture(three_cloud_profile(), directory=tmp_path / "sim") as clouds:
        config = write_config(
            tmp_path, zk_chroot, [diskimage("debian")], [provider(c) for c in THREE_CLOUDS]
        )
        builder = Builder(str(config), timing=FAST, clouds_yaml=str(clouds.clouds_yaml))
        builder.start()
        try:
            yield config, builder
        finally:
            builder.stop()


def test_image_build_wait_and_lists(
    setup: tuple[Path, Builder], capsys: pytest.CaptureFixture[str]
) -> None:
    config, builder = setup
    assert builder.ctx is not None
    store = builder.ctx.images
    wait_for(
        lambda: all(store.uploads.latest_ready_upload("debian", c) for c in THREE_CLOUDS),
        what="first build uploaded",
    )
    capsys.readouterr()
    rc = admin.main(["-c", str(config), "image-build", "debian", "--wait", "--timeout", "60"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "debian build" in out.out
    for cloud in THREE_CLOUDS:
        assert f"upload to {cloud}: ready" in out.out
    assert "built and uploaded" in out.out
    builds = store.builds.builds("debian")
    assert len(builds) == 2
    assert admin.main(["-c", str(config), "--json", "dib-image-list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {row["id"]: sorted(row["formats"]) for row in listed} == {
        f"debian-{b.id}": ["qcow2", "raw", "vhd"] for b in builds
    }

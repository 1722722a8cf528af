"""`nodepool image-build --wait` while a cloud rejects uploads: a failed attempt is shown and
waited through (the builder retries), so the command succeeds once the retry does; with the
cloud still failing, `--timeout` ends it with the provider and its last error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.cmd import admin
from nodepool_ng.model.image import UploadState
from tests.builder.support import (
    THREE_CLOUDS,
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
    build_interval=0.3,
    upload_interval=0.3,
    cleanup_interval=0.5,
    config_interval=0.2,
    upload_retry_base=0.3,
    upload_retry_cap=1.0,
)
BROKEN = "qcow-cloud"


@pytest.fixture
def setup(
    tmp_path: Path, zk_chroot: ZooKeeperChroot
) -> Iterator[tuple[Path, Builder, SimCloudFixture]]:
    with SimCloudFixture(three_cloud_profile(), directory=tmp_path / "sim") as clouds:
        config = write_config(
            tmp_path, zk_chroot, [diskimage("debian")], [provider(c) for c in THREE_CLOUDS]
        )
        builder = Builder(str(config), timing=FAST, clouds_yaml=str(clouds.clouds_yaml))
        builder.start()
        try:
            assert builder.ctx is not None
            store = builder.ctx.images.uploads
            wait_for(
                lambda: all(store.latest_ready_upload("debian", c) for c in THREE_CLOUDS),
                what="first build uploaded",
            )
            clouds.admin(BROKEN).set_faults(error_rate={"image": 1.0})
            yield config, builder, clouds
        finally:
            builder.stop()


def test_wait_survives_a_failed_attempt(
    setup: tuple[Path, Builder, SimCloudFixture],
    kazoo_client: KazooClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, _, clouds = setup
    before = {u.build_id for u in read_uploads(kazoo_client)}
    result: list[int] = []
    argv = ["-c", str(config), "image-build", "debian", "--wait", "--timeout", "60"]
    cli = threading.Thread(target=lambda: result.append(admin.main(argv)))
    cli.start()
    printed: list[str] = []

    def cli_saw_the_failure() -> bool:
        # The cloud keeps failing until the CLI has shown a failed attempt: a loaded machine
        # may let the CLI's poll miss a failed record that a quick retry replaced.
        printed.append(capsys.readouterr().out)
        return f"upload to {BROKEN}: failed (attempt" in "".join(printed)

    try:
        wait_for(
            lambda: [
                u
                for u in read_uploads(kazoo_client, BROKEN)
                if u.build_id not in before and u.state == UploadState.FAILED
            ],
            what="a failed upload attempt of the new build",
        )
        wait_for(cli_saw_the_failure, what="the CLI showing the failed attempt", timeout=45)
        clouds.admin(BROKEN).set_faults(error_rate={"image": 0.0})
    finally:
        cli.join(60)
    out = capsys.readouterr()
    text = "".join(printed) + out.out
    assert result == [0], out.err
    assert f"upload to {BROKEN}: failed (attempt 1)" in text
    assert "the builder retries" in text
    for cloud in THREE_CLOUDS:
        assert f"upload to {cloud}: ready" in text
    assert "built and uploaded" in text


def test_wait_times_out_naming_the_failing_provider(
    setup: tuple[Path, Builder, SimCloudFixture], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, _ = setup
    capsys.readouterr()
    rc = admin.main(["-c", str(config), "image-build", "debian", "--wait", "--timeout", "4"])
    out = capsys.readouterr()
    assert rc == 1
    assert "within --timeout 4s" in out.err
    assert f"{BROKEN} (last attempt failed:" in out.err
    for cloud in THREE_CLOUDS:
        if cloud != BROKEN:
            assert f"upload to {cloud}: ready" in out.out

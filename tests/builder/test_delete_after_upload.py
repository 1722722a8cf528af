"""`delete-after-upload` / `keep-formats`: local files go once every provider has the build;
a provider added later gets the kept format from the same build, or a new build when its
format was deleted. Real ZooKeeper, real qemu-img files, simcloud over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from nodepool_ng.builder import policy, prune
from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState
from tests.builder.support import (
    diskimage,
    provider,
    read_builds,
    read_uploads,
    wait_for,
    write_config,
)
from tests.fixtures.simcloud import SimCloudFixture, cloud_profile
from tests.fixtures.zookeeper import ZooKeeperChroot

FAST = BuilderTiming(
    build_interval=0.3,
    upload_interval=0.3,
    cleanup_interval=0.3,
    config_interval=0.2,
    upload_retry_base=0.2,
    upload_retry_cap=1.0,
)
CLOUDS = {"qcow-a": "qcow2", "raw-a": "raw", "qcow-b": "qcow2", "raw-b": "raw"}


@pytest.fixture
def clouds(tmp_path: Path) -> Iterator[SimCloudFixture]:
    profile = {
        "clouds": [
            cloud_profile(name, image_formats=[fmt], image_upload="put")
            for name, fmt in CLOUDS.items()
        ]
    }
    with SimCloudFixture(profile, directory=tmp_path / "sim") as cloud:
        yield cloud


def _image(**kw: Any) -> dict[str, Any]:
    return diskimage("debian", **{"delete-after-upload": True, **kw})


def _ready(kazoo: KazooClient) -> list[ImageBuild]:
    return [b for b in read_builds(kazoo) if b.state == BuildState.READY]


def _uploaded(kazoo: KazooClient, cloud: str, build_id: str) -> list[ImageUpload]:
    return [
        u
        for u in read_uploads(kazoo, cloud)
        if u.state == UploadState.READY and u.build_id == build_id
    ]


def test_files_pruned_then_new_providers_served(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, clouds: SimCloudFixture, kazoo_client: KazooClient
) -> None:
    image = _image(**{"keep-formats": ["qcow2"]})
    config = write_config(tmp_path, zk_chroot, [image], [provider("qcow-a"), provider("raw-a")])
    images_dir = tmp_path / "images"
    b = Builder(str(config), timing=FAST, hostname="prune", clouds_yaml=str(clouds.clouds_yaml))
    b.start()
    try:
        (build,) = wait_for(lambda: _ready(kazoo_client), what="first build")
        assert build.id is not None
        first = build.id
        base = images_dir / f"debian-{first}"
        for c in ("qcow-a", "raw-a"):
            wait_for(lambda c=c: _uploaded(kazoo_client, c, first), what=f"upload to {c}")
        # The image file goes first, then its checksum files: wait for all three.
        wait_for(lambda: not list(images_dir.glob(f"debian-{first}.raw*")), what="raw pruned")
        for name in ("qcow2", "qcow2.md5", "qcow2.sha256"):
            assert (images_dir / f"debian-{first}.{name}").is_file()
        (record,) = wait_for(
            lambda: [b for b in _ready(kazoo_client) if policy.pruned_formats(b) == {"raw"}],
            what="record lists the pruned format",
        )
        assert record.id == first and sorted(record.formats) == ["qcow2", "raw"]
        assert base.with_suffix(".d").is_dir()

        # A provider wanting the kept format is served from the same build.
        three = [provider("qcow-a"), provider("raw-a"), provider("qcow-b")]
        write_config(tmp_path, zk_chroot, [image], three)
        wait_for(lambda: _uploaded(kazoo_client, "qcow-b", first), what="upload to qcow-b")
        assert [b.id for b in read_builds(kazoo_client)] == [first]

        # A provider wanting a deleted format makes the builder build again; the new build
        # reaches every provider (and is pruned in turn).
        write_config(tmp_path, zk_chroot, [image], [*three, provider("raw-b")])
        second = wait_for(
            lambda: [b.id for b in _ready(kazoo_client) if b.id != first],
            what="a new build for raw-b",
        )[0]
        assert second is not None
        for c in CLOUDS:
            wait_for(lambda c=c: _uploaded(kazoo_client, c, second), what=f"{c} gets build 2")
        wait_for(lambda: not (images_dir / f"debian-{second}.raw").exists(), what="pruned 2")
        assert (images_dir / f"debian-{second}.qcow2").is_file()
        # Still one build from the pruned one's point of view: no rebuild loop.
        assert {b.id for b in read_builds(kazoo_client)} == {first, second}
    finally:
        b.stop()


def test_no_keep_formats_removes_every_image_file(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, clouds: SimCloudFixture, kazoo_client: KazooClient
) -> None:
    config = write_config(tmp_path, zk_chroot, [_image()], [provider("qcow-a")])
    images_dir = tmp_path / "images"
    b = Builder(str(config), timing=FAST, hostname="prune", clouds_yaml=str(clouds.clouds_yaml))
    b.start()
    try:
        (build,) = wait_for(lambda: _ready(kazoo_client), what="build")
        assert build.id is not None
        wait_for(lambda: _uploaded(kazoo_client, "qcow-a", build.id or ""), what="upload")
        wait_for(
            lambda: not list(images_dir.glob(f"debian-{build.id}.qcow2*")), what="qcow2 pruned"
        )
        (record,) = _ready(kazoo_client)
        assert record.state == BuildState.READY and policy.pruned_formats(record) == {"qcow2"}
    finally:
        b.stop()


def _upload(provider_name: str, build_id: str, state: UploadState) -> ImageUpload:
    return ImageUpload(
        image_name="debian", build_id=build_id, provider_name=provider_name, id="1", state=state
    )


def test_uploaded_everywhere_and_rebuild_reason() -> None:
    build = ImageBuild(image_name="debian", id="b1", state=BuildState.READY, formats=["raw"])
    uploads = {
        "p1": [_upload("p1", "b1", UploadState.READY)],
        "p2": [_upload("p2", "b1", UploadState.UPLOADING), _upload("p2", "b0", UploadState.READY)],
    }
    assert prune.uploaded_everywhere(build, ["p1"], uploads)
    assert not prune.uploaded_everywhere(build, ["p1", "p2"], uploads)
    assert not prune.uploaded_everywhere(build, [], uploads)
    # The pruned format, needed again, is a reason to build; a kept one is not.
    build.extra[policy.PRUNED_FORMATS_KEY] = "raw"
    assert policy.build_reason([build], ["raw"], 3600, build.state_time or 0, False, ["raw"])
    assert not policy.build_reason([build], ["raw"], 3600, build.state_time or 0, False, [])
    assert not policy.build_reason([build], ["raw"], 3600, build.state_time or 0, False, ["qcow2"])

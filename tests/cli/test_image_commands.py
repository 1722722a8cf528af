"""`nodepool` image commands on ImageStore records in real ZooKeeper."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.images import ImageStore
from tests.cli.conftest import CliResult, read_json
from tests.fixtures.zookeeper import ZooKeeperChroot

Run = Callable[..., CliResult]


@pytest.fixture
def images(zk_chroot: ZooKeeperChroot) -> Iterator[ImageStore]:
    client = ZooKeeperClient(zk_chroot.hosts)
    client.start()
    try:
        yield ImageStore(client)
    finally:
        client.stop()


def make_build(
    store: ImageStore, image: str = "debian", state: BuildState = BuildState.READY
) -> ImageBuild:
    build = ImageBuild(image_name=image, state=state, builder="builder1", formats=["qcow2", "raw"])
    store.builds.create_build(build)
    return build


def make_upload(
    store: ImageStore, build: ImageBuild, provider: str, state: UploadState = UploadState.READY
) -> ImageUpload:
    upload = ImageUpload(
        image_name=build.image_name,
        build_id=build.id,
        provider_name=provider,
        state=state,
        external_id=f"img-{provider}",
        external_name="debian-1",
    )
    store.uploads.create_upload(upload)
    return upload


def test_dib_image_list_and_image_list(run_cli: Run, images: ImageStore) -> None:
    build = make_build(images)
    make_upload(images, build, "cloud1")
    make_upload(images, build, "cloud2", UploadState.UPLOADING)

    dib = run_cli("dib-image-list")
    assert dib.rc == 0, dib.err
    lines = dib.out.splitlines()
    assert [c.strip() for c in lines[1].strip("|").split("|")] == [
        "ID",
        "Image",
        "Builder",
        "Formats",
        "State",
        "Age",
    ]
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row[:5] == [f"debian-{build.id}", "debian", "builder1", "qcow2,raw", "ready"]

    listing = run_cli("--json", "image-list").json()
    assert [(r["id"], r["upload_id"], r["provider"], r["state"]) for r in listing] == [
        (build.id, "0000000000", "cloud1", "ready"),
        (build.id, "0000000000", "cloud2", "uploading"),
    ]
    text = run_cli("image-list").out.splitlines()
    assert [c.strip() for c in text[1].strip("|").split("|")] == [
        "Build ID",
        "Upload ID",
        "Provider",
        "Image",
        "Provider Image Name",
        "Provider Image ID",
        "State",
        "Age",
    ]


def test_pause_unpause_and_status(run_cli: Run, images: ImageStore) -> None:
    make_build(images)
    assert run_cli("image-pause", "debian").rc == 0
    assert images.flags.is_paused("debian")
    assert run_cli("--json", "dib-image-list").json()[0]["state"] == "paused"
    status = {r["image"]: r for r in run_cli("--json", "image-status").json()}
    # Configured diskimages show up even before any build exists.
    assert set(status) == {"debian", "frozen"}
    assert status["debian"]["paused"] is True
    assert status["debian"]["build_request"] == ""
    assert run_cli("image-unpause", "debian").rc == 0
    assert not images.flags.is_paused("debian")


def test_image_build_requests_a_build(run_cli: Run, images: ImageStore) -> None:
    result = run_cli("image-build", "debian")
    assert result.rc == 0, result.err
    assert images.flags.build_requested_at("debian") is not None
    status = {r["image"]: r for r in run_cli("--json", "image-status").json()}
    assert status["debian"]["build_request"] == "pending"
    assert isinstance(status["debian"]["build_request_age"], int)


def test_image_build_refuses_unknown_and_paused(run_cli: Run, images: ImageStore) -> None:
    unknown = run_cli("image-build", "nosuch")
    assert unknown.rc == 1 and "nosuch" in unknown.err and "Traceback" not in unknown.err
    paused = run_cli("image-build", "frozen")
    assert paused.rc == 1 and "paused" in paused.err
    assert images.flags.build_requested_at("frozen") is None


def test_image_build_wait_follows_build_and_uploads(
    run_cli: Run, images: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("nodepool_ng.cmd.admin_images.WAIT_POLL_SECONDS", 0.05)
    old = make_build(images)  # an earlier build must not be mistaken for the new one

    def builder() -> None:
        # Plays the builder: notice the request, build, then upload to both providers.
        while images.flags.build_requested_at("debian") is None:
            threading.Event().wait(0.02)
        build = make_build(images, state=BuildState.BUILDING)
        build.state = BuildState.READY
        images.builds.store_build(build)
        for provider in ("cloud1", "cloud2"):
            upload = make_upload(images, build, provider, UploadState.UPLOADING)
            upload.state = UploadState.READY
            images.uploads.store_upload(upload)

    thread = threading.Thread(target=builder, daemon=True)
    thread.start()
    result = run_cli("image-build", "debian", "--wait", "--timeout", "60")
    thread.join(10)
    assert result.rc == 0, result.err
    assert str(old.id) not in result.out
    assert "upload to cloud1: ready" in result.out
    assert "upload to cloud2: ready" in result.out
    assert result.out.rstrip().endswith("built and uploaded")


def test_image_build_wait_reports_failure(
    run_cli: Run, images: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("nodepool_ng.cmd.admin_images.WAIT_POLL_SECONDS", 0.05)

    def builder() -> None:
        while images.flags.build_requested_at("debian") is None:
            threading.Event().wait(0.02)
        make_build(images, state=BuildState.FAILED)

    thread = threading.Thread(target=builder, daemon=True)
    thread.start()
    result = run_cli("image-build", "debian", "--wait", "--timeout", "60")
    thread.join(10)
    assert result.rc == 1
    assert "failed" in result.err


def test_image_delete(run_cli: Run, images: ImageStore, kazoo_client: KazooClient) -> None:
    build = make_build(images)
    ready = make_upload(images, build, "cloud1")
    busy = make_upload(images, build, "cloud2", UploadState.UPLOADING)
    args = ["--image", "debian", "--build-id", str(build.id)]
    refused = run_cli("image-delete", *args, "--provider", "cloud2", "--upload-id", str(busy.id))
    assert refused.rc == 1 and "uploading" in refused.err
    done = run_cli("image-delete", *args, "--provider", "cloud1", "--upload-id", str(ready.id))
    assert done.rc == 0, done.err
    assert read_json(kazoo_client, ready.path)["state"] == "deleting"
    missing = run_cli("image-delete", *args, "--provider", "cloud1", "--upload-id", "0000000042")
    assert missing.rc == 1 and "not found" in missing.err


def test_dib_image_delete(run_cli: Run, images: ImageStore) -> None:
    ready = make_build(images)
    building = make_build(images, state=BuildState.BUILDING)
    assert run_cli("dib-image-delete", f"debian-{building.id}").rc == 1
    result = run_cli("dib-image-delete", f"debian-{ready.id}")
    assert result.rc == 0, result.err
    assert images.builds.get_build("debian", str(ready.id)).state == BuildState.DELETING
    assert images.builds.get_build("debian", str(building.id)).state == BuildState.BUILDING
    assert run_cli("dib-image-delete", "nodash").rc == 1


def test_export_import_round_trip(
    run_cli: Run, images: ImageStore, kazoo_client: KazooClient, tmp_path: Path
) -> None:
    build = make_build(images)
    first = make_upload(images, build, "cloud1")
    second = make_upload(images, build, "cloud1")
    images.flags.set_paused("debian", True)
    export = tmp_path / "images.json"
    assert run_cli("export-image-data", str(export)).rc == 0
    assert os.stat(export).st_mode & 0o777 == 0o600
    data = json.loads(export.read_text())
    assert set(data) == {
        "/nodepool/images/debian/pause",
        f"/nodepool/images/debian/builds/{build.id}",
        first.path,
        second.path,
    }

    # Importing on top of existing data is refused without writing anything.
    refused = run_cli("import-image-data", str(export))
    assert refused.rc == 1 and "already exists" in refused.err

    kazoo_client.delete("/nodepool/images", recursive=True)
    assert run_cli("import-image-data", str(export)).rc == 0
    assert images.flags.is_paused("debian")
    assert images.builds.get_build("debian", str(build.id)).formats == ["qcow2", "raw"]
    restored = images.uploads.get_upload("debian", str(build.id), "cloud1", str(second.id))
    assert restored.external_id == "img-cloud1"
    # The upload counter moved past the imported ids: a new upload gets a fresh one.
    new = make_upload(images, images.builds.get_build("debian", str(build.id)), "cloud1")
    assert int(str(new.id)) > int(str(second.id))


def test_import_rejects_bad_files(run_cli: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert run_cli("import-image-data", str(bad)).rc == 1
    bad.write_text("{not json")
    result = run_cli("import-image-data", str(bad))
    assert result.rc == 1 and "not JSON" in result.err
    bad.write_text(json.dumps({"/nodepool/nodes/0000000001": "{}"}))
    result = run_cli("import-image-data", str(bad))
    assert result.rc == 1 and "not an image record path" in result.err

"""The image stores: builds, uploads, flags and locks at upstream paths with upstream JSON."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from kazoo.client import KazooClient

from nodepool_ng.errors import LockError
from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.images import ImageStore
from tests.zk.util import wait_for


def test_builds_uploads_and_latest_ready(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    store = ImageStore(zk_client)
    old = ImageBuild(image_name="debian", builder="b1", builder_id="uuid-1", formats=["qcow2"])
    old_id = store.builds.create_build(old)
    assert len(old_id) == 32
    old.set_state(BuildState.READY)
    store.builds.store_build(old)
    new = ImageBuild(image_name="debian", builder="b1", formats=["raw", "qcow2"])
    store.builds.create_build(new)
    assert [b.id for b in store.builds.builds("debian")] == [new.id, old_id]
    latest = store.builds.latest_ready_build("debian")
    assert latest is not None and latest.id == old_id

    raw = json.loads(kazoo_client.get(f"/nodepool/images/debian/builds/{new.id}")[0])
    assert raw["formats"] == "qcow2,raw" and raw["state"] == "building"

    first = ImageUpload(image_name="debian", build_id=old_id, provider_name="cloud1")
    store.uploads.create_upload(first)
    assert first.id == "0000000000"
    first.external_id = "img-1"
    first.set_state(UploadState.READY)
    store.uploads.store_upload(first)
    second = ImageUpload(image_name="debian", build_id=old_id, provider_name="cloud1")
    store.uploads.create_upload(second)
    second.set_state(UploadState.READY)
    store.uploads.store_upload(second)
    other = ImageUpload(image_name="debian", build_id=old_id, provider_name="cloud2")
    store.uploads.create_upload(other)

    latest_upload = store.uploads.latest_ready_upload("debian", "cloud1")
    assert latest_upload is not None and latest_upload.id == second.id
    assert store.uploads.latest_ready_upload("debian", "cloud2") is None  # still uploading
    expected = f"/nodepool/images/debian/builds/{old_id}/providers/cloud1/images/0000000000"
    assert first.path == expected  # set by create_upload
    assert store.uploads.get_upload_by_path(first.path).external_id == "img-1"
    assert store.uploads.get_upload("debian", old_id, "cloud1", "0000000000").path == expected
    assert latest_upload.path == f"{expected[:-1]}1"
    assert store.uploads.providers("debian", old_id) == ["cloud1", "cloud2"]

    # The cached view agrees and follows changes.
    assert store.start_cache(timeout=10)
    try:
        cached = store.uploads.latest_ready_upload("debian", "cloud1")
        assert cached is not None and cached.id == second.id
        assert cached.path == second.path != ""
        store.uploads.delete_upload(second)
        wait_for(lambda: (u := store.uploads.latest_ready_upload("debian", "cloud1")) is not None
                 and u.id == first.id, what="cache drops deleted upload")
        store.flags.set_paused("debian", True)
        wait_for(lambda: store.flags.is_paused("debian"), what="pause flag in cache")
    finally:
        store.stop_cache()

    store.builds.delete_build("debian", old_id)
    assert [b.id for b in store.builds.builds("debian")] == [new.id]


def test_flags_and_locks(
    zk_client: ZooKeeperClient, make_client: Callable[..., ZooKeeperClient],
    kazoo_client: KazooClient,
) -> None:
    store = ImageStore(zk_client)
    other = ImageStore(make_client())
    assert not store.flags.is_paused("img")
    store.flags.set_paused("img", True)
    assert other.flags.is_paused("img") and kazoo_client.exists("/nodepool/images/img/pause")
    store.flags.set_paused("img", False)
    assert not other.flags.is_paused("img")

    assert store.flags.build_requested_at("img") is None
    other.flags.request_build("img")
    assert store.flags.build_requested_at("img") is not None
    store.flags.remove_build_request("img")
    assert store.flags.build_requested_at("img") is None

    lock = store.builds.lock_image_builds("img")
    assert kazoo_client.get_children("/nodepool/images/img/builds/lock")
    with pytest.raises(LockError):
        other.builds.lock_image_builds("img")
    store.builds.unlock(lock)
    other.builds.unlock(other.builds.lock_image_builds("img"))

    upload_lock = store.uploads.lock_uploads("img", "b1", "cloud1")
    assert other.uploads.is_uploading("img", "b1", "cloud1")
    with pytest.raises(LockError):
        other.uploads.lock_uploads("img", "b1", "cloud1")
    store.uploads.unlock(upload_lock)
    assert not other.uploads.is_uploading("img", "b1", "cloud1")
    assert other.builds.builds("img") == []  # the lock dir is not a build

"""The generic record store (zk/records.py) and the image stores split by noun."""

from __future__ import annotations

import pytest
from kazoo.client import KazooClient

from nodepool_ng.errors import RecordNotFound, ZooKeeperError
from nodepool_ng.model.image import ImageBuild, ImageUpload
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.images import UPLOADS, BuildStore, ImageFlagStore, ImageStore, UploadStore
from nodepool_ng.zk.nodes import NODES, NodeStore
from tests.zk.util import wait_for


def test_identity_is_checked_before_any_write(zk_client: ZooKeeperClient) -> None:
    with pytest.raises(ValueError, match="node has no id"):
        NodeStore(zk_client).store(Node(state=NodeState.READY))
    with pytest.raises(ValueError, match="upload has no provider_name"):
        UploadStore(zk_client).store_upload(ImageUpload(image_name="i", build_id="b", id="1"))
    assert NODES.key(Node(id="0000000001")) == ("0000000001",)
    upload = ImageUpload(image_name="i", build_id="b", provider_name="p", id="0000000002")
    assert UPLOADS.what(UPLOADS.key(upload)) == "upload i/b/p/0000000002"


def test_version_checked_store_and_refresh_keep_what_is_ours(
    zk_client: ZooKeeperClient, kazoo_client: KazooClient
) -> None:
    store = NodeStore(zk_client)
    node = Node(state=NodeState.READY, type=["small"])
    node_id = store.create(node)
    stale = store.get(node_id)
    node.comment = "first"
    store.store(node, check_version=True)
    assert node.zk_version == 1
    stale.comment = "second"
    with pytest.raises(ZooKeeperError, match=f"node {node_id}: changed since read"):
        store.store(stale, check_version=True)

    store.lock(stale)
    stale.lock_contenders = frozenset({"ours"})
    kazoo_client.set(f"/nodepool/nodes/{node_id}",
                     b'{"state": "in-use", "comment": "zuul", "zuul_key": 1}')
    lock = stale.lock
    store.refresh(stale)
    assert (stale.state, stale.comment, stale.extra) == (NodeState.IN_USE, "zuul", {"zuul_key": 1})
    assert stale.zk_version == 2 and stale.type == []
    assert stale.lock is lock and stale.lock_contenders == frozenset({"ours"})
    store.unlock(stale)


def test_image_stores_by_noun_share_one_cache(zk_client: ZooKeeperClient) -> None:
    builds = BuildStore(zk_client)
    uploads = UploadStore(zk_client, cache=builds.cache)
    flags = ImageFlagStore(zk_client, cache=builds.cache)
    build = ImageBuild(image_name="debian", formats=["raw"])
    build_id = builds.create_build(build)
    upload = ImageUpload(image_name="debian", build_id=build_id, provider_name="p")
    uploads.create_upload(upload)
    flags.set_paused("debian", True)
    assert builds.start_cache(timeout=10)
    try:
        wait_for(lambda: len(builds.cache) == 3, what="build, upload and flag cached")
        assert uploads.cache is flags.cache is builds.cache
        assert flags.is_paused("debian")
        assert builds.get_build("debian", build_id).formats == ["raw"]
    finally:
        builds.stop_cache()
    with pytest.raises(RecordNotFound):
        builds.get_build("debian", "nope")
    # ImageStore holds the three around one cache; starting it starts all three.
    store = ImageStore(zk_client)
    assert isinstance(store.flags, ImageFlagStore) and isinstance(store.builds, BuildStore)
    assert isinstance(store.uploads, UploadStore)
    assert store.flags.cache is store.builds.cache is store.uploads.cache is store.cache
    assert store.flags.is_paused("debian")
    assert store.uploads.uploads("debian", build_id, "p")[0].path
    assert store.start_cache(timeout=10)
    try:
        assert store.cache_started
        assert all(s.cache_started for s in (store.flags, store.builds, store.uploads))
        wait_for(lambda: len(store.cache) == 3, what="build, upload and flag cached")
        assert store.flags.is_paused("debian")  # answered by the cache
    finally:
        store.stop_cache()
    assert not any(s.cache_started for s in (store, store.flags, store.builds, store.uploads))

"""Builder state gauges: a paused image and a manual build request (issue 11)."""

from __future__ import annotations

from pathlib import Path

from kazoo.client import KazooClient

from nodepool_ng.builder.service import Builder
from nodepool_ng.prometheus import REGISTRY as NP
from tests.builder.support import diskimage, wait_for, write_config
from tests.builder.test_upload import FAST
from tests.fixtures.zookeeper import ZooKeeperChroot


def test_paused_and_requested(tmp_path: Path, zk_chroot: ZooKeeperChroot,
                              kazoo_client: KazooClient) -> None:
    cfg = write_config(tmp_path, zk_chroot, [diskimage("frozen1", pause=True)])
    b = Builder(str(cfg), timing=FAST, hostname="bstate")
    b.start()
    try:
        wait_for(lambda: NP.get_sample_value("nodepool_builder_image_build_state",
                                             {"host": "bstate", "image": "frozen1"}) == 3,
                 what="paused state")
        assert NP.get_sample_value("nodepool_image_build_requests") == 0
        kazoo_client.create("/nodepool/images/frozen1/request-build", b"", makepath=True)
        wait_for(lambda: NP.get_sample_value("nodepool_image_build_requests") == 1,
                 what="request counted")
        assert NP.get_sample_value("nodepool_image_image_build_requests",
                                   {"image": "frozen1"}) == 1
    finally:
        b.stop()

"""The ZooKeeper fixture gives each test an isolated chroot on a real server."""

from kazoo.client import KazooClient

from tests.fixtures.zookeeper import ZooKeeperChroot


def test_chroot_is_isolated(kazoo_client: KazooClient, zk_chroot: ZooKeeperChroot) -> None:
    kazoo_client.create("/probe", b"x", makepath=True)
    assert kazoo_client.get("/probe")[0] == b"x"
    assert zk_chroot.chroot.startswith("/nodepool_test/")

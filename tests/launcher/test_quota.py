"""Pure quota decisions: pool limits, cloud limits minus unmanaged usage."""

from __future__ import annotations

from nodepool_ng.drivers.base import META_NODE_ID, META_PROVIDER_NAME, Instance
from nodepool_ng.launcher.quota import (
    cloud_headroom,
    fits_when_empty,
    has_remaining,
    pool_limits,
    unmanaged_usage,
)
from nodepool_ng.model.quota import Quota

SMALL = Quota.of(cores=2, instances=1, ram=2048)


def inst(node_id: str | None, provider: str | None, cores: int = 2) -> Instance:
    meta = {}
    if node_id:
        meta[META_NODE_ID] = node_id
    if provider:
        meta[META_PROVIDER_NAME] = provider
    return Instance(
        external_id=f"srv-{node_id}",
        name="x",
        status="ready",
        metadata=meta,
        resources=Quota.of(cores=cores, instances=1, ram=1024),
    )


def test_pool_limits_max_servers() -> None:
    limit = pool_limits(2)
    assert has_remaining(SMALL, limit, Quota.total([SMALL]), Quota(), Quota(), False)
    assert not has_remaining(SMALL, limit, Quota.total([SMALL, SMALL]), Quota(), Quota(), False)
    assert not fits_when_empty(SMALL, pool_limits(0), Quota(), False)
    assert fits_when_empty(SMALL, pool_limits(None), Quota(), False)


def test_pool_cores_and_ram() -> None:
    assert not fits_when_empty(SMALL, pool_limits(10, max_cores=1), Quota(), False)
    assert not fits_when_empty(SMALL, pool_limits(10, max_ram=1000), Quota(), False)
    assert has_remaining(SMALL, pool_limits(None, max_cores=4), SMALL, Quota(), SMALL, False)
    assert not has_remaining(SMALL, pool_limits(None, max_cores=3), SMALL, Quota(), SMALL, False)


def test_unmanaged_and_leaked_servers_reduce_cloud_headroom() -> None:
    instances = [
        inst("0001", "p1"),  # ours, known
        inst("0002", "p1"),  # ours but no node record: leaked, counts as unmanaged
        inst(None, None, cores=4),  # somebody else's
        inst("0009", "other"),  # another provider's
    ]
    used = unmanaged_usage(instances, "p1", {"0001"})
    assert used.get("instances") == 3
    assert used.get("cores") == 8
    cloud = cloud_headroom(Quota.limits(cores=10, instances=4, ram=None), used)
    assert cloud.get("instances") == 1
    # One more small node fits (2 cores of 2 left), a second does not.
    assert has_remaining(SMALL, pool_limits(None), Quota(), cloud, Quota(), False)
    assert not has_remaining(SMALL, pool_limits(None), SMALL, cloud, SMALL, False)
    # ignore-provider-quota skips the cloud part.
    assert has_remaining(SMALL, pool_limits(None), SMALL, cloud, SMALL, True)
    assert not fits_when_empty(Quota.of(cores=3, instances=1), pool_limits(None), cloud, False)

"""Pure quota decisions: pool limits and cloud limits against usage.

Cloud headroom = the cloud's limits minus what servers we do not manage use. Our own usage is
counted from ZooKeeper node records, so a node counts from the moment its record exists.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from nodepool_ng.drivers.base import Instance
from nodepool_ng.model.quota import Quota


def pool_limits(
    max_servers: int | None, max_cores: int | None = None, max_ram: int | None = None
) -> Quota:
    """A pool's own limits; None means unlimited."""
    return Quota.limits(cores=max_cores, instances=max_servers, ram=max_ram)


def instance_cost(instance: Instance) -> Quota:
    return instance.resources if instance.resources is not None else Quota.of(instances=1)


def unmanaged_usage(
    instances: Iterable[Instance], provider_name: str, known_node_ids: Container[str]
) -> Quota:
    """Servers not ours (other owner, or no node record: leaked) still eat the cloud's quota."""
    costs = [
        instance_cost(i)
        for i in instances
        if i.provider_name != provider_name or i.node_id not in known_node_ids
    ]
    return Quota.total(costs)


def cloud_headroom(cloud_limits: Quota, unmanaged: Quota) -> Quota:
    return cloud_limits.headroom(unmanaged)


def fits_when_empty(
    request_cost: Quota, pool_limit: Quota, cloud_limit: Quota, ignore_provider_quota: bool
) -> bool:
    """Could this request ever be served by this pool (`hasProviderQuota`)? Else decline."""
    if not request_cost.fits_within(pool_limit):
        return False
    return ignore_provider_quota or request_cost.fits_within(cloud_limit)


def has_remaining(
    cost: Quota,
    pool_limit: Quota,
    pool_used: Quota,
    cloud_limit: Quota,
    provider_used: Quota,
    ignore_provider_quota: bool,
) -> bool:
    """Is there room for one more node of `cost` now (`hasRemainingQuota`)? Else pause."""
    if not (pool_used + cost).fits_within(pool_limit):
        return False
    return ignore_provider_quota or (provider_used + cost).fits_within(cloud_limit)

"""`tenant-resource-limits` (top-level config): defer a tenant's request while it would
take the tenant over its limits.

A tenant's usage is the sum of the `resources` of every node in ZooKeeper whose
`tenant_name` is the tenant, across all providers and launchers (upstream's
`_getUsedQuotaForTenant`: deleting nodes count too, they still hold cloud resources; nodes
without `resources` do not). A request is deferred (left `requested`, never locked) when that
usage plus what the request needs from this pool exceeds a limit; it is looked at again on
the next pass, and pool workers are woken by every node change, so a deleted node lets it in
without polling. Requests without a `tenant_name`, or whose tenant has no limits, pass.

The node cache lags our own accepts (they run in the background), so each pool also counts
what it has promised to requests it is accepting or handling (kept in its `PoolLedger`),
minus the cost of the nodes of those requests the cache already shows. Pools of other
launchers (or other pools of this one) deciding at the same instant can still both accept,
as upstream's pool workers can.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from nodepool_ng import metrics
from nodepool_ng.config.models import TenantResourceLimitConfig
from nodepool_ng.launcher.ledger import PoolLedger
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.quota import Quota
from nodepool_ng.model.request import NodeRequest

log = logging.getLogger("nodepool_ng.launcher.tenant_limits")

Limits = Mapping[str, TenantResourceLimitConfig]


def node_cost(node: Node) -> Quota | None:
    """The node's recorded `resources`, or None (not counted, as upstream)."""
    if not node.resources:
        return None
    try:
        return Quota({str(k): float(v) for k, v in node.resources.items()})
    except (TypeError, ValueError):
        return None  # another writer's odd value must not break assignment


def tenant_usage(nodes: Iterable[Node], tenants: Collection[str]) -> dict[str, Quota]:
    """Usage of each of `tenants` from the node records (DELETED is just being removed)."""
    usage: dict[str, Quota] = {}
    for node in nodes:
        tenant = node.tenant_name
        if not tenant or tenant not in tenants or node.state is NodeState.DELETED:
            continue
        cost = node_cost(node)
        if cost is not None:
            usage[tenant] = usage.get(tenant, Quota()) + cost
    return usage


def _clamped(value: Quota) -> Quota:
    return Quota({k: max(0.0, v) for k, v in value.resources.items()})


@dataclass
class TenantPass:
    """One assignment pass: usage computed once, grown by each request accepted in order."""

    limits: Limits
    usage: dict[str, Quota]
    cost: Callable[[str], Quota]
    labels: Collection[str]
    ledger: PoolLedger  # keeps what each request in flight was promised

    def needed(self, request: NodeRequest) -> Quota:
        # Upstream skips labels the pool does not serve (the request is declined for them).
        return Quota.total(self.cost(t) for t in request.node_types if t in self.labels)

    def fits(self, request: NodeRequest) -> bool:
        """False: defer `request`, its tenant would go over a limit. Errors defer too."""
        tenant = request.tenant_name
        if not tenant or tenant not in self.limits:
            return True
        try:
            after = self.usage.get(tenant, Quota()) + self.needed(request)
            ok = after.fits_within(self.limits[tenant].quota())
        except Exception:
            log.exception("Request %s: cannot check tenant %s limits; deferring",
                          request.id, tenant)
            return False
        if not ok:
            log.debug("Request %s: deferred, tenant %s would exceed its resource limits",
                      request.id, tenant)
        return ok

    def promise(self, request: NodeRequest) -> None:
        """`request` is being accepted: count what it needs until its nodes are in the cache
        (the ledger keeps the promise while the request is in flight)."""
        tenant = request.tenant_name
        if not tenant or tenant not in self.limits or request.id is None:
            return
        needed = self.needed(request)
        self.usage[tenant] = self.usage.get(tenant, Quota()) + needed
        self.ledger.promise_tenant(request.id, tenant, needed)


def tenant_pass(
    limits: Limits,
    nodes: Callable[[], Iterable[Node]],
    ledger: PoolLedger,
    cost: Callable[[str], Quota],
    labels: Collection[str],
) -> TenantPass:
    """Start a pass. `nodes`: the node cache (read only when there are limits); `ledger`:
    what the pool's requests in flight were promised (a closed request's promise is gone:
    its nodes are in ZooKeeper, or there are none)."""
    if not limits:
        return TenantPass(limits, {}, cost, labels, ledger)
    promises = ledger.tenant_promises()
    snapshot = list(nodes())
    usage = tenant_usage(snapshot, limits)
    # Promised costs not yet visible as nodes in the cache.
    shown: dict[str, Quota] = {}
    for node in snapshot:
        if node.allocated_to in promises and node.state is not NodeState.DELETED:
            nc = node_cost(node)
            if nc is not None:
                shown[node.allocated_to] = shown.get(node.allocated_to, Quota()) + nc
    for request_id, (tenant, needed) in promises.items():
        missing = _clamped(needed - shown.get(request_id, Quota()))
        usage[tenant] = usage.get(tenant, Quota()) + missing
    return TenantPass(limits, usage, cost, labels, ledger)


def limit_gauges(limits: Limits) -> dict[str, float]:
    """`nodepool.tenant_limits.<tenant>.<limit>` -> value, for the configured finite limits
    (limit names as in node `resources`: cores, instances, ram, ...)."""
    out: dict[str, float] = {}
    for tenant, cfg in limits.items():
        for name, value in cfg.quota().resources.items():
            if not math.isinf(value):
                out[metrics.tenant_limit(metrics.norm(tenant), metrics.norm(name))] = value
    return out


def report_limits(client: object, limits: Limits) -> None:
    """Send the tenant limit gauges (upstream re-sends them every pool pass)."""
    for key, value in limit_gauges(limits).items():
        try:
            client.gauge(key, int(value) if value.is_integer() else value)  # type: ignore[attr-defined]
        except Exception:  # stats must never break the launcher
            log.debug("statsd gauge %s failed", key, exc_info=True)

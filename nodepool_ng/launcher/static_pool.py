"""Matching requests to the hosts of a static pool (a driver whose nodes are registered
hosts, `launches_servers` false): can the pool ever serve a request, and are the hosts a
plan hands out alive right now."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from nodepool_ng.config.models import PoolConfig, StaticNodeConfig
from nodepool_ng.drivers import registry
from nodepool_ng.launcher.zkview import change_idle_node, mark_deleting
from nodepool_ng.log import get_logger
from nodepool_ng.model.request import NodeRequest

if TYPE_CHECKING:
    from nodepool_ng.launcher.poolctx import PoolContext


def static_decline_reason(pool: PoolConfig, request: NodeRequest) -> str | None:
    """Why a static pool can never serve `request` (upstream would keep such a request
    waiting forever): a label none of its hosts has, or more nodes than its hosts' slots can
    hold at once. Or a request that does not take existing nodes (`reuse: false`, as
    min-ready requests): a static pool has nothing else to give."""
    if not request.reuse:
        return "the request does not reuse nodes; a static pool only has registered ones"
    for label_name in request.node_types:
        if not any(label_name in h.labels for h in pool.nodes):
            return f"label {label_name} is not served by this pool"
    if not _slots_fit(list(request.node_types), pool.nodes):
        return (f"request wants {len(request.node_types)} nodes {sorted(request.node_types)}; "
                "this pool's hosts cannot hold them at once")
    return None


def _slots_fit(labels: list[str], hosts: tuple[StaticNodeConfig, ...]) -> bool:
    """Whether every wanted label gets a host slot of its own (bipartite matching with
    augmenting paths; requests and pools are small)."""
    slot_hosts = [h for h in hosts for _ in range(h.max_parallel_jobs)]
    holder: list[int | None] = [None] * len(slot_hosts)  # per slot: the label it holds

    def place(i: int, seen: set[int]) -> bool:
        for s, host in enumerate(slot_hosts):
            if labels[i] in host.labels and s not in seen:
                seen.add(s)
                held = holder[s]
                if held is None or place(held, seen):
                    holder[s] = i
                    return True
        return False

    return all(place(i, set()) for i in range(len(labels)))


def hosts_alive(ctx: PoolContext, node_ids: Iterable[str]) -> bool:
    """Static pools check a host before handing it out (upstream's liveness check); a dead
    one is deregistered (the registrar brings it back once it answers again)."""
    if ctx.provider.launches_servers:
        return True
    driver = registry.get(ctx.provider.driver)
    if driver.node_host is None or driver.is_alive is None:
        return True
    wanted = set(node_ids)
    alive = True
    for node in [n for n in ctx.zk.nodes() if n.id in wanted]:
        host = driver.node_host(ctx.pool, node)
        if host is not None and not driver.is_alive(host):
            if change_idle_node(ctx.zk, node.id or "", mark_deleting) is not None:
                get_logger("nodepool_ng.launcher.pool", provider=ctx.pool_id).warning(
                    "Static node %s is not reachable; deregistered", node.id)
            alive = False
    return alive

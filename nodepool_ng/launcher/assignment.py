"""Pure request-assignment decisions, upstream's rules: no I/O, snapshots in, decisions out.

A pool worker asks, for each open request in `order_requests` order, `decide(...)`: accept it,
decline it, leave it to another pool (skip), or wait (defer). `all_declined` tells whether a
declined request is now `failed`.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

REQUESTED = "requested"


@dataclass(frozen=True)
class PoolInfo:
    """A registered pool component (ours or another launcher's), as the registry shows it."""

    id: str
    provider_name: str
    name: str = ""
    supported_labels: frozenset[str] = field(default_factory=frozenset)
    priority: int = 100
    paused: bool = False

    def supports(self, labels: Iterable[str]) -> bool:
        return set(labels) <= self.supported_labels


@dataclass(frozen=True)
class RequestView:
    """The fields of a NodeRequest that assignment looks at."""

    id: str
    state: str = REQUESTED
    node_types: tuple[str, ...] = ()
    declined_by: tuple[str, ...] = ()
    provider: str | None = None
    relative_priority: int = 0


class Action(enum.Enum):
    ACCEPT = "accept"
    DECLINE = "decline"
    SKIP = "skip"  # not for us (yield to another pool); look again when something changes
    DEFER = "defer"  # for us, but not now (paused, concurrency limit)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


def request_sort_key(req: RequestView) -> tuple[str, int, str]:
    """Upstream's order: precedence prefix, relative_priority, then the sequence number."""
    precedence, _, sequence = req.id.partition("-")
    return (precedence, req.relative_priority, sequence)


def order_requests(
    requests: Iterable[RequestView], supported_labels: Collection[str]
) -> list[RequestView]:
    """Serviceable requests first (fewest labels we lack), then by priority."""
    supported = set(supported_labels)

    def key(req: RequestView) -> tuple[int, tuple[str, int, str]]:
        missing = len(set(req.node_types) - supported)
        return (missing, request_sort_key(req))

    return sorted(requests, key=key)


def candidate_pools(req: RequestView, pools: Iterable[PoolInfo]) -> list[PoolInfo]:
    """Pools able to serve every label of the request that have not declined it."""
    declined = set(req.declined_by)
    return [p for p in pools if p.supports(req.node_types) and p.id not in declined]


def decide(
    req: RequestView,
    me: PoolInfo,
    pools: Sequence[PoolInfo],
    *,
    decline_reason: str | None = None,
    paused: bool = False,
    at_concurrency_limit: bool = False,
) -> Decision:
    """What pool `me` should do with `req`.

    pools: every registered pool (may include `me`). decline_reason: why this pool can never
    serve the request (disabled pool, missing image, request larger than pool or cloud quota),
    computed by the caller. paused: this pool waits for quota. at_concurrency_limit: the
    provider's max-concurrency is reached.
    """
    if req.state != REQUESTED:
        return Decision(Action.SKIP, f"state is {req.state}")
    if me.id in req.declined_by:
        return Decision(Action.SKIP, "already declined by this pool")
    others = [c for c in candidate_pools(req, pools) if c.id != me.id]

    if (
        req.provider
        and req.provider != me.provider_name
        and any(c.provider_name == req.provider for c in others)
    ):
        return Decision(Action.SKIP, f"yielding to requested provider {req.provider}")
    if me.supports(req.node_types) and any(
        c.priority < me.priority and not c.paused for c in others
    ):
        return Decision(Action.SKIP, "yielding to a higher priority pool")

    if not me.supports(req.node_types):
        missing = sorted(set(req.node_types) - me.supported_labels)
        if others:
            return Decision(Action.SKIP, f"labels {missing} are served by other pools")
        return Decision(Action.DECLINE, f"unsupported labels {missing}")
    if decline_reason:
        return Decision(Action.DECLINE, decline_reason)
    if paused:
        return Decision(Action.DEFER, "pool is paused at quota")
    if at_concurrency_limit:
        return Decision(Action.DEFER, "provider max-concurrency reached")
    return Decision(Action.ACCEPT)


def yield_at_quota(req: RequestView, me: PoolInfo, pools: Sequence[PoolInfo]) -> bool:
    """`me` has no room for `req` right now: leave it to another candidate pool that is not
    paused (it may have room) rather than accept it and pause, unless the request asked for
    our provider. Upstream accepts and pauses, so a request can wait on a full pool while
    another pool sits idle. Only to pools that do not themselves yield to us by priority
    (those take over once we pause, as upstream)."""
    if req.provider == me.provider_name:
        return False
    return any(c.id != me.id and not c.paused and c.priority <= me.priority
               for c in candidate_pools(req, pools))


def all_declined(declined_by: Iterable[str], registered_pool_ids: Iterable[str]) -> bool:
    """A request fails once every currently registered pool has declined it."""
    return set(registered_pool_ids) <= set(declined_by)


def prefer_provider_nodes(
    candidates: Sequence[tuple[str, str]], preferred_provider: str | None
) -> list[tuple[str, str]]:
    """Order (node_id, provider) candidates: the request's preferred provider first, then id."""
    return sorted(candidates, key=lambda c: (c[1] != preferred_provider, c[0]))

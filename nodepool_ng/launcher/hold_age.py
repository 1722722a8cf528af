"""max-hold-age and a node's `hold_expiration`: held nodes expire.

A node in `hold` whose age in that state (now - `state_time`) reaches the smaller of its
`hold_expiration` (if > 0) and the config's `max-hold-age` (if > 0) is deleted by cleanup;
with neither it is held until released. The node model already coerces `hold_expiration`
as upstream does: a numeric string becomes an int, anything else 0 (= no expiration).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from nodepool_ng.model.node import Node, NodeState


def hold_limit(hold_expiration: int | None, max_hold_age: int | None) -> float | None:
    """Seconds a node may stay held, or None for ever (0 / None / negative mean unset)."""
    limits = [v for v in (hold_expiration, max_hold_age) if v is not None and v > 0]
    return float(min(limits)) if limits else None


def expired_holds(
    nodes: Iterable[Node], max_hold_age: int | None, providers: Collection[str], now: float
) -> list[tuple[str, float]]:
    """(node id, its limit) of held nodes of `providers` past their hold limit."""
    out: list[tuple[str, float]] = []
    for node in nodes:
        if node.state is not NodeState.HOLD or not node.id or node.provider not in providers:
            continue
        limit = hold_limit(node.hold_expiration, max_hold_age)
        if limit is None or node.state_time is None:
            continue
        if now - node.state_time >= limit:
            out.append((node.id, limit))
    return out

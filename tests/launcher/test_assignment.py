"""Pure assignment decisions: accept, skip, defer, decline, and when a request fails."""

from __future__ import annotations

from nodepool_ng.launcher.assignment import (
    Action,
    PoolInfo,
    RequestView,
    all_declined,
    decide,
    order_requests,
    prefer_provider_nodes,
    request_sort_key,
    yield_at_quota,
)

A = PoolInfo("host-PoolWorker.p1-main-aa", "p1", "main", frozenset({"small", "big"}))
B = PoolInfo("host-PoolWorker.p2-main-bb", "p2", "main", frozenset({"small"}))


def req(rid: str = "200-0000000001", **kw: object) -> RequestView:
    kw.setdefault("node_types", ("small",))
    return RequestView(rid, **kw)  # type: ignore[arg-type]


def test_accept_when_able() -> None:
    assert decide(req(), A, [A, B]).action is Action.ACCEPT


def test_skip_when_not_requested_or_already_declined() -> None:
    assert decide(req(state="pending"), A, [A]).action is Action.SKIP
    assert decide(req(declined_by=(A.id,)), A, [A]).action is Action.SKIP


def test_unknown_label_declined_when_nobody_can_serve() -> None:
    d = decide(req(node_types=("nope",)), A, [A, B])
    assert d.action is Action.DECLINE
    assert "nope" in d.reason


def test_missing_label_yields_to_pool_that_has_it() -> None:
    # B lacks "big": A can serve, so B leaves it to A instead of declining.
    assert decide(req(node_types=("big",)), B, [A, B]).action is Action.SKIP
    # Once A declined, B is the last one and declines.
    r = req(node_types=("big",), declined_by=(A.id,))
    assert decide(r, B, [A, B]).action is Action.DECLINE


def test_provider_preference_yields_to_online_preferred_provider() -> None:
    assert decide(req(provider="p2"), A, [A, B]).action is Action.SKIP
    assert decide(req(provider="p2"), B, [A, B]).action is Action.ACCEPT
    # Preferred provider offline, or it declined: anyone serves.
    assert decide(req(provider="p2"), A, [A]).action is Action.ACCEPT
    assert decide(req(provider="p2", declined_by=(B.id,)), A, [A, B]).action is Action.ACCEPT
    # Unknown provider name: ignored.
    assert decide(req(provider="zzz"), A, [A, B]).action is Action.ACCEPT


def test_priority_yields_unless_higher_priority_pool_paused() -> None:
    low = PoolInfo("low", "p3", "main", frozenset({"small"}), priority=200)
    assert decide(req(), low, [A, low]).action is Action.SKIP
    paused_a = PoolInfo(A.id, "p1", "main", A.supported_labels, paused=True)
    assert decide(req(), low, [paused_a, low]).action is Action.ACCEPT


def test_decline_reason_paused_and_concurrency() -> None:
    assert decide(req(), A, [A], decline_reason="disabled").action is Action.DECLINE
    # A decline wins over a pause: paused pools still decline what they can never serve.
    assert decide(req(), A, [A], decline_reason="x", paused=True).action is Action.DECLINE
    assert decide(req(), A, [A], paused=True).action is Action.DEFER
    assert decide(req(), A, [A], at_concurrency_limit=True).action is Action.DEFER


def test_all_declined() -> None:
    assert all_declined([A.id, B.id, "gone"], [A.id, B.id])
    assert not all_declined([A.id], [A.id, B.id])


def test_order_priority_then_relative_then_sequence_serviceable_first() -> None:
    reqs = [
        req("300-0000000001"),
        req("100-0000000005", relative_priority=1),
        req("100-0000000009"),
        req("100-0000000007"),
        req("050-0000000002", node_types=("unknown",)),
    ]
    ids = [r.id for r in order_requests(reqs, A.supported_labels)]
    assert ids == [
        "100-0000000007",
        "100-0000000009",
        "100-0000000005",
        "300-0000000001",
        "050-0000000002",
    ]
    assert request_sort_key(req("099-0000000003")) == ("099", 0, "0000000003")


def test_prefer_provider_nodes() -> None:
    cands = [("0002", "p1"), ("0001", "p1"), ("0003", "p2")]
    assert prefer_provider_nodes(cands, "p2")[0] == ("0003", "p2")
    assert prefer_provider_nodes(cands, None)[0] == ("0001", "p1")


def test_at_quota_yield_to_a_pool_that_may_have_room() -> None:
    # A is full: B serves "small" and is not paused, so A leaves the request to it.
    assert yield_at_quota(req(), A, [A, B])
    # Nobody else, B paused, B declined it, B lacks a label: A accepts and pauses.
    assert not yield_at_quota(req(), A, [A])
    paused_b = PoolInfo(B.id, "p2", "main", B.supported_labels, paused=True)
    assert not yield_at_quota(req(), A, [A, paused_b])
    assert not yield_at_quota(req(declined_by=(B.id,)), A, [A, B])
    assert not yield_at_quota(req(node_types=("big",)), A, [A, B])
    # The request asked for our provider: keep it.
    assert not yield_at_quota(req(provider="p1"), A, [A, B])
    # A lower-precedence pool waits until we pause, so yielding to it would
    # leave the request to nobody.
    low = PoolInfo("low", "p3", "main", frozenset({"small"}), priority=200)
    assert not yield_at_quota(req(), A, [A, low])

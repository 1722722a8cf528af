"""The pool ledger converges to the nodes that exist, whatever the order of events."""

from __future__ import annotations

from nodepool_ng.launcher.ledger import PoolLedger
from nodepool_ng.model.quota import Quota

SMALL = Quota.of(instances=1, cores=2)


def _instances(ledger: PoolLedger, cached: frozenset[str] = frozenset()) -> float:
    return Quota.total(ledger.pending_costs(cached)).get("instances") or 0


def test_reservation_becomes_the_node_then_the_cache_takes_over() -> None:
    ledger = PoolLedger()
    token = ledger.reserve(SMALL)
    assert _instances(ledger) == 1 and ledger.reservations == 1
    ledger.note_created("0001", SMALL, token)
    assert _instances(ledger) == 1 and ledger.reservations == 0
    # Shown by the cache: counted there, not twice.
    assert _instances(ledger, frozenset({"0001"})) == 0
    ledger.node_seen("0001")
    assert _instances(ledger) == 0


def test_a_node_created_and_gone_between_passes_gives_its_slot_back() -> None:
    ledger = PoolLedger()
    for n in range(5):
        token = ledger.reserve(SMALL)
        ledger.note_created(f"{n:010}", SMALL, token)
        # No planning pass looked at the cache meanwhile; the node's removal is an event.
        ledger.node_seen(f"{n:010}")
    assert _instances(ledger) == 0


def test_unreserve_is_a_no_op_for_a_reservation_that_became_a_node() -> None:
    ledger = PoolLedger()
    token = ledger.reserve(SMALL)
    ledger.note_created("0001", SMALL, token)
    ledger.unreserve([token])
    assert _instances(ledger) == 1


def test_a_ready_node_is_claimed_once() -> None:
    ledger = PoolLedger()
    assert ledger.claim("0001")
    assert not ledger.claim("0001")
    ledger.unclaim(["0001"])
    assert ledger.claim("0001")


def test_a_closed_request_takes_its_nodes_and_tenant_promise_with_it() -> None:
    ledger = PoolLedger()
    ledger.open_request("r1")
    ledger.promise_tenant("r1", "t", SMALL)
    ledger.hold("r1", "0001")
    ledger.hold("r1", "0002")
    ledger.open_request("r2")
    ledger.hold("r2", "0003")
    assert ledger.requests() == {"r1", "r2"}
    assert ledger.held_nodes() == {"0001", "0002", "0003"}
    assert ledger.tenant_promises() == {"r1": ("t", SMALL)}
    ledger.let_go("r1", "0002")  # e.g. an aborted node, left to the deleter
    assert ledger.held_nodes() == {"0001", "0003"}
    ledger.close_request("r1")
    assert ledger.requests() == {"r2"}
    assert ledger.held_nodes() == {"0003"}
    assert ledger.tenant_promises() == {}
    ledger.let_go("r1", "0001")  # a late let-go of a closed request is a no-op
    assert ledger.requests() == {"r2"}


def test_kept_sums_equal_a_recount_whatever_the_order() -> None:
    """The reserved total and the held-node set are kept as promises come and go (a burst
    queues hundreds of accepts): they must equal a recount of what is left."""
    import random

    rng = random.Random(7)
    ledger = PoolLedger()
    live: dict[int, Quota] = {}
    holds: dict[str, set[str]] = {}
    for step in range(3000):
        op = rng.randrange(6)
        if op == 0 or not live:
            cost = Quota.of(instances=1, cores=rng.randrange(1, 9), ram=rng.randrange(512, 8192))
            live[ledger.reserve(cost)] = cost
        elif op == 1:
            token = rng.choice(list(live))
            ledger.unreserve([token, token])  # twice: the second is a no-op
            del live[token]
        elif op == 2:
            token = rng.choice(list(live))
            ledger.note_created(f"c{step}", live.pop(token), token)
            ledger.node_seen(f"c{step}")
        else:
            request, node = f"r{rng.randrange(8)}", f"{rng.randrange(12):04}"
            if op == 3:
                ledger.hold(request, node)
                holds.setdefault(request, set()).add(node)
            elif op == 4:
                ledger.let_go(request, node)
                holds.get(request, set()).discard(node)
            else:
                ledger.close_request(request)
                holds.pop(request, None)
        want = Quota.total(live.values())
        got = Quota.total(ledger.pending_costs(frozenset()))
        assert all(got.get(k) == want.get(k) for k in ("instances", "cores", "ram")), step
        held = set().union(*holds.values()) if holds else set()
        assert ledger.held_nodes() == held
        assert all(ledger.holds(n) == (n in held) for n in (f"{i:04}" for i in range(12)))

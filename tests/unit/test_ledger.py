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

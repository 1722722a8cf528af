"""Pure parts of the static driver: placing node records in their hosts' slots, and which
requests a static pool can never serve."""

from __future__ import annotations

from nodepool_ng.config.models import PoolConfig, PoolLabelConfig, StaticNodeConfig
from nodepool_ng.drivers.static.registrar import assign_slots
from nodepool_ng.launcher.static_pool import static_decline_reason
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import NodeRequest

A = StaticNodeConfig(name="a", labels=("small",), max_parallel_jobs=2)
B = StaticNodeConfig(name="b", labels=("small", "big"))
HOSTS = {A.identity: A, B.identity: B}


def record(node_id: str, host: StaticNodeConfig, slot: int | None) -> Node:
    return Node(id=node_id, state=NodeState.READY, hostname=host.name, username=host.username,
                connection_port=host.connection_port, slot=slot)


def ids(slots: list[Node | None]) -> list[str | None]:
    return [n.id if n else None for n in slots]


def test_records_fill_their_own_slots_and_the_rest_are_free() -> None:
    slots, excess = assign_slots(HOSTS, [record("2", A, 1)])
    assert ids(slots[A.identity]) == [None, "2"]
    assert ids(slots[B.identity]) == [None]
    assert excess == []


def test_record_without_slot_takes_the_first_free_one() -> None:
    """Records written by an old upstream carry no slot number."""
    slots, excess = assign_slots(HOSTS, [record("1", A, 0), record("2", A, None)])
    assert ids(slots[A.identity]) == ["1", "2"] and excess == []


def test_duplicates_beyond_slots_and_removed_hosts_are_excess() -> None:
    gone = StaticNodeConfig(name="gone", labels=("small",))
    nodes = [record("1", B, 0), record("2", B, 0), record("3", A, 5), record("4", gone, 0),
             record("5", A, 0), record("6", A, 1), record("7", A, None)]
    slots, excess = assign_slots(HOSTS, nodes)
    assert ids(slots[A.identity]) == ["5", "6"]
    assert ids(slots[B.identity]) == ["1"]
    assert sorted(n.id or "" for n in excess) == ["2", "3", "4", "7"]


def pool() -> PoolConfig:
    return PoolConfig(name="main", nodes=(A, B),
                      labels=(PoolLabelConfig(name="small"), PoolLabelConfig(name="big")))


def test_static_pool_declines_only_what_it_can_never_serve() -> None:
    def reason(*labels: str) -> str | None:
        return static_decline_reason(pool(), NodeRequest(node_types=list(labels)))

    assert reason("small", "small", "small") is None  # a has 2 slots, b has 1
    assert reason("small", "big") is None
    assert reason("small", "small", "big") is None  # big must go to b, small to a
    cannot = "this pool's hosts cannot hold them at once"
    assert reason("big", "big") == f"request wants 2 nodes ['big', 'big']; {cannot}"
    # Enough small slots and a big one, but b cannot be both at once.
    assert reason("small", "small", "small", "big") == (
        f"request wants 4 nodes ['big', 'small', 'small', 'small']; {cannot}")
    assert reason("huge") == "label huge is not served by this pool"
    no_reuse = NodeRequest(node_types=["small"], reuse=False)
    assert static_decline_reason(pool(), no_reuse) == (
        "the request does not reuse nodes; a static pool only has registered ones")

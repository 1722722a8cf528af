"""`NodeIndex` against a full recount: random sequences of node cache events (creations,
state, allocation, lock, provider, pool, label and resource changes, deletions, resyncs)
give the same usage, quota, READY-node, min-ready and deleter answers as walking every node
(the launcher's walks before the index, kept here or as `PoolQuota.recount`)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodepool_ng.config.loader import load_config
from nodepool_ng.launcher.ledger import PoolLedger
from nodepool_ng.launcher.node_index import NodeIndex
from nodepool_ng.launcher.pool_quota import PoolQuota
from nodepool_ng.model.node import CLEANUP_STATES, Node, NodeState
from nodepool_ng.model.quota import Quota

PROVIDERS = ["p1", "p2", None]
POOLS = ["main", "other", None]
LABELS = ["small", "large", "unknown", None]
IDS = [f"{i:010}" for i in range(12)]
COSTS = {"small": Quota.of(cores=1, instances=1, ram=1024),
         "large": Quota.of(cores=4, instances=1, ram=8192)}


class FakeAdapter:
    def get_quota_for_label(self, spec: Any) -> Quota:
        return COSTS[spec.label_name]


def _config(tmp_path: Path) -> Any:
    labels = [{"name": "small", "cloud-image": "debian", "flavor-name": "s"},
              {"name": "large", "cloud-image": "debian", "flavor-name": "l"}]
    path = tmp_path / "nodepool.yaml"
    path.write_text(yaml.safe_dump({
        "zookeeper-servers": [{"host": "localhost"}],
        "labels": [{"name": "small"}, {"name": "large"}],
        "providers": [{
            "name": name, "cloud": "c1", "cloud-images": [{"name": "debian"}],
            "pools": [{"name": "main", "max-servers": 5, "labels": labels},
                      {"name": "other", "max-servers": 5, "labels": labels[:1]}],
        } for name in ("p1", "p2")],
    }))
    return load_config(str(path), env={})


_CONFIG: list[Any] = []


def config(tmp_path_factory: Any) -> Any:
    if not _CONFIG:
        _CONFIG.append(_config(tmp_path_factory.mktemp("cfg")))
    return _CONFIG[0]


# -- a node cache: records replaced on a data change, lock contenders changed in place ------
fields = st.fixed_dictionaries({
    "provider": st.sampled_from(PROVIDERS),
    "pool": st.sampled_from(POOLS),
    "label": st.sampled_from(LABELS),
    "state": st.sampled_from([*NodeState, None]),
    "allocated_to": st.sampled_from([None, "", "200-0000000001", "200-0000000002"]),
    "resources": st.sampled_from([None, {}, {"cores": 2, "instances": 1, "ram": 2048},
                                  {"cores": 8, "instances": 1}]),
    "extra_label": st.booleans(),
})
op = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(IDS), fields),
    st.tuples(st.just("lock"), st.sampled_from(IDS), st.booleans()),
    st.tuples(st.just("delete"), st.sampled_from(IDS)),
    st.tuples(st.just("resync")),
    st.tuples(st.just("replay"), st.randoms(use_true_random=False)),
)


def make_node(node_id: str, f: dict[str, Any], contenders: frozenset[str]) -> Node:
    label = f["label"]
    types = [label] if label else []
    if f["extra_label"]:
        types.append("small")
    node = Node(id=node_id, provider=f["provider"], pool=f["pool"], state=f["state"],
                type=types, allocated_to=f["allocated_to"], resources=f["resources"])
    node.lock_contenders = contenders
    return node


class Cache:
    def __init__(self, index: NodeIndex) -> None:
        self.records: dict[str, Node] = {}
        self.index = index
        self.events: list[tuple[str, Node | None]] = []

    def emit(self, node_id: str) -> None:
        node = self.records.get(node_id)
        self.events.append((node_id, node))
        self.index.on_node(node_id, node)

    def apply(self, step: tuple[Any, ...]) -> None:
        kind = step[0]
        if kind == "write":
            _, node_id, f = step
            old = self.records.get(node_id)
            self.records[node_id] = make_node(
                node_id, f, old.lock_contenders if old else frozenset())
            self.emit(node_id)
        elif kind == "lock":
            _, node_id, locked = step
            node = self.records.get(node_id)
            if node is not None:  # in place, as RecordCache does
                node.lock_contenders = frozenset({"lock-1"}) if locked else frozenset()
                self.emit(node_id)
        elif kind == "delete":
            self.records.pop(step[1], None)
            self.emit(step[1])
        elif kind == "resync":
            self.index.rebuild(lambda: list(self.records.values()))
        else:
            # Events again in any order (a listener that fell behind, a resync's diff),
            # then each node's current record last: the index follows the last word.
            rnd: random.Random = step[1]
            replay = self.events[-20:]
            rnd.shuffle(replay)
            for node_id, node in replay:
                self.index.on_node(node_id, node)
            for node_id in {nid for nid, _ in replay}:
                self.emit(node_id)


# -- the walks the launcher did before the index ------------------------------------------
def locked(node: Node) -> bool:
    return bool(node.lock_contenders)


def claim_candidates(nodes: list[Node], provider: str, pool: str, label: str) -> list[str]:
    return sorted(
        n.id for n in nodes
        if n.id and n.provider == provider and n.pool == pool and n.state is NodeState.READY
        and not n.allocated_to and label in n.type and not locked(n))


def free_candidates(nodes: list[Node], provider: str, pool: str) -> list[str]:
    return sorted(n.id or "" for n in nodes if n.provider == provider and n.pool == pool
                  and n.state is NodeState.READY and not n.allocated_to)


def min_ready_counts(nodes: list[Node], released: dict[str, str]) -> Counter[str]:
    released = dict(released)
    cached = {n.id: n for n in nodes}
    for node_id, request_id in list(released.items()):
        node = cached.get(node_id)
        if node is None or node.allocated_to != request_id:
            del released[node_id]
    ready: Counter[str] = Counter()
    for node in cached.values():
        if node.state is NodeState.READY and (
                not node.allocated_to or released.get(node.id or "") == node.allocated_to):
            for label in set(node.type):
                ready[label] += 1
    return ready


def index_min_ready_counts(index: NodeIndex, released: dict[str, str]) -> Counter[str]:
    # min_ready.MinReadyWorker.run_once's count
    ready = index.ready_free_by_label()
    for node_id, request_id in released.items():
        node = index.get(node_id)
        if node is not None and node.allocated_to == request_id \
                and node.state is NodeState.READY:
            for label in set(node.type):
                ready[label] += 1
    return ready


def deleter_selection(nodes: list[Node]) -> set[str]:
    return {n.id or "" for n in nodes if n.id and not locked(n) and (
        n.state in CLEANUP_STATES or (n.state is NodeState.READY and n.allocated_to))}


def check(index: NodeIndex, nodes: list[Node], cfg: Any) -> None:
    assert len(index) == len(nodes)
    for node in nodes:
        assert index.get(node.id or "") is node
    assert {n.id for n in index.deleter_nodes()} == deleter_selection(nodes)
    released = {IDS[0]: "200-0000000001", IDS[1]: "200-0000000002", IDS[2]: "gone"}
    assert +index_min_ready_counts(index, released) == +min_ready_counts(nodes, released)
    for provider in ("p1", "p2"):
        # the cloud-limit refresh's "is this server's node ours" (any state, DELETED too)
        records = index.record_ids(provider)
        assert {i for i in [*IDS, "gone"] if i in records} == {
            n.id for n in nodes if n.provider == provider}
        pcfg = cfg.providers[provider]
        for pool_cfg in pcfg.pools:
            pool = pool_cfg.name
            for state in NodeState:
                assert index.count(provider, pool, state) == sum(
                    1 for n in nodes
                    if n.provider == provider and n.pool == pool and n.state is state)
            assert [n.id for n in index.ready_free(provider, pool)] == free_candidates(
                nodes, provider, pool)
            for label in ("small", "large", "unknown"):
                assert [n.id for n in index.ready_free(provider, pool, label)
                        if not locked(n)] == claim_candidates(nodes, provider, pool, label)
            ledger = PoolLedger()
            ledger.note_created(IDS[3], Quota.of(instances=1, cores=3))  # maybe cached
            ledger.note_created("9999999999", Quota.of(instances=1))  # never cached
            ledger.reserve(Quota.of(instances=1, ram=10))
            quota = PoolQuota(pcfg, pool_cfg, f"h-{provider}-{pool}", None,  # type: ignore[arg-type]
                              FakeAdapter(), ledger, index=index)  # type: ignore[arg-type]
            pool_usage, provider_usage = quota.usage()
            assert pool_usage == quota.recount(nodes, pool_only=True)
            assert provider_usage == quota.recount(nodes, pool_only=False)


@settings(max_examples=1000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(op, max_size=40))
def test_index_equals_a_recount(tmp_path_factory: Any, steps: list[tuple[Any, ...]]) -> None:
    cfg = config(tmp_path_factory)
    index = NodeIndex()
    cache = Cache(index)
    for step in steps:
        cache.apply(step)
        check(index, list(cache.records.values()), cfg)
    # A new index built from the cache answers the same.
    check(NodeIndex.of(list(cache.records.values())), list(cache.records.values()), cfg)


def test_rebuild_while_events_arrive_keeps_the_last_word() -> None:
    """`rebuild` snapshots under its lock; an event for a later change still applies."""
    index = NodeIndex()
    old = Node(id=IDS[0], provider="p1", pool="main", state=NodeState.READY, type=["small"])
    new = Node(id=IDS[0], provider="p1", pool="main", state=NodeState.USED, type=["small"])
    index.rebuild(lambda: [old])
    index.on_node(IDS[0], new)
    assert index.ready_free("p1", "main", "small") == []
    assert [n.id for n in index.deleter_nodes()] == [IDS[0]]
    index.on_node(IDS[0], None)
    assert len(index) == 0 and index.deleter_nodes() == []
    assert index.usage("p1", "main") == ([], [])


def test_a_ready_node_without_labels_is_free_in_its_pool() -> None:
    """The freer deletes any READY unallocated node of the pool, labelled or not."""
    node = Node(id=IDS[0], provider="p1", pool="main", state=NodeState.READY, type=[])
    index = NodeIndex.of([node])
    assert index.ready_free("p1", "main") == [node]
    assert index.ready_free("p1", "main", "small") == []
    index.on_node(IDS[0], None)
    assert index.ready_free("p1", "main") == []

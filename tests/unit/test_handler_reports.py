"""A request handler learns of a finished launch from the runner's report (the finished
`LaunchTask`), never by reading the node the runner is still working on; every promise it
makes is in the pool's ledger. In-memory fakes for ZooKeeper, the adapter and the runner."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import yaml

from nodepool_ng.config.loader import load_config
from nodepool_ng.launcher.handler import RequestHandler, plan_slots, unplan
from nodepool_ng.launcher.poolctx import PoolContext
from nodepool_ng.launcher.runner import LaunchTask
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.quota import Quota
from nodepool_ng.model.request import NodeRequest, RequestState


class FakeZK:
    def __init__(self, request: NodeRequest) -> None:
        self.request = request
        self.stored: list[tuple[str, Any]] = []
        self.unlocked: list[str] = []
        self._next = 0

    def nodes(self) -> list[Node]:
        return []

    def node_locked(self, node: Node) -> bool:
        return False

    def create_node(self, node: Node) -> None:
        self._next += 1
        node.id = f"{self._next:010}"

    def lock_and_store_node(self, node: Node) -> None:
        node.lock = object()  # type: ignore[assignment]
        self.stored.append((node.id or "", node.state))

    def store_node(self, node: Node) -> None:
        self.stored.append((node.id or "", node.state))

    def unlock_node(self, node: Node) -> None:
        self.unlocked.append(node.id or "")

    def request_cached(self, request_id: str) -> NodeRequest | None:
        return self.request

    def request_exists(self, request_id: str) -> bool:
        return True

    def store_request(self, request: NodeRequest) -> bool:
        self.stored.append((request.id or "", request.state))
        return True

    def unlock_request(self, request: NodeRequest) -> None:
        self.unlocked.append(request.id or "")

    def pool_infos(self) -> list[Any]:
        return []


class FakeAdapter:
    def get_quota_for_label(self, spec: Any) -> Quota:
        return Quota.of(instances=1)


class FakeRunner:
    active_launches = 0
    accepting = True

    def __init__(self) -> None:
        self.tasks: list[LaunchTask] = []

    def launch(self, task: LaunchTask) -> None:
        self.tasks.append(task)

    def launch_allowed(self, in_flight: int) -> bool:
        return True


def _context(tmp_path: Path, request: NodeRequest, wakes: list[int]) -> PoolContext:
    path = tmp_path / "nodepool.yaml"
    path.write_text(yaml.safe_dump({
        "zookeeper-servers": [{"host": "localhost"}],
        "labels": [{"name": "small"}],
        "providers": [{
            "name": "p1", "cloud": "c1", "cloud-images": [{"name": "debian"}],
            "pools": [{"name": "main", "max-servers": 2, "ignore-provider-quota": True,
                       "labels": [{"name": "small", "cloud-image": "debian",
                                   "flavor-name": "small"}]}],
        }],
    }))
    config = load_config(str(path), env={})
    provider = config.providers["p1"]
    return PoolContext(
        config=config, provider=provider, pool=provider.pools[0], pool_id="h-PoolWorker.p1-main-x",
        zk=FakeZK(request),  # type: ignore[arg-type]
        adapter=FakeAdapter(),  # type: ignore[arg-type]
        runner=FakeRunner(),  # type: ignore[arg-type]
        wake=lambda: wakes.append(1),
    )


def test_a_launch_counts_only_once_the_runner_reports_it(tmp_path: Path) -> None:
    request = NodeRequest(id="200-0000000001", node_types=["small"], reuse=False)
    wakes: list[int] = []
    ctx = _context(tmp_path, request, wakes)
    ctx.ledger.open_request(request.id or "")
    plan = plan_slots(ctx, ["small"], reuse=False)
    assert isinstance(plan[0], int)  # a quota reservation
    handler = RequestHandler(ctx, request)
    assert handler.start(plan)
    unplan(ctx, plan)
    runner: FakeRunner = ctx.runner  # type: ignore[assignment]
    [task] = runner.tasks
    node_id = task.node.id or ""
    assert request.state is RequestState.PENDING
    assert ctx.ledger.held_nodes() == {node_id}
    assert handler.nodes == [None] and not handler.paused  # the node is the runner's

    # The runner's node and task say READY, but the runner has not reported (`on_done`):
    # the handler does not look at them, the request is not fulfilled.
    task.node.state = task.result = NodeState.READY
    assert not handler.poll()
    assert request.state is RequestState.PENDING

    # The runner reports from its own thread: the worker's next poll takes the node back.
    reporter = threading.Thread(target=task.on_done, args=(task,))
    reporter.start()
    reporter.join()
    assert wakes
    assert handler.poll()
    assert request.state is RequestState.FULFILLED
    assert request.nodes == [node_id]
    assert node_id in ctx.zk.unlocked  # type: ignore[attr-defined]


def test_an_aborted_launch_is_let_go_and_its_slot_launched_again(tmp_path: Path) -> None:
    request = NodeRequest(id="200-0000000002", node_types=["small"], reuse=False)
    ctx = _context(tmp_path, request, [])
    ctx.ledger.open_request(request.id or "")
    plan = plan_slots(ctx, ["small"], reuse=False)
    handler = RequestHandler(ctx, request)
    assert handler.start(plan)
    unplan(ctx, plan)
    runner: FakeRunner = ctx.runner  # type: ignore[assignment]
    first = runner.tasks[0]
    first.node.state = first.result = NodeState.ABORTED
    first.on_done(first)
    assert not handler.poll()
    # The aborted node was unlocked for the deleter and no longer held; a new launch runs.
    assert first.node.id in ctx.zk.unlocked  # type: ignore[attr-defined]
    second = runner.tasks[1]
    assert ctx.ledger.held_nodes() == {second.node.id}
    assert handler.launches == {0: second}

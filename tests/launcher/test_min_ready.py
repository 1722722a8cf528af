"""MinReadyWorker against real ZooKeeper stores whose caches lag our own writes.

The watch-driven caches show a write a few milliseconds later; a min-ready pass that runs
in between must not ask for a node it already asked for, nor for one it just released.
`LaggingView` serves cache reads from a snapshot taken when the test says so, which is
exactly what a pass sees when it runs before the watch events arrive.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nodepool_ng.launcher.min_ready import MinReadyWorker
from nodepool_ng.launcher.zkview import StoresView
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import MIN_READY_REQUESTOR, NodeRequest, RequestState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore
from tests.launcher.harness import wait_for


class LaggingView(StoresView):
    """Cache reads frozen at the last `freeze()`; every other operation is the real one."""

    def __init__(self, nodes: NodeStore, requests: RequestStore) -> None:
        super().__init__(nodes, requests, lambda: [])
        self._nodes: list[Node] = []
        self._requests: list[NodeRequest] = []

    def freeze(self) -> None:
        self._nodes = self.node_store.cached_nodes()
        self._requests = self.request_store.cached_requests()

    def nodes(self) -> list[Node]:
        return list(self._nodes)

    def requests(self) -> list[NodeRequest]:
        return list(self._requests)

    def request_cached(self, request_id: str) -> NodeRequest | None:
        return next((r for r in self._requests if r.id == request_id), None)


@pytest.fixture
def view(zk_chroot) -> Iterator[LaggingView]:  # type: ignore[no-untyped-def]
    client = ZooKeeperClient(zk_chroot.hosts)
    client.start()
    nodes, requests = NodeStore(client), RequestStore(client)
    nodes.start_cache()
    requests.start_cache()
    try:
        yield LaggingView(nodes, requests)
    finally:
        nodes.stop_cache()
        requests.stop_cache()
        client.stop()


def min_ready_requests(view: LaggingView) -> list[NodeRequest]:
    return [r for r in view.request_store.read_all() if r.requestor == MIN_READY_REQUESTOR]


def test_request_not_yet_in_cache_is_not_asked_for_twice(view: LaggingView) -> None:
    worker = MinReadyWorker(view, lambda: {"small": 1})
    view.freeze()  # empty, and it stays so: our request is not in the cache yet
    worker.run_once()
    worker.run_once()
    assert len(min_ready_requests(view)) == 1


def test_released_node_still_allocated_in_cache_counts_as_ready(view: LaggingView) -> None:
    worker = MinReadyWorker(view, lambda: {"small": 1})
    view.freeze()
    worker.run_once()
    (request,) = min_ready_requests(view)
    # A launcher fulfils it: a READY node allocated to the request, request fulfilled.
    node = Node(state=NodeState.READY, type=["small"], provider="p", pool="main",
                allocated_to=request.id)
    view.node_store.create(node)
    request.nodes = [node.id or ""]
    request.state = RequestState.FULFILLED
    view.request_store.store(request)
    wait_for("caches to show the fulfilment", lambda: (
        (r := view.request_store.cached_request(request.id or "")) is not None
        and r.state is RequestState.FULFILLED
        and view.node_store.cached_node(node.id or "") is not None))
    view.freeze()  # the caches will not see the release this pass makes
    worker.run_once()
    fresh = view.node_store.get(node.id or "")
    assert fresh.allocated_to is None and fresh.state is NodeState.READY
    assert min_ready_requests(view) == []  # released and nothing new asked for
    # Once the cache shows the release, the node still counts exactly once.
    wait_for("cache to show the release", lambda: (
        (n := view.node_store.cached_node(node.id or "")) is not None and not n.allocated_to))
    view.freeze()
    worker.run_once()
    assert min_ready_requests(view) == []
    assert worker.released == {}

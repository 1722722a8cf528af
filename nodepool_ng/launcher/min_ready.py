"""`MinReadyWorker`: keeps `min-ready` READY unallocated nodes per label.

For each label served by one of our pools: missing = min-ready - READY unallocated nodes
(cluster-wide) - open min-ready requests for it. One request per missing node:
`node_types=[label]`, requestor `NodePool:min-ready`, reuse false, priority 900, ephemeral.
Fulfilled ones are released (nodes' `allocated_to` cleared, request deleted); failed ones
deleted. Woken by the node and request caches.

The caches lag our own writes by a few milliseconds, so the count must not trust them for
what this worker just did: a request we submitted counts as outstanding until we see it
finished (the cache may not show it yet), and a node we just released counts as ready
while the cache still shows it allocated to the released request. Without that, a pass in
between asks for an extra node (min-ready 1 -> 2 ready).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection

from nodepool_ng.config.models import Config, ProviderConfig
from nodepool_ng.launcher.node_index import NodeIndex
from nodepool_ng.launcher.zkview import LauncherZK
from nodepool_ng.log import get_logger
from nodepool_ng.model.node import NodeState
from nodepool_ng.model.request import (
    MIN_READY_PRIORITY,
    MIN_READY_REQUESTOR,
    NodeRequest,
    RequestState,
)
from nodepool_ng.runtime.loop import Worker

OPEN = (RequestState.REQUESTED, RequestState.PENDING)


class MinReadyWorker(Worker):
    def __init__(
        self,
        zk: LauncherZK,
        wanted: Callable[[], dict[str, int]],
        interval: float = 5.0,
        paused: Callable[[], bool] | None = None,
        index: NodeIndex | None = None,
    ) -> None:
        """wanted(): label -> min-ready, for labels one of our pools can launch now.
        `index`: the launcher's index of the node cache (None: recount `zk.nodes()` on
        every pass)."""
        super().__init__("MinReadyWorker", interval=interval, paused=paused)
        self.zk = zk
        self._wanted = wanted
        self._index = index
        self.submitted: dict[str, str] = {}  # our request id -> label
        # node id -> the min-ready request it was released from (until the cache shows it)
        self.released: dict[str, str] = {}
        self.mlog = get_logger("nodepool_ng.launcher.min_ready")

    def run_once(self) -> float | None:
        self._release_finished()
        wanted = self._wanted()
        if not wanted:
            return None
        index = self._index if self._index is not None else NodeIndex.of(self.zk.nodes())
        ready = index.ready_free_by_label()  # READY unallocated, per label
        for node_id, request_id in list(self.released.items()):
            node = index.get(node_id)
            if node is None or node.allocated_to != request_id:
                del self.released[node_id]  # the cache caught up (or the node is gone)
            elif node.state is NodeState.READY:  # released by us: ready
                for label in set(node.type):
                    ready[label] += 1
        # Ours count until we see them finished, whether or not the cache has them yet.
        outstanding: Counter[str] = Counter(self.submitted.values())
        for req in self.zk.requests():
            if (
                req.requestor == MIN_READY_REQUESTOR
                and len(req.node_types) == 1
                and req.state in OPEN
                and req.id not in self.submitted
            ):
                outstanding[req.node_types[0]] += 1
        for label, min_ready in wanted.items():
            for _ in range(min_ready - ready[label] - outstanding[label]):
                self._submit(label)
        return None

    def _submit(self, label: str) -> None:
        req = NodeRequest(node_types=[label], requestor=MIN_READY_REQUESTOR, reuse=False)
        request_id = self.zk.create_request(req, MIN_READY_PRIORITY, ephemeral=True)
        self.submitted[request_id] = label
        self.mlog.debug("Requested a min-ready %s node (%s)", label, request_id)

    def _release_finished(self) -> None:
        for request_id in list(self.submitted):
            req = self.zk.request_cached(request_id)
            if req is None:
                req = self.zk.get_request(request_id)
            if req is None:
                del self.submitted[request_id]
                continue
            if req.state is RequestState.FULFILLED:
                for node_id in req.nodes:
                    node = self.zk.lock_fresh_node(node_id)
                    if node is None:
                        continue  # the deleter deallocates it once the request is gone
                    try:
                        if node.allocated_to == request_id:
                            node.allocated_to = None
                            self.zk.store_node(node)
                            self.released[node_id] = request_id
                    finally:
                        self.zk.unlock_node(node)
            if req.state in (RequestState.FULFILLED, RequestState.FAILED):
                self.zk.delete_request(req)
                del self.submitted[request_id]


def labels_to_keep(
    config: Config,
    running: Collection[str],
    first_only: bool,
    ready_upload: Callable[[str, str], tuple[str, str] | None],
) -> dict[str, int]:
    """Labels whose min-ready this process keeps (label -> min-ready): one of its `running`
    providers can launch the label now. With `first_only` (`--provider`: several processes
    share one config) only the one running the first such provider (by name) keeps it, so
    they do not all ask for the same missing node at once."""
    wanted: dict[str, int] = {}
    for label in config.labels.values():
        if label.min_ready <= 0:
            continue
        able = [name for name, p in sorted(config.providers.items())
                if _can_launch(p, label.name, ready_upload)]
        if first_only:
            able = able[:1]
        if any(name in running for name in able):
            wanted[label.name] = label.min_ready
    return wanted


def _can_launch(provider: ProviderConfig, label: str,
                ready_upload: Callable[[str, str], tuple[str, str] | None]) -> bool:
    """A pool of `provider` boots `label` and its image is there (any provider: the config
    and the image records are shared)."""
    for pool in provider.pools_for_label(label):
        pool_label = pool.label(label)
        if pool_label is None:
            continue
        if pool_label.cloud_image or (
                pool_label.diskimage and ready_upload(pool_label.diskimage, provider.name)):
            return True
    return False

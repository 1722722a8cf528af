"""`RequestHandler`: one accepted request being fulfilled by one pool (spec §2.1 steps 3-4).

Driven by the pool worker's thread: `start()` once the request is locked and `pending`, then
`poll()` whenever the worker is woken, until it returns True. Slots follow `node_types`, so
`nodes` is written in the same order. Nodes stay locked by us while they build and are
unlocked when the request is fulfilled (READY, allocated_to = request id).
"""

from __future__ import annotations

import time

from nodepool_ng.errors import LockError, ZooKeeperError
from nodepool_ng.launcher.assignment import all_declined
from nodepool_ng.launcher.poolctx import PoolContext
from nodepool_ng.launcher.runner import LaunchTask
from nodepool_ng.log import get_logger
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import NodeRequest, RequestState

# A planned slot: the id of a claimed READY node, or a quota reservation token (poolctx).
Slot = str | int


class RequestHandler:
    def __init__(self, ctx: PoolContext, request: NodeRequest) -> None:
        assert request.id is not None
        self.ctx = ctx
        self.request = request
        self.slots: list[Node | None] = [None] * len(request.node_types)
        self.tasks: dict[str, LaunchTask] = {}
        self.paused = False
        self.gone = False
        self.log = get_logger(
            "nodepool_ng.launcher.handler",
            request_id=request.id,
            provider=ctx.provider.name,
            event_id=request.event_id,
        )

    @property
    def id(self) -> str:
        return self.request.id or ""

    # -- start -----------------------------------------------------------------------------
    def start(self, plan: list[Slot | None] | None = None) -> bool:
        """Mark the (locked, re-read) request pending and start filling. False if gone.

        Without `plan`, fill here (may pause). With a plan made by the pool worker (a claimed
        ready node or a quota reservation per slot; None: no room), follow it: this may run
        on a background thread, so it never deletes anything; a slot without room, or whose
        claimed node was taken meanwhile, is left empty and `paused` is set, so the worker's
        next `poll` fills it (or frees an unused node, as upstream does when pausing).
        """
        self.request.state = RequestState.PENDING
        if not self.ctx.zk.store_request(self.request):
            self.ctx.zk.unlock_request(self.request)
            return False
        self.log.debug("Accepted request for %s", self.request.node_types)
        if plan is None:
            self._fill()
        else:
            self.fill_planned(plan)
        return True

    def fillable(self) -> bool:
        """Paused, request still there: the worker may plan the empty slots."""
        return self.paused and not self.gone and self.ctx.zk.request_cached(self.id) is not None

    def fill_planned(self, plan: list[Slot | None]) -> None:
        """Fill empty slots as planned by the pool worker (None: leave empty)."""
        for i, (label, slot) in enumerate(zip(self.request.node_types, plan, strict=True)):
            if self.slots[i] is not None or slot is None:
                continue
            if isinstance(slot, str):
                self.slots[i] = self._take_ready(slot)
            else:
                self.slots[i] = self._launch(label, token=slot)
        self.paused = any(n is None for n in self.slots)

    def _fill(self) -> None:
        """Give every empty slot a reused or a new node; pause when out of quota."""
        for i, label in enumerate(self.request.node_types):
            if self.slots[i] is not None:
                continue
            node = self._reuse(label) if self.request.reuse else None
            if node is None:
                if not self.ctx.has_room(label):
                    if not self.paused:
                        self.log.info("Pausing: no quota for another %s node", label)
                    self.paused = True
                    self.ctx.free_oldest_unused()
                    return
                node = self._launch(label)
            self.slots[i] = node
        self.paused = False

    def _reuse(self, label: str) -> Node | None:
        taken = {n.id for n in self.slots if n is not None}
        candidates = sorted(
            (
                n
                for n in self.ctx.zk.nodes()
                if self.ctx.owns(n)
                and n.state is NodeState.READY
                and not n.allocated_to
                and label in n.type
                and n.id not in taken
                and not self.ctx.zk.node_locked(n)
            ),
            key=lambda n: n.id or "",
        )
        for cached in candidates:
            node = self._take_ready(cached.id or "")
            if node is not None:
                return node
        return None

    def _take_ready(self, node_id: str) -> Node | None:
        """Lock, re-read and allocate a READY node to us; None if taken meanwhile."""
        node = self.ctx.zk.lock_fresh_node(node_id)
        if node is None:
            return None
        if node.state is not NodeState.READY or node.allocated_to:
            self.ctx.zk.unlock_node(node)
            return None
        node.allocated_to = self.id
        # Spec §2.1 step 3: a reused node now counts for this tenant (tenant-resource-limits).
        node.tenant_name = self.request.tenant_name
        node.requestor = self.request.requestor
        self.ctx.zk.store_node(node)
        self.log.debug("Reusing ready node %s", node.id)
        return node

    def _launch(self, label_name: str, token: int | None = None) -> Node:
        label = self.ctx.pool.label(label_name)
        assert label is not None  # checked by decline_reason before accepting
        image = self.ctx.image_for(label)
        if image is None:
            raise ZooKeeperError(f"image of label {label_name} vanished")
        cost = self.ctx.label_cost(label_name)
        pool, provider = self.ctx.pool, self.ctx.provider
        node = Node(
            state=NodeState.INIT,
            provider=provider.name,
            pool=pool.name,
            type=[label_name],
            allocated_to=self.id,
            launcher=self.ctx.pool_id,
            cloud=provider.cloud,
            region=provider.region_name,
            az=self.ctx.pick_az(),
            image_id=image.image_id,
            username=image.username,
            python_path=image.python_path,
            shell_type=image.shell_type,
            connection_type=image.connection_type,
            connection_port=image.connection_port,
            attributes=dict(pool.node_attributes) or None,
            tenant_name=self.request.tenant_name,
            requestor=self.request.requestor,
            resources=cost.as_dict(),
        )
        node.created_time = node.state_time
        self.ctx.zk.create_node(node)
        assert node.id is not None
        self.ctx.ledger.note_created(node.id, cost, token)
        node.state = NodeState.BUILDING
        node.hostname = f"np{node.id}"
        try:
            self.ctx.zk.lock_and_store_node(node)
        except LockError as e:
            raise ZooKeeperError(f"node {node.id}: could not lock the node we just created: "
                                 f"{e}") from e
        task = LaunchTask(
            node=node,
            spec=self.ctx.spec_for(node, label, image, self.request),
            options=self.ctx.options_for(label, image, self.request),
            on_done=lambda _task: self.ctx.wake(),
        )
        self.tasks[node.id] = task
        self.ctx.runner.launch(task)
        self.log.debug("Launching node %s (%s)", node.id, label_name)
        return node

    # -- poll ------------------------------------------------------------------------------
    def poll(self) -> bool:
        """Advance; True when the handler is finished (request fulfilled, declined or gone)."""
        if not self.gone and self.ctx.zk.request_cached(self.id) is None:
            self.gone = not self.ctx.zk.request_exists(self.id)
        if self.gone:
            return self._release_when_built()
        if self.paused:
            self._fill()
            if self.paused:
                return False
        if any(t.result is None for t in self.tasks.values()):
            return False
        aborted = [i for i, n in enumerate(self.slots) if n and n.state is NodeState.ABORTED]
        if aborted:
            for i in aborted:
                node = self.slots[i]
                assert node is not None
                self.log.info("Node %s aborted (cloud quota); launching another", node.id)
                self.tasks.pop(node.id or "", None)
                self.ctx.zk.unlock_node(node)  # the deleter removes it
                self.slots[i] = None
            self.ctx.invalidate_cloud_quota()
            self._fill()
            return False
        if any(n is None or n.state is not NodeState.READY for n in self.slots):
            self.decline("a node failed to launch")
            return True
        self._fulfil()
        return True

    def _fulfil(self) -> None:
        self.request.nodes = [n.id for n in self.slots if n is not None and n.id]
        self.request.state = RequestState.FULFILLED
        for node in self.slots:
            if node is not None:
                self.ctx.zk.unlock_node(node)
        if not self.ctx.zk.store_request(self.request):
            self.log.info("Request vanished just before fulfilment; releasing its nodes")
            self._deallocate_ready(relock=True)
        self.ctx.zk.unlock_request(self.request)
        self.log.info("Fulfilled with nodes %s", self.request.nodes)

    def decline(self, reason: str) -> None:
        """Give the request back (or fail it when every pool declined); free its nodes."""
        self._deallocate_ready()
        self.request.declined_by.append(self.ctx.pool_id)
        self.request.nodes = []
        registered = [p.id for p in self.ctx.zk.pool_infos()]
        failed = all_declined(self.request.declined_by, registered)
        self.request.state = RequestState.FAILED if failed else RequestState.REQUESTED
        self.ctx.zk.store_request(self.request)
        self.ctx.zk.unlock_request(self.request)
        self.log.info("Declined (%s); request is %s", reason, self.request.state)

    def give_back(self) -> None:
        """Not now after all (no decline): free our nodes, the request back to `requested`."""
        self._deallocate_ready()
        self.request.nodes = []
        self.request.state = RequestState.REQUESTED
        self.ctx.zk.store_request(self.request)
        self.ctx.zk.unlock_request(self.request)
        self.log.info("Given back: a planned node was taken meanwhile")

    def _release_when_built(self) -> bool:
        if any(t.result is None for t in self.tasks.values()):
            return False  # let launches finish: the nodes serve later requests
        self.log.info("Request is gone; releasing its nodes")
        self._deallocate_ready()
        self.ctx.zk.unlock_request(self.request)
        return True

    def _deallocate_ready(self, relock: bool = False) -> None:
        """READY nodes go back to the pool unallocated; others are left to the deleter."""
        for i, node in enumerate(self.slots):
            if node is None:
                continue
            if relock and not self.ctx.zk.lock_node(node):
                continue  # the DeletedNodeWorker deallocates it later
            try:
                if node.state is NodeState.READY:
                    node.allocated_to = None
                    self.ctx.zk.store_node(node)
            except ZooKeeperError as e:
                self.log.warning("Could not deallocate node %s: %s", node.id, e)
            finally:
                self.ctx.zk.unlock_node(node)
            self.slots[i] = None

    def abandon(self) -> None:
        """Stopping: unlock what we hold; another launcher resets and serves the request."""
        for node in self.slots:
            if node is not None:
                self.ctx.zk.unlock_node(node)
        self.ctx.zk.unlock_request(self.request)

    @property
    def age(self) -> float:
        return time.time() - (self.request.state_time or time.time())

"""A request's path through one pool, after the pool worker decided to accept it.

1. decide: `pool.PoolWorker` (rules in `assignment.decide`), in upstream's order;
2. reserve: `plan_slots` promises each slot a READY node of the pool or quota for a new one,
   in the pool's ledger (the worker's thread, so a later request sees the earlier ones');
3. lock and mark pending: `accept` (on a background thread: lock non-blocking, re-read, still
   `requested` and not declined by us, then `pending`);
4. fill slots: `RequestHandler.fill_planned` takes the planned READY nodes (lock, re-read,
   `allocated_to`) and launches new nodes (`init` -> locked -> `building`, a `LaunchTask` for
   the provider runner); a slot without room stays empty and the handler is `paused`;
5. fulfil: `RequestHandler.poll` (the worker's thread) learns of finished launches from the
   runner's reports (the finished `LaunchTask`: its node is ours again), relaunches aborted
   ones, and once every slot is READY unlocks the nodes and writes the request `fulfilled`;
   a failed node declines it.

Slots follow `node_types`, so `nodes` is written in the same order. The handler's nodes stay
locked by us while they build. Every promise (reservation, claim, request in flight, held
node) is kept by the pool's `PoolLedger`, not here.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator

from nodepool_ng.errors import LockError, ZooKeeperError
from nodepool_ng.launcher import launchspec, static_pool
from nodepool_ng.launcher.assignment import all_declined
from nodepool_ng.launcher.poolctx import PoolContext
from nodepool_ng.launcher.runner import LaunchTask
from nodepool_ng.log import get_logger
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.model.request import NodeRequest, RequestState

# A planned slot: the id of a claimed READY node, or a quota reservation token (the ledger's).
Slot = str | int
Plan = list[Slot | None]  # per slot in `node_types` order; None: nothing planned


# -- 2. reserve -----------------------------------------------------------------------------
def plan_slots(ctx: PoolContext, labels: list[str | None], reuse: bool) -> Plan:
    """Promise slots (label None: already filled) a ready node or quota, in order, up to the
    first that gets neither; that one and the rest stay None (the handler pauses). Give the
    plan back with `unplan` once it was followed (or not)."""
    plan: Plan = []
    for label in labels:
        slot: Slot | None = None
        if label is not None:
            slot = _claim_ready(ctx, label) if reuse else None
            if slot is None:
                slot = ctx.quota.reserve(label)
            if slot is None:
                return plan + [None] * (len(labels) - len(plan))
        plan.append(slot)
    return plan


def unplan(ctx: PoolContext, plan: Plan) -> None:
    """Give back what `plan` promised and did not become a node (no-op for what did)."""
    ctx.ledger.unreserve(s for s in plan if isinstance(s, int))
    ctx.ledger.unclaim(s for s in plan if isinstance(s, str))


def _claim_ready(ctx: PoolContext, label: str) -> str | None:
    """The first (by id) READY unallocated `label` node of the pool, unlocked, that no other
    accept claimed; claimed for this one."""
    candidates = (n.id for n in ctx.index.ready_free(ctx.provider.name, ctx.pool.name, label)
                  if n.id and not ctx.zk.node_locked(n))
    return next((nid for nid in candidates if ctx.ledger.claim(nid)), None)


# -- 3. lock and mark pending ---------------------------------------------------------------
def accept(ctx: PoolContext, request_id: str, plan: Plan) -> RequestHandler | None:
    """Background thread: lock, re-check, `pending`, then fill the slots as planned. None
    when the request is not ours after all (it stays open, or was given back or declined).
    Never raises; gives the plan back. The pool worker is woken once the job is done (its
    future's done-callback, `pool._Work.run`), not from here: a wake before the future is done
    made a pass that could not adopt the result, and then a second one."""
    try:
        if not static_pool.hosts_alive(ctx, (s for s in plan if isinstance(s, str))):
            return None  # the request stays open; the next pass plans other nodes
        req = locked_open_request(ctx, request_id)
        if req is None:
            return None
        handler = RequestHandler(ctx, req)
        try:
            if not handler.start(plan):
                return None
            if handler.paused and not ctx.provider.launches_servers:
                # A planned static node was taken meanwhile: a static pool does not wait
                # paused (it would stop serving other labels); the request goes back.
                handler.give_back()
                return None
        except Exception as e:
            handler.log.warning("Could not start handling, declining: %s", e)
            handler.decline_quietly(str(e))
            return None
        return handler
    except Exception:
        get_logger("nodepool_ng.launcher.pool", provider=ctx.pool_id).exception(
            "Accepting request %s failed; it stays open", request_id)
        return None
    finally:
        unplan(ctx, plan)


def locked_open_request(ctx: PoolContext, request_id: str) -> NodeRequest | None:
    """Lock non-blocking, re-read and re-check ("double check after lock")."""
    req = ctx.zk.lock_fresh_request(request_id)
    if req is None:
        return None
    if req.state is not RequestState.REQUESTED or ctx.pool_id in req.declined_by:
        ctx.zk.unlock_request(req)
        return None
    return req


def decline_open(ctx: PoolContext, request_id: str, reason: str) -> None:
    """The pool can never serve the open request `request_id`: decline it under its lock."""
    req = locked_open_request(ctx, request_id)
    if req is not None:
        RequestHandler(ctx, req).decline(reason)


class RequestHandler:
    """One accepted request. Used by one thread at a time: the accept or refill thread that
    runs `start`/`fill_planned`, else the pool worker's. Launches report back through
    `_reports` (the runner's threads)."""

    def __init__(self, ctx: PoolContext, request: NodeRequest) -> None:
        assert request.id is not None
        self.ctx = ctx
        self.request = request
        # Per slot: the node we hold (locked), or None (empty, or launching: `launches`).
        self.nodes: list[Node | None] = [None] * len(request.node_types)
        # Per slot: its launch in flight; the node is the runner's until the task reports.
        self.launches: dict[int, LaunchTask] = {}
        self._reports: queue.SimpleQueue[LaunchTask] = queue.SimpleQueue()
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

    def start(self, plan: Plan) -> bool:
        """Mark the (locked, re-read) request pending and fill as planned. False if gone.

        This runs on a background thread, so it never deletes anything; a slot without room,
        or whose claimed node was taken meanwhile, is left empty and `paused` is set, so the
        worker fills it later (or frees an unused node, as upstream does when pausing)."""
        self.request.state = RequestState.PENDING
        if not self.ctx.zk.store_request(self.request):
            self.ctx.zk.unlock_request(self.request)
            return False
        self.log.debug("Accepted request for %s", self.request.node_types)
        self.fill_planned(plan)
        return True

    # -- 4. fill slots ---------------------------------------------------------------------
    def empty_labels(self) -> list[str | None]:
        """Per slot: its label when empty, else None (what `plan_slots` takes)."""
        return [label if self.nodes[i] is None and i not in self.launches else None
                for i, label in enumerate(self.request.node_types)]

    def fillable(self) -> bool:
        """Paused, request still there: the worker may plan the empty slots."""
        return self.paused and not self.gone and self.ctx.zk.request_cached(self.id) is not None

    def fill_planned(self, plan: Plan) -> None:
        """Fill empty slots as planned (None: leave empty); `paused` while one stays empty."""
        for i, (label, slot) in enumerate(zip(self.request.node_types, plan, strict=True)):
            if self.nodes[i] is not None or i in self.launches or slot is None:
                continue
            if isinstance(slot, str):
                self.nodes[i] = self._take_ready(slot)
            else:
                self._launch(i, label, token=slot)
        self.paused = any(label is not None for label in self.empty_labels())

    def _fill(self) -> None:
        """In the worker's thread: fill what fits now; pause when out of quota (and free the
        oldest unused node of the pool, as upstream)."""
        was_paused = self.paused
        labels = self.empty_labels()
        plan = plan_slots(self.ctx, labels, self.request.reuse)
        try:
            self.fill_planned(plan)
        finally:
            unplan(self.ctx, plan)
        no_room = next((lb for lb, s in zip(labels, plan, strict=True)
                        if lb is not None and s is None), None)
        if no_room is not None:
            if not was_paused:
                self.log.info("Pausing: no quota for another %s node", no_room)
            self.ctx.freer.free_oldest()

    def _take_ready(self, node_id: str) -> Node | None:
        """Lock, re-read and allocate a READY node to us; None if taken meanwhile."""
        node = self.ctx.zk.lock_fresh_node(node_id)
        if node is None:
            return None
        if node.state is not NodeState.READY or node.allocated_to:
            self.ctx.zk.unlock_node(node)
            return None
        self.ctx.ledger.hold(self.id, node_id)
        node.allocated_to = self.id
        # As upstream: a reused node now counts for this tenant (tenant-resource-limits).
        node.tenant_name = self.request.tenant_name
        node.requestor = self.request.requestor
        self.ctx.zk.store_node(node)
        self.log.debug("Reusing ready node %s", node.id)
        return node

    def _launch(self, slot: int, label_name: str, token: int | None = None) -> None:
        label = self.ctx.pool.label(label_name)
        assert label is not None  # checked by decline_reason before accepting
        image = launchspec.image_for(self.ctx, label)
        if image is None:
            raise ZooKeeperError(f"image of label {label_name} vanished")
        cost = self.ctx.quota.label_cost(label_name)
        node = launchspec.new_node(self.ctx, label_name, image, self.request, cost)
        self.ctx.zk.create_node(node)
        assert node.id is not None
        self.ctx.ledger.note_created(node.id, cost, token)
        self.ctx.ledger.hold(self.id, node.id)
        node.state = NodeState.BUILDING
        node.hostname = f"np{node.id}"
        try:
            self.ctx.zk.lock_and_store_node(node)
        except LockError as e:
            raise ZooKeeperError(f"node {node.id}: could not lock the node we just created: "
                                 f"{e}") from e
        task = LaunchTask(
            node=node,
            spec=launchspec.spec_for(self.ctx, node, label, image, self.request),
            options=launchspec.options_for(self.ctx, label, image, self.request),
            on_done=self._report,
        )
        self.launches[slot] = task
        self.ctx.runner.launch(task)  # from now on the node is the runner's
        self.log.debug("Launching node %s (%s)", node.id, label_name)

    def _report(self, task: LaunchTask) -> None:
        """The runner's thread: `task` finished and is stored; the worker takes it over."""
        self._reports.put(task)
        self.ctx.wake()

    def _take_reports(self) -> None:
        """Finished launches: their nodes are ours again, in their slots."""
        while not self._reports.empty():  # one reader: empty() then get() is safe
            task = self._reports.get()
            slot = next((i for i, t in self.launches.items() if t is task), None)
            if slot is not None:  # else a slot given up meanwhile (its node was unlocked)
                del self.launches[slot]
                self.nodes[slot] = task.node

    # -- 5. fulfil -------------------------------------------------------------------------
    def poll(self) -> bool:
        """Advance; True when the handler is finished (request fulfilled, declined or gone)."""
        self._take_reports()
        if not self.gone and self.ctx.zk.request_cached(self.id) is None:
            self.gone = not self.ctx.zk.request_exists(self.id)
        if self.gone:
            return self._release_when_built()
        if self.paused:
            self._fill()
            if self.paused:
                return False
        if self.launches:
            return False
        aborted = [i for i, n in enumerate(self.nodes) if n and n.state is NodeState.ABORTED]
        if aborted:
            for i in aborted:
                node = self.nodes[i]
                assert node is not None
                self.log.info("Node %s aborted (cloud quota); launching another", node.id)
                self._let_go(i)  # the deleter removes it
            self.ctx.quota.invalidate_cloud_quota()
            self._fill()
            return False
        if any(n is None or n.state is not NodeState.READY for n in self.nodes):
            self.decline("a node failed to launch")
            return True
        self._fulfil()
        return True

    def _fulfil(self) -> None:
        self.request.nodes = [n.id for n in self.nodes if n is not None and n.id]
        self.request.state = RequestState.FULFILLED
        for node in self.nodes:
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

    def decline_quietly(self, reason: str) -> None:
        """Decline after an error; if even that fails, unlock (the cleanup resets it)."""
        try:
            self.decline(reason)
        except Exception:
            self.log.exception("Could not decline; unlocking (cleanup resets it)")
            self.abandon()

    def give_back(self) -> None:
        """Not now after all (no decline): free our nodes, the request back to `requested`."""
        self._deallocate_ready()
        self.request.nodes = []
        self.request.state = RequestState.REQUESTED
        self.ctx.zk.store_request(self.request)
        self.ctx.zk.unlock_request(self.request)
        self.log.info("Given back: a planned node was taken meanwhile")

    def _release_when_built(self) -> bool:
        if self.launches:
            return False  # let launches finish: the nodes serve later requests
        self.log.info("Request is gone; releasing its nodes")
        self._deallocate_ready()
        self.ctx.zk.unlock_request(self.request)
        return True

    def _deallocate_ready(self, relock: bool = False) -> None:
        """READY nodes go back to the pool unallocated; others (launches in flight too) are
        left to the deleter."""
        for i, node in enumerate(self.nodes):
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
                self._let_go(i)
        for i in list(self.launches):
            self._let_go(i)

    def _let_go(self, slot: int) -> None:
        """Unlock the slot's node (a launch in flight: the runner's node's lock, which the
        runner never changes) and forget it."""
        task = self.launches.pop(slot, None)
        node = task.node if task is not None else self.nodes[slot]
        self.nodes[slot] = None
        if node is not None:
            self.ctx.zk.unlock_node(node)
            self.ctx.ledger.let_go(self.id, node.id or "")

    def held(self) -> Iterator[tuple[Node, LaunchTask | None]]:
        """The nodes we hold, each with its launch in flight (None: ours now)."""
        for node in self.nodes:
            if node is not None:
                yield node, None
        for task in self.launches.values():
            yield task.node, task

    def abandon(self) -> None:
        """Stopping: unlock what we hold; another launcher resets and serves the request."""
        for node, _task in list(self.held()):
            self.ctx.zk.unlock_node(node)
        self.ctx.zk.unlock_request(self.request)

"""`PoolWorker`: one thread per provider-pool; assignment, then its request handlers.

Woken by the request cache, the node cache and finished launches. Each pass, top to bottom:
advance the handlers; publish `paused`; then walk the open requests in upstream's order and
accept, decline, skip or defer each one (`assignment.decide`).

Accepting is ~a dozen ZooKeeper round trips (lock, re-read, pending, create node, lock it,
building); done one request after the other they would cap the pool at a few accepts per
100 ms. So the worker only *decides* in order, promising each accepted request its nodes in
memory (a claimed READY node or a quota reservation per slot, poolctx), and runs the I/O of
the accepts on a small bounded executor. The order and the limits stay exact: a later
request sees the earlier ones' reservations. A request that would pause (no room) ends the
pass while accepts are in flight (they may lose their lock and give quota back; they wake
the worker when done); otherwise it is accepted with what fits and pauses the pool (upstream's
PAUSE_AT_QUOTA). A paused handler fills freed slots the same way: planned by the worker,
I/O in the background; when nothing fits its own `poll` pauses on (and frees an unused node).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from nodepool_ng.drivers import registry
from nodepool_ng.errors import NodepoolError
from nodepool_ng.launcher.assignment import (
    Action,
    Decision,
    PoolInfo,
    RequestView,
    decide,
    order_requests,
    yield_at_quota,
)
from nodepool_ng.launcher.handler import RequestHandler, Slot
from nodepool_ng.launcher.poolctx import PoolContext
from nodepool_ng.launcher.zkview import change_idle_node, mark_deleting
from nodepool_ng.log import get_logger
from nodepool_ng.model.node import NodeState
from nodepool_ng.model.request import NodeRequest, RequestState
from nodepool_ng.runtime.loop import Worker

ACCEPT_THREADS = 8  # concurrent accepts per pool (ZooKeeper I/O, not CPU)
# How long a pool with no room leaves a request to other pools that may have room.
YIELD_AT_QUOTA_FOR = 5.0


def _view(req: NodeRequest) -> RequestView:
    return RequestView(
        id=req.id or "",
        state=str(req.state),
        node_types=tuple(req.node_types),
        declined_by=tuple(req.declined_by),
        provider=req.provider,
        relative_priority=req.relative_priority,
    )


class PoolWorker(Worker):
    def __init__(
        self,
        ctx: PoolContext,
        set_paused: Callable[[bool], None],
        interval: float = 30.0,
        paused: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(
            f"PoolWorker.{ctx.provider.name}-{ctx.pool.name}", interval=interval, paused=paused
        )
        self.ctx = ctx
        self.handlers: list[RequestHandler] = []
        self._set_paused = set_paused
        self._published_paused = False
        self.plog = get_logger("nodepool_ng.launcher.pool", provider=ctx.pool_id)
        # Accepts running in the background: request id -> its future handler (None: not ours).
        self._starting: dict[str, Future[RequestHandler | None]] = {}
        self._pausing: set[str] = set()  # of those, the ones that will pause (no room)
        # Paused handlers filling newly free slots in the background: request id -> future.
        self._refills: dict[str, Future[None]] = {}
        self._refills_all: set[str] = set()  # of those, the ones that fill every empty slot
        self._accept_pool: ThreadPoolExecutor | None = None
        # Requests we had no room for, left to other pools: request id -> when first left.
        self._yielding: dict[str, float] = {}
        # The last pass left a request to others for want of room. Published as `paused`
        # like a paused handler: a pool that is full as well then stops leaving requests to
        # us and accepts (and pauses) as upstream, instead of both waiting on each other.
        self._full = False

    def run_once(self) -> float | None:
        self._collect_starts()
        self._poll_handlers()
        self._publish(self._published_state())
        if not self.stopped:
            self._assign(self._pool_paused())
        self._publish(self._published_state())
        # Look again when the next yield runs out (no other pool took the request). One that
        # ran out already was looked at in this pass: only a change (a wake) helps it now.
        now = time.monotonic()
        ends = [t + YIELD_AT_QUOTA_FOR - now for t in self._yielding.values()]
        return min((end for end in ends if end > 0), default=None)

    def _published_state(self) -> bool:
        """`paused` as other pools see it: a paused handler, no room last pass, or a cloud
        that takes no launches now (its requests should go elsewhere)."""
        return self._pool_paused() or self._full or not self.ctx.runner.accepting

    def _pool_paused(self) -> bool:
        # A handler whose refill has every empty slot planned is as good as unpaused.
        return bool(self._pausing) or any(
            h.paused and h.id not in self._refills_all for h in self.handlers)

    # -- background accepts ----------------------------------------------------------------
    def _collect_starts(self, wait: bool = False) -> None:
        """Adopt the handlers of finished background accepts (with `wait`: all of them, after
        every background fill is done too)."""
        if wait:
            for refill in list(self._refills.values()):
                refill.exception()  # waits; the outcome is handled by _poll_handlers
        for rid, future in list(self._starting.items()):
            if not wait and not future.done():
                continue
            del self._starting[rid]
            self._pausing.discard(rid)
            handler = future.result()  # _start_planned never raises
            if handler is not None:
                self.handlers.append(handler)

    def _start_planned(self, request_id: str, plan: list[Slot | None]) -> RequestHandler | None:
        """Background thread: lock, re-check, pending, then fill the slots as planned."""
        try:
            if not self._hosts_alive(plan):
                return None  # the request stays open; the next pass plans other nodes
            req = self._locked_open_request(request_id)
            if req is None:
                return None
            handler = RequestHandler(self.ctx, req)
            try:
                if not handler.start(plan):
                    return None
                if handler.paused and not self.ctx.provider.launches_servers:
                    # A planned static node was taken meanwhile: a static pool does not wait
                    # paused (it would stop serving other labels); the request goes back.
                    handler.give_back()
                    return None
            except Exception as e:
                handler.log.warning("Could not start handling, declining: %s", e)
                self._decline_quietly(handler, str(e))
                return None
            return handler
        except Exception:
            self.plog.exception("Accepting request %s failed; it stays open", request_id)
            return None
        finally:
            self._unplan(plan)
            self.wake()

    def _plan(self, labels: list[str | None], reuse: bool) -> list[Slot | None]:
        """Promise slots (None: already filled) a ready node or quota, in order, up to the
        first that gets neither; that one and the rest stay None (the handler pauses)."""
        plan: list[Slot | None] = []
        for label in labels:
            slot: Slot | None = None
            if label is not None:
                slot = self._claim_ready(label) if reuse else None
                if slot is None:
                    slot = self.ctx.reserve(label)
                if slot is None:
                    return plan + [None] * (len(labels) - len(plan))
            plan.append(slot)
        return plan

    def _hosts_alive(self, plan: list[Slot | None]) -> bool:
        """Static pools check a host before handing it out (upstream's liveness check); a
        dead one is deregistered (the registrar brings it back once it answers again)."""
        if self.ctx.provider.launches_servers:
            return True
        alive = True
        claimed = {s for s in plan if isinstance(s, str)}
        for node in [n for n in self.ctx.zk.nodes() if n.id in claimed]:
            node_id = node.id or ""
            host = self.ctx.static_host(node)
            is_alive = registry.get(self.ctx.provider.driver).is_alive
            if host is not None and is_alive is not None and not is_alive(host):
                self._deregister_dead(node_id)
                alive = False
        return alive

    def _deregister_dead(self, node_id: str) -> None:
        if change_idle_node(self.ctx.zk, node_id, mark_deleting) is not None:
            self.plog.warning("Static node %s is not reachable; deregistered", node_id)

    def _unplan(self, plan: list[Slot | None]) -> None:
        self.ctx.ledger.unreserve(s for s in plan if isinstance(s, int))
        self.ctx.ledger.unclaim(s for s in plan if isinstance(s, str))

    def _start_refill(self, handler: RequestHandler) -> bool:
        """A paused handler with room again fills what fits in the background; False when
        nothing fits (its own `poll` then pauses on, freeing an unused node as upstream)."""
        empty = [label if n is None else None
                 for label, n in zip(handler.request.node_types, handler.slots, strict=True)]
        plan = self._plan(empty, handler.request.reuse)
        if all(s is None for s in plan):
            return False

        def refill() -> None:
            try:
                handler.fill_planned(plan)
            finally:
                self._unplan(plan)
                self.wake()

        self._refills[handler.id] = self._executor().submit(refill)
        if all(s is not None for s, n in zip(plan, handler.slots, strict=True) if n is None):
            self._refills_all.add(handler.id)
        return True

    def _claim_ready(self, label: str) -> str | None:
        ctx = self.ctx
        candidates = sorted(
            (n.id for n in ctx.zk.nodes()
             if n.id and ctx.owns(n) and n.state is NodeState.READY and not n.allocated_to
             and label in n.type and not ctx.zk.node_locked(n)),
        )
        return next((nid for nid in candidates if ctx.ledger.claim(nid)), None)

    # -- handlers --------------------------------------------------------------------------
    def _poll_handlers(self) -> None:
        for handler in list(self.handlers):
            refill = self._refills.get(handler.id)
            if refill is not None:
                if not refill.done():
                    continue
                del self._refills[handler.id]
                self._refills_all.discard(handler.id)
                if refill.exception() is not None:
                    handler.log.warning("Filling failed, declining: %s", refill.exception())
                    self._decline_quietly(handler, str(refill.exception()))
                    self.handlers.remove(handler)
                    continue
            try:
                if handler.paused and handler.fillable() and self._start_refill(handler):
                    continue
                finished = handler.poll()
            except NodepoolError as e:
                handler.log.warning("Handler error, declining: %s", e)
                finished = self._decline_quietly(handler, str(e))
            except Exception:
                handler.log.exception("Handler error, declining")
                finished = self._decline_quietly(handler, "internal error")
            if finished:
                self.handlers.remove(handler)

    def _decline_quietly(self, handler: RequestHandler, reason: str) -> bool:
        try:
            handler.decline(reason)
        except Exception:
            handler.log.exception("Could not decline; unlocking (cleanup resets it)")
            handler.abandon()
        return True

    def _publish(self, paused: bool) -> None:
        if paused != self._published_paused:
            self._published_paused = paused
            try:
                self._set_paused(paused)
            except Exception as e:
                self.plog.warning("Could not update pool component: %s", e)

    # -- assignment ------------------------------------------------------------------------
    def _fail_malformed(self) -> None:
        """Answer requests whose fields are malformed (every pool may; the lock picks one)."""
        for request_id, reason in self.ctx.zk.malformed_requests().items():
            if self.ctx.zk.fail_malformed_request(request_id, reason):
                self.plog.warning("Failed malformed request %s: %s", request_id, reason)

    def _assign(self, paused: bool) -> None:
        ctx = self.ctx
        self._fail_malformed()
        me = ctx.info(paused)
        active = {h.id for h in self.handlers} | set(self._starting)
        open_requests = {
            r.id: r
            for r in ctx.zk.requests()
            if r.state is RequestState.REQUESTED
            and r.id not in active
            and ctx.pool_id not in r.declined_by
        }
        self._yielding = {rid: t for rid, t in self._yielding.items() if rid in open_requests}
        self._full = False
        if not open_requests:
            return
        pools = ctx.zk.pool_infos()
        tenants = ctx.tenants.begin(ctx.config.tenant_resource_limits, ctx.zk.nodes, active,
                                    ctx.label_cost, me.supported_labels)
        addressable = 0
        for view in order_requests((_view(r) for r in open_requests.values()), me.supported_labels):
            if self.stopped:
                return
            req = open_requests[view.id]
            reason = ctx.decline_reason(req) if me.supports(view.node_types) else None
            decision = decide(
                view,
                me,
                pools,
                decline_reason=reason,
                paused=paused,
                at_concurrency_limit=ctx.at_concurrency_limit(),
            )
            if decision.action in (Action.ACCEPT, Action.DECLINE) and not tenants.fits(req):
                decision = Decision(Action.DEFER, "tenant resource limits")  # as upstream
            if decision.action is Action.ACCEPT:
                addressable += 1
                plan = self._plan(list(req.node_types), req.reuse)
                pauses = any(s is None for s in plan)
                if pauses and not ctx.provider.launches_servers:
                    # A static pool never pauses (upstream): the request waits, unaccepted,
                    # until hosts for all its labels are free, and other requests go on.
                    self._unplan(plan)
                    continue
                if pauses and self._starting:
                    # No room now, but accepts in flight may lose their lock and give their
                    # quota back: decide this request (and the rest) once they are done.
                    self._unplan(plan)
                    break
                if pauses and self._yields(view, me, pools):
                    self._unplan(plan)
                    self._full = True
                    continue
                self._starting[view.id] = self._executor().submit(
                    self._start_planned, view.id, plan)
                tenants.promise(req)
                if pauses:
                    # Accepted, but it will pause (upstream: PAUSE_AT_QUOTA): so is the pool.
                    self._pausing.add(view.id)
                    paused = True
                    me = ctx.info(paused)
            elif decision.action is Action.DECLINE:
                self._decline(view.id, decision.reason)
            elif decision.action is Action.DEFER:
                addressable += 1
        ctx.stats.addressable_requests(ctx.provider.name, ctx.pool.name, addressable)

    def _yields(self, view: RequestView, me: PoolInfo, pools: list[PoolInfo]) -> bool:
        """No room for `view`: leave it to a pool that may have room, for a while; after
        YIELD_AT_QUOTA_FOR (nobody took it) accept it and pause, as upstream does."""
        if not yield_at_quota(view, me, pools):
            self._yielding.pop(view.id, None)
            return False
        first = self._yielding.setdefault(view.id, time.monotonic())
        return time.monotonic() - first < YIELD_AT_QUOTA_FOR

    def _locked_open_request(self, request_id: str) -> NodeRequest | None:
        """Lock non-blocking, re-read and re-check ("double check after lock")."""
        req = self.ctx.zk.lock_fresh_request(request_id)
        if req is None:
            return None
        if req.state is not RequestState.REQUESTED or self.ctx.pool_id in req.declined_by:
            self.ctx.zk.unlock_request(req)
            return None
        return req

    def _decline(self, request_id: str, reason: str) -> None:
        req = self._locked_open_request(request_id)
        if req is None:
            return
        RequestHandler(self.ctx, req).decline(reason)

    def _executor(self) -> ThreadPoolExecutor:
        if self._accept_pool is None:
            name = f"accept-{self.ctx.provider.name}-{self.ctx.pool.name}"
            self._accept_pool = ThreadPoolExecutor(ACCEPT_THREADS, thread_name_prefix=name)
        return self._accept_pool

    def on_stop(self) -> None:
        self._collect_starts(wait=True)
        if self._accept_pool is not None:
            self._accept_pool.shutdown(wait=True)
        for handler in self.handlers:
            try:
                handler.abandon()
            except Exception:
                handler.log.exception("Could not release request on stop")
        self.handlers.clear()

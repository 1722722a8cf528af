"""`PoolWorker`: one thread per provider-pool; assignment, then its request handlers.

Woken by the request cache, the node cache and finished launches. Each pass, top to bottom:
adopt finished background accepts; advance the handlers; publish `paused`; then walk the
open requests in upstream's order and accept, decline, skip or defer each one
(`assignment.decide`). The rest of an accepted request's path is in `handler.py`.

Accepting is ~a dozen ZooKeeper round trips (lock, re-read, pending, create node, lock it,
building); done one request after the other they would cap the pool at a few accepts per
100 ms. So the worker only *decides* in order, promising each accepted request its nodes in
the pool's ledger (`handler.plan_slots`), and runs the I/O of the accepts on a small bounded
executor (`handler.accept`). The order and the limits stay exact: a later request sees the
earlier ones' reservations. A request that would pause (no room) ends the pass while
accepts are in flight (they may lose their lock and give quota back; they wake the worker
when done); otherwise it is accepted with what fits and pauses the pool (upstream's
PAUSE_AT_QUOTA). A paused handler fills freed slots the same way: planned by the worker,
I/O in the background; when nothing fits its own `poll` pauses on (and frees an unused node).

After a ZooKeeper session expiry the worker re-takes its handlers' locks before its next
pass (`session.relock_handler`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from nodepool_ng.errors import NodepoolError
from nodepool_ng.launcher import launchspec, static_pool
from nodepool_ng.launcher.assignment import (
    Action,
    Decision,
    PoolInfo,
    RequestView,
    decide,
    order_requests,
    yield_at_quota,
)
from nodepool_ng.launcher.handler import (
    Plan,
    RequestHandler,
    accept,
    decline_open,
    plan_slots,
    unplan,
)
from nodepool_ng.launcher.poolctx import PoolContext
from nodepool_ng.launcher.session import relock_handler
from nodepool_ng.launcher.tenant_limits import tenant_pass
from nodepool_ng.log import get_logger
from nodepool_ng.model.request import NodeRequest
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


def decline_reason(ctx: PoolContext, request: NodeRequest) -> str | None:
    """Why this pool can never serve `request`, or None."""
    if not ctx.provider.launches_servers:
        return static_pool.static_decline_reason(ctx.pool, request)
    if ctx.pool.max_servers is not None and ctx.pool.max_servers <= 0:
        return "pool is disabled by max-servers"
    for label_name in request.node_types:
        label = ctx.pool.label(label_name)
        if label is None:
            return f"label {label_name} is not served by this pool"
        if launchspec.image_for(ctx, label) is None:
            return f"image of label {label_name} is not available"
    if not ctx.quota.fits_when_empty(request.node_types):
        return "request exceeds the pool or cloud quota"
    return None


def at_concurrency_limit(ctx: PoolContext) -> bool:
    """Launches under way or promised reach the provider's max-concurrency, or its health
    allows no more now (a ramp after an outage)."""
    in_flight = ctx.runner.active_launches + ctx.ledger.reservations
    limit = ctx.provider.max_concurrency
    return (limit >= 0 and in_flight >= limit) or not ctx.runner.launch_allowed(in_flight)


@dataclass
class _Work:
    """A request this pool is accepting or handling (the worker's thread only)."""

    handler: RequestHandler | None = None  # None until its accept is done
    job: Future[Any] | None = None  # its accept, or a refill, running in the background
    pauses: bool = False  # that job leaves a slot empty
    # `job` is done (set by its done-callback): a pass reads a flag rather than asking each
    # of hundreds of queued accepts' futures under their locks (a burst's backlog).
    finished: bool = False
    _wake: Callable[[], None] | None = None

    def run(self, job: Future[Any], pauses: bool, wake: Callable[[], None]) -> None:
        """`job` is this request's background work now; `wake()` once it is done (the job's
        own last wake-up comes before its future is done, so a pass it wakes may miss it)."""
        self.job, self.pauses, self.finished, self._wake = job, pauses, False, wake
        job.add_done_callback(self._job_done)

    def _job_done(self, job: Future[Any]) -> None:
        if job is self.job:
            self.finished = True
            if self._wake is not None:
                self._wake()

    @property
    def paused(self) -> bool:
        if self.job is not None:
            return self.pauses
        return self.handler is not None and self.handler.paused


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
        self._work: dict[str, _Work] = {}  # request id -> its work; the ledger has its promises
        self._set_paused = set_paused
        self._published_paused = False
        self.plog = get_logger("nodepool_ng.launcher.pool", provider=ctx.pool_id)
        self._accept_pool: ThreadPoolExecutor | None = None
        # Requests we had no room for, left to other pools: request id -> when first left.
        self._yielding: dict[str, float] = {}
        # The last pass left a request to others for want of room. Published as `paused`
        # like a paused handler: a pool that is full as well then stops leaving requests to
        # us and accepts (and pauses) as upstream, instead of both waiting on each other.
        self._full = False
        self.session_lost = threading.Event()

    def on_session_lost(self) -> None:
        """Any thread: the session expired; re-lock before the next pass."""
        self.session_lost.set()
        self.wake()

    def run_once(self) -> float | None:
        if self.session_lost.is_set():
            self.session_lost.clear()
            self._wait_for_jobs()  # their locks need re-taking too
            for rid, work in list(self._work.items()):
                if work.handler is not None and not relock_handler(work.handler):
                    self._done(rid)
        self._advance()
        paused = self._pool_paused()  # one walk of the requests in flight per pass
        self._publish(self._published_state(paused))
        if not self.stopped:
            paused = self._assign(paused)
        self._publish(self._published_state(paused))
        # Look again when the next yield runs out (no other pool took the request). One that
        # ran out already was looked at in this pass: only a change (a wake) helps it now.
        now = time.monotonic()
        ends = [t + YIELD_AT_QUOTA_FOR - now for t in self._yielding.values()]
        return min((end for end in ends if end > 0), default=None)

    def _published_state(self, paused: bool) -> bool:
        """`paused` as other pools see it: a paused handler (`paused`), no room last pass, or
        a cloud that takes no launches now (its requests should go elsewhere)."""
        return paused or self._full or not self.ctx.runner.accepting

    def _pool_paused(self) -> bool:
        # A handler whose refill has every empty slot planned is as good as unpaused.
        return any(work.paused for work in self._work.values())

    def _done(self, request_id: str) -> None:
        """Finished with the request (fulfilled, declined, given back, gone or not ours)."""
        self._work.pop(request_id, None)
        self.ctx.ledger.close_request(request_id)

    # -- handlers --------------------------------------------------------------------------
    def _advance(self) -> None:
        """Adopt finished background jobs, then advance each handler (refill or poll)."""
        for rid, work in list(self._work.items()):
            if work.job is not None:
                if not work.finished:
                    continue
                job, work.job = work.job, None
                if work.handler is None:
                    work.handler = job.result()  # accept never raises
                    if work.handler is None:
                        self._done(rid)
                        continue
                elif job.exception() is not None:
                    work.handler.log.warning("Filling failed, declining: %s", job.exception())
                    work.handler.decline_quietly(str(job.exception()))
                    self._done(rid)
                    continue
            assert work.handler is not None
            if self._poll(work.handler, work):
                self._done(rid)

    def _poll(self, handler: RequestHandler, work: _Work) -> bool:
        """Refill a paused handler in the background, or poll it; True when it is done."""
        try:
            if handler.paused and handler.fillable() and self._start_refill(handler, work):
                return False
            return handler.poll()
        except NodepoolError as e:
            handler.log.warning("Handler error, declining: %s", e)
            reason = str(e)
        except Exception:
            handler.log.exception("Handler error, declining")
            reason = "internal error"
        handler.decline_quietly(reason)
        return True

    def _start_refill(self, handler: RequestHandler, work: _Work) -> bool:
        """A paused handler with room again fills what fits in the background; False when
        nothing fits (its own `poll` then pauses on, freeing an unused node as upstream)."""
        empty = handler.empty_labels()
        plan = plan_slots(self.ctx, empty, handler.request.reuse)
        if all(s is None for s in plan):
            return False

        def refill() -> None:
            try:
                handler.fill_planned(plan)
            finally:
                unplan(self.ctx, plan)

        work.run(self._executor().submit(refill),
                 pauses=any(s is None for s, label in zip(plan, empty, strict=True)
                            if label is not None),
                 wake=self.wake)
        return True

    def _publish(self, paused: bool) -> None:
        if paused != self._published_paused:
            self._published_paused = paused
            try:
                self._set_paused(paused)
            except Exception as e:
                self.plog.warning("Could not update pool component: %s", e)

    # -- 1. decide -------------------------------------------------------------------------
    def _fail_malformed(self) -> None:
        """Answer requests whose fields are malformed (every pool may; the lock picks one)."""
        for request_id, reason in self.ctx.zk.malformed_requests().items():
            if self.ctx.zk.fail_malformed_request(request_id, reason):
                self.plog.warning("Failed malformed request %s: %s", request_id, reason)

    def _assign(self, paused: bool) -> bool:
        """Decide on the open requests in order; returns whether a handler is paused now
        (`paused` on entry, or an accept this pass pauses the pool)."""
        ctx = self.ctx
        self._fail_malformed()
        me = ctx.info(paused)
        open_requests = {
            r.id: r
            for r in ctx.zk.open_requests()
            if r.id not in self._work and ctx.pool_id not in r.declined_by
        }
        self._yielding = {rid: t for rid, t in self._yielding.items() if rid in open_requests}
        self._full = False
        if not open_requests:
            return paused
        pools = ctx.zk.pool_infos()
        tenants = tenant_pass(ctx.config.tenant_resource_limits, ctx.zk.nodes, ctx.ledger,
                              ctx.quota.label_cost, me.supported_labels)
        addressable = 0
        for view in order_requests((_view(r) for r in open_requests.values()), me.supported_labels):
            if self.stopped:
                return paused
            req = open_requests[view.id]
            reason = decline_reason(ctx, req) if me.supports(view.node_types) else None
            decision = decide(
                view,
                me,
                pools,
                decline_reason=reason,
                paused=paused,
                at_concurrency_limit=at_concurrency_limit(ctx),
            )
            if decision.action in (Action.ACCEPT, Action.DECLINE) and not tenants.fits(req):
                decision = Decision(Action.DEFER, "tenant resource limits")  # as upstream
            if decision.action is Action.ACCEPT:
                addressable += 1
                # -- 2. reserve, then 3.-4. in the background --------------------------------
                plan = plan_slots(ctx, list(req.node_types), req.reuse)
                pauses = any(s is None for s in plan)
                if pauses and not ctx.provider.launches_servers:
                    # A static pool never pauses (upstream): the request waits, unaccepted,
                    # until hosts for all its labels are free, and other requests go on.
                    unplan(ctx, plan)
                    continue
                if pauses and self._accepting():
                    # No room now, but accepts in flight may lose their lock and give their
                    # quota back: decide this request (and the rest) once they are done.
                    unplan(ctx, plan)
                    break
                if pauses and self._yields(view, me, pools):
                    unplan(ctx, plan)
                    self._full = True
                    continue
                self._start_accept(view.id, plan, pauses)
                tenants.promise(req)
                if pauses:
                    # Accepted, but it will pause (upstream: PAUSE_AT_QUOTA): so is the pool.
                    paused = True
                    me = ctx.info(paused)
            elif decision.action is Action.DECLINE:
                decline_open(ctx, view.id, decision.reason)
            elif decision.action is Action.DEFER:
                addressable += 1
        ctx.stats.addressable_requests(ctx.provider.name, ctx.pool.name, addressable)
        return paused

    def _start_accept(self, request_id: str, plan: Plan, pauses: bool) -> None:
        self.ctx.ledger.open_request(request_id)
        work = self._work[request_id] = _Work()
        work.run(self._executor().submit(accept, self.ctx, request_id, plan), pauses, self.wake)

    def _accepting(self) -> bool:
        """Accepts are running in the background."""
        return any(w.handler is None for w in self._work.values())

    def _yields(self, view: RequestView, me: PoolInfo, pools: list[PoolInfo]) -> bool:
        """No room for `view`: leave it to a pool that may have room, for a while; after
        YIELD_AT_QUOTA_FOR (nobody took it) accept it and pause, as upstream does."""
        if not yield_at_quota(view, me, pools):
            self._yielding.pop(view.id, None)
            return False
        first = self._yielding.setdefault(view.id, time.monotonic())
        return time.monotonic() - first < YIELD_AT_QUOTA_FOR

    def _executor(self) -> ThreadPoolExecutor:
        if self._accept_pool is None:
            name = f"accept-{self.ctx.provider.name}-{self.ctx.pool.name}"
            self._accept_pool = ThreadPoolExecutor(ACCEPT_THREADS, thread_name_prefix=name)
        return self._accept_pool

    def _wait_for_jobs(self) -> None:
        """Let every background accept and refill finish, and adopt their handlers."""
        for rid, work in list(self._work.items()):
            if work.job is None:
                continue
            job = work.job
            job.exception()  # waits; a refill's outcome is handled by the next pass
            if work.handler is None:
                work.job, work.handler = None, job.result()
                if work.handler is None:
                    self._done(rid)

    def on_stop(self) -> None:
        self._wait_for_jobs()
        if self._accept_pool is not None:
            self._accept_pool.shutdown(wait=True)
        for rid, work in list(self._work.items()):
            if work.handler is not None:
                try:
                    work.handler.abandon()
                except Exception:
                    work.handler.log.exception("Could not release request on stop")
            self._done(rid)

"""`PoolWorker`: one thread per provider-pool; assignment, then its request handlers.

Woken by the request cache, the node cache and finished launches. Each pass, top to bottom:
advance the handlers; publish `paused`; then walk the open requests in upstream's order and
accept, decline, skip or defer each one (`assignment.decide`).
"""

from __future__ import annotations

from collections.abc import Callable

from nodepool_ng.errors import NodepoolError
from nodepool_ng.launcher.assignment import Action, RequestView, decide, order_requests
from nodepool_ng.launcher.handler import RequestHandler
from nodepool_ng.launcher.poolctx import PoolContext
from nodepool_ng.log import get_logger
from nodepool_ng.model.request import NodeRequest, RequestState
from nodepool_ng.runtime.loop import Worker


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

    def run_once(self) -> float | None:
        self._poll_handlers()
        paused = any(h.paused for h in self.handlers)
        self._publish(paused)
        if not self.stopped:
            self._assign(paused)
        self._publish(any(h.paused for h in self.handlers))
        return None

    # -- handlers --------------------------------------------------------------------------
    def _poll_handlers(self) -> None:
        for handler in list(self.handlers):
            try:
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
    def _assign(self, paused: bool) -> None:
        ctx = self.ctx
        me = ctx.info(paused)
        active = {h.id for h in self.handlers}
        open_requests = {
            r.id: r
            for r in ctx.zk.requests()
            if r.state is RequestState.REQUESTED
            and r.id not in active
            and ctx.pool_id not in r.declined_by
        }
        if not open_requests:
            return
        pools = ctx.zk.pool_infos()
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
            if decision.action is Action.ACCEPT:
                addressable += 1
                handler = self._accept(view.id)
                if handler is not None and handler.paused:
                    paused = True
                    me = ctx.info(paused)
            elif decision.action is Action.DECLINE:
                self._decline(view.id, decision.reason)
            elif decision.action is Action.DEFER:
                addressable += 1
        ctx.stats.addressable_requests(ctx.provider.name, ctx.pool.name, addressable)

    def _locked_open_request(self, request_id: str) -> NodeRequest | None:
        """Lock non-blocking, re-read and re-check ("double check after lock")."""
        req = self.ctx.zk.lock_fresh_request(request_id)
        if req is None:
            return None
        if req.state is not RequestState.REQUESTED or self.ctx.pool_id in req.declined_by:
            self.ctx.zk.unlock_request(req)
            return None
        return req

    def _accept(self, request_id: str) -> RequestHandler | None:
        req = self._locked_open_request(request_id)
        if req is None:
            return None
        handler = RequestHandler(self.ctx, req)
        try:
            if not handler.start():
                return None
        except Exception as e:
            handler.log.warning("Could not start handling, declining: %s", e)
            self._decline_quietly(handler, str(e))
            return None
        self.handlers.append(handler)
        return handler

    def _decline(self, request_id: str, reason: str) -> None:
        req = self._locked_open_request(request_id)
        if req is None:
            return
        RequestHandler(self.ctx, req).decline(reason)

    def on_stop(self) -> None:
        for handler in self.handlers:
            try:
                handler.abandon()
            except Exception:
                handler.log.exception("Could not release request on stop")
        self.handlers.clear()

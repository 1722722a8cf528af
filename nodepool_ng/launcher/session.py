"""Carrying in-flight work over a ZooKeeper session expiry.

Our request and node locks are ephemeral znodes: they vanish with an expired session while
our handlers keep building. Left alone, our own deleter (and other launchers' cleanup) would
take the unlocked `building` nodes and the unlocked `pending` request for abandoned ones.
So, after an expiry, the pool worker re-takes every lock its handlers held, in its own
thread (no race with a handler unlocking at the same moment), before its next pass. A
request somebody else took meanwhile is given up (its nodes are left to the cleanup).
Until then `busy_node_ids()` tells the deleter which unlocked nodes are still ours.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from nodepool_ng.launcher.handler import RequestHandler
from nodepool_ng.launcher.pool import PoolWorker
from nodepool_ng.launcher.poolctx import PoolContext
from nodepool_ng.model.node import Node
from nodepool_ng.model.request import RequestState


class SessionAwarePoolWorker(PoolWorker):
    """A PoolWorker that re-takes its handlers' locks after the session expired."""

    def __init__(
        self,
        ctx: PoolContext,
        set_paused: Callable[[bool], None],
        interval: float = 30.0,
        paused: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(ctx, set_paused, interval, paused)
        self.session_lost = threading.Event()

    def on_session_lost(self) -> None:
        """Any thread: the session expired; re-lock before the next pass."""
        self.session_lost.set()
        self.wake()

    def run_once(self) -> float | None:
        if self.session_lost.is_set():
            self.session_lost.clear()
            self._collect_starts(wait=True)  # their locks need re-taking too
            self.handlers = [h for h in self.handlers if relock_handler(h)]
        return super().run_once()

    def busy_node_ids(self) -> set[str]:
        return {n.id for h in list(self.handlers) for n in list(h.slots) if n and n.id}


def relock_handler(handler: RequestHandler) -> bool:
    """Re-take the request and node locks of `handler`; False when it must be dropped."""
    zk = handler.ctx.zk
    fresh = zk.lock_fresh_request(handler.id)
    if fresh is None or fresh.state is not RequestState.PENDING:
        if fresh is not None:
            zk.unlock_request(fresh)
        handler.log.warning("Lost the request with the ZooKeeper session; giving it up")
        handler.request.lock = None  # its znode went with the old session
        for node in _nodes(handler.slots):
            node.lock = None
        return False
    handler.request.lock = fresh.lock
    for node in _nodes(handler.slots):
        holder = Node(id=node.id)
        if zk.lock_node(holder):
            node.lock = holder.lock
        else:
            # Somebody else holds it now; the handler declines if the node does not finish.
            node.lock = None
            handler.log.warning("Could not re-lock node %s after the session expired", node.id)
    handler.log.info("Re-locked request and nodes after the ZooKeeper session expired")
    return True


def _nodes(slots: Iterable[Node | None]) -> list[Node]:
    return [n for n in slots if n is not None and n.id]

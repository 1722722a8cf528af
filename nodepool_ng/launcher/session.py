"""Carrying in-flight work over a ZooKeeper session expiry.

Our request and node locks are ephemeral znodes: they vanish with an expired session while
our handlers keep building. Left alone, our own deleter (and other launchers' cleanup) would
take the unlocked `building` nodes and the unlocked `pending` request for abandoned ones.
So, after an expiry, the pool worker re-takes every lock its handlers held, in its own
thread (no race with a handler unlocking at the same moment), before its next pass
(`PoolWorker.on_session_lost`). A request somebody else took meanwhile is given up (its
nodes are left to the cleanup). Until then the pool's ledger tells the deleter which
unlocked nodes are still ours (`PoolLedger.held_nodes`) and the cleanup which requests
(`PoolLedger.requests`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodepool_ng.model.node import Node
from nodepool_ng.model.request import RequestState

if TYPE_CHECKING:
    from nodepool_ng.launcher.handler import RequestHandler
    from nodepool_ng.launcher.runner import LaunchTask


def relock_handler(handler: RequestHandler) -> bool:
    """Re-take the request and node locks of `handler`; False when it must be dropped."""
    zk = handler.ctx.zk
    held = list(handler.held())
    fresh = zk.lock_fresh_request(handler.id)
    if fresh is None or fresh.state is not RequestState.PENDING:
        if fresh is not None:
            zk.unlock_request(fresh)
        handler.log.warning("Lost the request with the ZooKeeper session; giving it up")
        handler.request.lock = None  # its znode went with the old session
        for node, task in held:
            _set_lock(handler, node, task, None)
        return False
    handler.request.lock = fresh.lock
    for node, task in held:
        holder = Node(id=node.id)
        if zk.lock_node(holder):
            _set_lock(handler, node, task, holder.lock)
        else:
            # Somebody else holds it now; the handler declines if the node does not finish.
            _set_lock(handler, node, task, None)
            handler.log.warning("Could not re-lock node %s after the session expired", node.id)
    handler.log.info("Re-locked request and nodes after the ZooKeeper session expired")
    return True


def _set_lock(handler: RequestHandler, node: Node, task: LaunchTask | None, lock: Any) -> None:
    """A node of ours gets its new lock; a launch in flight's node belongs to the runner,
    which checks the lock before it reports the node (`runner._lock_held`): sent to it."""
    if task is None:
        node.lock = lock
    else:
        handler.ctx.runner.relock(task, lock)

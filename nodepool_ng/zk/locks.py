"""Lock helpers around kazoo's `Lock` recipe (compatible with Zuul's node locks).

kazoo's `Lock.acquire` retries forever while disconnected, even with `blocking=False` (a
request queued while kazoo reconnects waits for the connection, with no timeout). To keep
the promise that no call blocks a worker forever, `acquire()` runs the kazoo acquisition on
a small shared pool of helper threads and waits for it with a deadline; if it gives up, the
late result is released by the helper so no contender znode is left behind. A pool, not a
thread per attempt: starting a thread costs a GIL hand-over and ~0.1 ms on every lock, and
the launcher takes several locks per request. Attempts abandoned before a helper picked
them up (all helpers stuck while disconnected) are skipped.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kazoo.exceptions import CancelledError, KazooException, LockTimeout
from kazoo.recipe.lock import Lock

from nodepool_ng.errors import LockError, RecordNotFound
from nodepool_ng.zk.client import ZooKeeperClient

log = logging.getLogger("nodepool_ng.zk.locks")

# kazoo Lock contender names end in `__lock__<seq10>`.
_SEQ_LEN = 10

# Concurrent lock attempts in one process (the launcher: a few per pool worker at most).
_HELPERS = 32  # threads are started on demand
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _helpers() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_HELPERS, thread_name_prefix="zk-lock")
        return _pool


def make_lock(client: ZooKeeperClient, path: str, identifier: str | None = None) -> Lock:
    """A kazoo Lock at `path`; `identifier` is written into the contender znode."""
    return Lock(client.kazoo, path, identifier=identifier)


def acquire(
    client: ZooKeeperClient,
    lock: Lock,
    *,
    blocking: bool = False,
    timeout: float | None = None,
    what: str = "lock",
) -> None:
    """Take `lock` or raise LockError.

    Non-blocking (default) fails at once when someone else holds it. Blocking waits up to
    `timeout` (None: the client's operation timeout; never forever). Connection trouble
    raises LockError too (a ZooKeeperError), after at most the wait limit.
    """
    if not client.is_connected:
        raise LockError(f"{what}: not connected to ZooKeeper")
    wait_limit = timeout if (blocking and timeout is not None) else client.operation_timeout
    outcome: dict[str, Any] = {}
    done = threading.Event()
    abandoned = threading.Event()
    handover = threading.Lock()  # "done" and "abandoned" are decided under it, never both

    def run() -> None:
        if abandoned.is_set():
            return  # the caller gave up while every helper was busy
        try:
            outcome["got"] = lock.acquire(
                blocking=blocking, timeout=wait_limit if blocking else None
            )
        except BaseException as e:  # reported to the waiting caller
            outcome["error"] = e
        with handover:
            orphan = abandoned.is_set()
            done.set()
        if orphan and outcome.get("got"):
            # The caller gave up before we got it: do not keep a lock nobody owns.
            _release_quietly(lock)

    _helpers().submit(run)
    # A little slack over kazoo's own timeout so its LockTimeout wins normally.
    if not done.wait(wait_limit + 1.0):
        with handover:
            if not done.is_set():
                abandoned.set()
        if abandoned.is_set():
            lock.cancel()
            raise LockError(f"{what}: could not take lock within {wait_limit}s")
    error = outcome.get("error")
    if isinstance(error, (LockTimeout, CancelledError)):
        raise LockError(f"{what}: held elsewhere (timed out after {wait_limit}s)") from error
    if isinstance(error, KazooException):
        raise LockError(f"{what}: {type(error).__name__} {error}".rstrip()) from error
    if error is not None:
        raise error
    if not outcome.get("got"):
        raise LockError(f"{what}: held elsewhere")


def release(lock: Lock | None) -> None:
    """Release `lock` if held; connection trouble is logged, not raised (ephemeral anyway)."""
    if lock is None:
        return
    _release_quietly(lock)


def _release_quietly(lock: Lock) -> None:
    try:
        lock.release()
    except KazooException as e:
        # The contender znode is ephemeral: it disappears with the session anyway.
        log.warning("could not release lock %s: %s", lock.path, e)


def contenders(client: ZooKeeperClient, path: str) -> list[str]:
    """Contender znode names at lock dir `path`, lowest sequence (the holder) first."""
    names = client.get_children(path)
    return sorted(names, key=lambda n: n[-_SEQ_LEN:])


def is_locked(client: ZooKeeperClient, path: str) -> bool:
    """True if the lock at `path` has any contender (probably held)."""
    return bool(contenders(client, path))


def force_unlock(client: ZooKeeperClient, path: str) -> bool:
    """Delete the current holder's contender znode (lowest sequence). True if one existed."""
    names = contenders(client, path)
    if not names:
        return False
    try:
        client.call(f"force unlock {path}", client.kazoo.delete_async, f"{path}/{names[0]}")
    except RecordNotFound:
        pass  # released meanwhile
    return True

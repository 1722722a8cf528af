"""Exclusive locks that interoperate with kazoo's `Lock` recipe (Zuul's and upstream's).

The protocol is kazoo's: a contender is an ephemeral sequential znode
`<lock dir>/<uuid hex>__lock__<seq10>` holding the identifier; the lowest sequence among
the `__lock__` / `__rlock__` contenders holds the lock; a waiter watches its predecessor.

Why not kazoo's `Lock` itself: its `acquire` retries forever while disconnected (even
non-blocking), so it needed a helper thread per attempt to bound the wait; and it spends four
round trips per attempt (an `exists` for the lock dir, a create, a listing, a delete). Here
every call is a kazoo async call waited on with a deadline, on the caller's thread:

* a lock dir that does not exist yet (a record locked for the first time: every new node
  and request) is created together with our contender in one transaction: nobody else can be
  in a directory that did not exist, so that is the lock, in one round trip;
* otherwise: create the contender, list the dir; the release is a delete not waited for
  (ZooKeeper applies a session's requests in order, so whatever we send next comes after);
* a contender whose create answer came too late is deleted when the answer arrives, and one
  whose answer was lost with the connection (applied or not: unknown) is looked for by its
  unique name prefix once connected, so an attempt given up never leaves a contender behind.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import (
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    OperationTimeoutError,
)
from kazoo.handlers.threading import KazooTimeoutError

from nodepool_ng.errors import LockError, RecordNotFound, ZooKeeperError
from nodepool_ng.zk.client import ConnectionState, ZooKeeperClient

log = logging.getLogger("nodepool_ng.zk.locks")

_SEQ_LEN = 10  # contender names end in a 10-digit sequence
_CONTENDER_MARKS = ("__lock__", "__rlock__")  # kazoo's write and read lock contenders


class ZkLock:
    """One exclusive lock on `path` (a lock dir). `is_acquired` while we hold it."""

    def __init__(self, client: ZooKeeperClient, path: str, identifier: str | None = None,
                 make_parents: bool = True) -> None:
        self.client = client
        self.path = path
        self.identifier = identifier
        # False when the lock dir's parent is the record the lock guards: a missing parent
        # then means the record is gone (RecordNotFound), not something to create.
        self.make_parents = make_parents
        self.node: str | None = None  # our contender's name while acquired
        self.is_acquired = False

    @property
    def contender_path(self) -> str | None:
        return None if self.node is None else f"{self.path}/{self.node}"


def make_lock(client: ZooKeeperClient, path: str, identifier: str | None = None,
              make_parents: bool = True) -> ZkLock:
    """A lock at `path`; `identifier` is written into our contender znode."""
    return ZkLock(client, path, identifier, make_parents)


def acquire(
    client: ZooKeeperClient,
    lock: ZkLock,
    *,
    blocking: bool = False,
    timeout: float | None = None,
    what: str = "lock",
    new_dir: bool = False,
    extra_ops: list[tuple[str, str, bytes, int]] | None = None,
) -> list[Any]:
    """Take `lock` or raise LockError (RecordNotFound if the record it guards is gone).

    Non-blocking (default) fails at once when someone else holds it. Blocking waits up to
    `timeout` (None: the client's operation timeout; never forever). `new_dir`: the lock dir
    probably does not exist yet (first lock of a record): try creating it with our
    contender first. `extra_ops` are `("set", path, data, version)` writes committed in the
    same transaction when the lock is taken that way (their results are returned);
    otherwise they are not done and [] is returned: the caller writes them itself.
    """
    if lock.is_acquired:
        raise LockError(f"{what}: already locked by this process")
    limit = timeout if (blocking and timeout is not None) else client.operation_timeout
    deadline = time.monotonic() + limit
    if not client.is_connected:
        raise LockError(f"{what}: not connected to ZooKeeper")
    prefix = f"{uuid.uuid4().hex}__lock__"
    data = (lock.identifier or "").encode()
    kazoo = client.kazoo
    try:
        name = None
        if not new_dir:
            name = _create_contender(client, lock, prefix, data, deadline, what)
        if name is None:  # the dir is (probably) missing
            results = _create_with_dir(client, lock, prefix, data, deadline, what, extra_ops)
            if results is not None:
                return results
            if new_dir and not blocking and _held(client, lock, deadline, what):
                # We guessed a first lock and the dir is there: most likely another
                # launcher's pool just took it. One listing says so; no contender of ours.
                raise LockError(f"{what}: held elsewhere")
            name = _create_contender(client, lock, prefix, data, deadline, what)
            if name is None:
                raise LockError(f"{what}: the lock dir came and went")
        while True:
            contenders = _in_order(_wait(kazoo.get_children_async(lock.path), deadline, what))
            if name not in contenders:
                raise LockError(f"{what}: our lock contender vanished (session expired?)")
            position = contenders.index(name)
            if position == 0:
                lock.node, lock.is_acquired = name, True
                return []
            if not blocking:
                raise LockError(f"{what}: held elsewhere")
            predecessor = f"{lock.path}/{contenders[position - 1]}"
            gone = threading.Event()
            if _wait(kazoo.exists_async(predecessor, watch=lambda _e, ev=gone: ev.set()),
                     deadline, what) is None:
                continue
            if not gone.wait(max(0.0, deadline - time.monotonic())):
                raise LockError(f"{what}: held elsewhere (timed out after {limit}s)")
    except BaseException:
        if lock.contender_path is not None and not lock.is_acquired:
            _delete_later(client, lock.contender_path)
            lock.node = None
        raise


def release(lock: ZkLock | None, wait: bool = False) -> None:
    """Release `lock` if held. By default the delete is sent, not waited for: this session's
    later requests are applied after it (ZooKeeper keeps a session's order), so what we write
    next is seen after the release; other sessions may see the lock for a moment longer.
    `wait`: return once ZooKeeper applied it. Trouble is logged, not raised (the contender is
    ephemeral: it goes with the session anyway)."""
    path = lock.contender_path if lock is not None and lock.is_acquired else None
    if lock is None or path is None:
        return
    lock.is_acquired, lock.node = False, None
    if not wait:
        _delete_later(lock.client, path)
        return
    try:
        lock.client.call(f"lock {path}", lock.client.kazoo.delete_async, path)
    except RecordNotFound:
        pass  # gone with its record, or its session
    except (KazooException, ZooKeeperError) as e:
        log.warning("could not remove lock contender %s: %s; retried on reconnect", path, e)
        _retries(lock.client).add(path)


def forget(lock: ZkLock | None) -> None:
    """Mark `lock` released without a delete (its contender was removed with its record)."""
    if lock is not None:
        lock.is_acquired, lock.node = False, None


def contenders(client: ZooKeeperClient, path: str) -> list[str]:
    """Every child of lock dir `path`, lowest sequence (the holder) first."""
    return sorted(client.get_children(path), key=lambda n: n[-_SEQ_LEN:])


def _in_order(children: list[str]) -> list[str]:
    """The lock contenders among a lock dir's children, lowest sequence (the holder) first."""
    return sorted((c for c in children if any(m in c for m in _CONTENDER_MARKS)),
                  key=lambda c: c[-_SEQ_LEN:])


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


# -- steps ------------------------------------------------------------------------------------
def _create_with_dir(
    client: ZooKeeperClient, lock: ZkLock, prefix: str, data: bytes, deadline: float,
    what: str, extra_ops: list[tuple[str, str, bytes, int]] | None,
    make_parents: bool | None = None,
) -> list[Any] | None:
    """Create the lock dir with our contender in it (and `extra_ops`) atomically. The
    results of `extra_ops`, or None if the dir exists (the normal protocol follows)."""
    if make_parents is None:
        make_parents = lock.make_parents
    txn = client.kazoo.transaction()
    txn.create(lock.path)
    txn.create(f"{lock.path}/{prefix}", data, ephemeral=True, sequence=True)
    for op, path, payload, version in extra_ops or ():
        if op != "set":
            raise ValueError(f"unsupported lock transaction op {op}")
        txn.set_data(path, payload, version)
    answer = txn.commit_async()
    try:
        results = _wait(answer, deadline, what)
    except LockError:
        # Given up: if the transaction still commits, remove the contender it made.
        answer.rawlink(lambda late: _delete_late_contender(client, late, lambda r: r[1],
                                                           lock.path, prefix))
        raise
    failures = [r for r in results if isinstance(r, Exception)]
    if not failures:
        lock.node, lock.is_acquired = results[1].rsplit("/", 1)[-1], True
        return list(results[2:])
    first = results[0]
    if isinstance(first, NodeExistsError):
        return None  # the dir is there: contend normally
    if isinstance(first, NoNodeError):
        if not make_parents:
            raise RecordNotFound(f"{what}: the record is gone")
        client.ensure_path(lock.path.rsplit("/", 1)[0])
        return _create_with_dir(client, lock, prefix, data, deadline, what, extra_ops,
                                make_parents=False)
    cause = next((f for f in failures if type(f).__name__ != "RolledBackError"), failures[0])
    raise LockError(f"{what}: locking transaction failed: {type(cause).__name__}")


def _held(client: ZooKeeperClient, lock: ZkLock, deadline: float, what: str) -> bool:
    """True when the lock dir has a contender (someone holds or waits for the lock)."""
    try:
        children = _wait(client.kazoo.get_children_async(lock.path), deadline, what)
    except NoNodeError:
        return False
    return bool(_in_order(children))


def _create_contender(client: ZooKeeperClient, lock: ZkLock, prefix: str, data: bytes,
                      deadline: float, what: str) -> str | None:
    """Our contender's name, or None when the lock dir does not exist."""
    answer = client.kazoo.create_async(f"{lock.path}/{prefix}", data, ephemeral=True,
                                       sequence=True)
    try:
        created: str = _wait(answer, deadline, what)
    except LockError:
        # Given up: if the create still happens, remove that contender when it does.
        answer.rawlink(lambda late: _delete_late_contender(client, late, lambda r: r,
                                                           lock.path, prefix))
        raise
    except NoNodeError:
        return None
    name = created.rsplit("/", 1)[-1]
    lock.node = name
    return name


def _wait(answer: Any, deadline: float, what: str) -> Any:
    try:
        return answer.get(timeout=max(0.0, deadline - time.monotonic()))
    except (NoNodeError, NodeExistsError, NotEmptyError):
        raise
    except KazooTimeoutError as e:
        raise LockError(f"{what}: no answer from ZooKeeper in time") from e
    except KazooException as e:
        raise LockError(f"{what}: {type(e).__name__} {e}".rstrip()) from e


def _delete_late_contender(client: ZooKeeperClient, answer: Any,
                           contender_of: Callable[[Any], Any], lock_dir: str,
                           prefix: str) -> None:
    """An answer that came after its caller gave up: delete the contender it created. A
    connection loss does not say whether the create was applied: our session (which outlives
    the drop) may own a contender nobody knows of, that would hold the lock forever; it is
    looked for by its unique prefix once connected again."""
    try:
        path = contender_of(answer.get_nowait())
    except (ConnectionLoss, OperationTimeoutError):
        _retries(client).find(lock_dir, prefix)
        return
    except Exception:
        return  # nothing was created (or the transaction failed)
    if isinstance(path, str):
        _delete_later(client, path)


def _delete_later(client: ZooKeeperClient, path: str) -> None:
    def report(answer: Any) -> None:
        try:
            answer.get_nowait()
        except NoNodeError:
            pass
        except Exception as e:
            log.warning("could not remove lock contender %s: %s; retried on reconnect", path, e)
            _retries(client).add(path)

    try:
        client.kazoo.delete_async(path).rawlink(report)
    except (KazooException, ZooKeeperError) as e:
        log.warning("could not remove lock contender %s: %s; retried on reconnect", path, e)
        _retries(client).add(path)


class _ContenderRetries:
    """Contenders whose delete was lost to a connection drop, and creates whose answer was
    (so a contender of ours may exist under an unknown name). Our session outlives the drop,
    and so would they: a stray contender later becomes the holder, and nobody can lock (or
    delete) that record again. Deleted again once connected (the unknown ones found by
    their unique name prefix); forgotten when the session expires (ZooKeeper removed them
    with it)."""

    RETRY_DELAY = 1.0  # a delete that failed while connected: try again after this

    def __init__(self, client: ZooKeeperClient) -> None:
        self._client = weakref.ref(client)  # the client holds us (its listener), not back
        self._paths: set[str] = set()
        self._searches: set[tuple[str, str]] = set()  # (lock dir, contender name prefix)
        self._lock = threading.Lock()
        client.add_state_listener(self._on_state)

    def add(self, path: str) -> None:
        with self._lock:
            self._paths.add(path)
        self._soon()

    def find(self, lock_dir: str, prefix: str) -> None:
        """Delete any contender in `lock_dir` whose name starts with `prefix`."""
        with self._lock:
            self._searches.add((lock_dir, prefix))
        self._soon()

    def _soon(self) -> None:
        client = self._client()
        if client is not None and client.is_connected:  # the reconnect may have come already
            timer = threading.Timer(self.RETRY_DELAY, self._retry)
            timer.daemon = True
            timer.start()

    def _on_state(self, state: ConnectionState) -> None:
        if state is ConnectionState.LOST:
            with self._lock:
                self._paths.clear()
                self._searches.clear()
        elif state is ConnectionState.CONNECTED:
            self._retry()

    def _retry(self) -> None:
        client = self._client()
        with self._lock:
            paths, self._paths = self._paths, set()
            searches, self._searches = self._searches, set()
        if client is None:
            return
        for path in paths:
            _delete_later(client, path)
        for lock_dir, prefix in searches:
            self._search(client, lock_dir, prefix)

    def _search(self, client: ZooKeeperClient, lock_dir: str, prefix: str) -> None:
        def found(answer: Any) -> None:
            try:
                children = answer.get_nowait()
            except NoNodeError:
                return  # no lock dir: no contender either
            except Exception:
                self.find(lock_dir, prefix)  # ask again
                return
            for name in children:
                if name.startswith(prefix):
                    log.warning("removing lock contender %s/%s whose create answer was lost",
                                lock_dir, name)
                    _delete_later(client, f"{lock_dir}/{name}")

        try:
            client.kazoo.get_children_async(lock_dir).rawlink(found)
        except (KazooException, ZooKeeperError):
            self.find(lock_dir, prefix)


_RETRIES: weakref.WeakKeyDictionary[ZooKeeperClient, _ContenderRetries] = (
    weakref.WeakKeyDictionary())
_RETRIES_LOCK = threading.Lock()


def _retries(client: ZooKeeperClient) -> _ContenderRetries:
    with _RETRIES_LOCK:
        retries = _RETRIES.get(client)
        if retries is None:
            retries = _RETRIES[client] = _ContenderRetries(client)
        return retries

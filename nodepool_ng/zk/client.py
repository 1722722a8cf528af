"""The ZooKeeper session: connection string with chroot, TLS, state tracking, bounded calls.

Workers look at `suspended` (set while there is no usable connection) and pause. When the
session expires kazoo connects again with a new session; `session_generation` then grows and
the session listeners run (on a dispatch thread, so they may call ZooKeeper) so owners of
ephemeral znodes (components, min-ready requests) re-create them.

Every store call goes through `call()`: kazoo's async form with a deadline, so nothing blocks
forever while disconnected. A call made while disconnected waits for the connection at most
the operation timeout and is then refused without being queued (a queued request would run
later, after the caller gave up).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from nodepool_ng.errors import RecordNotFound, ZooKeeperError
from nodepool_ng.zk.connection import install as install_connection
from nodepool_ng.zk.handler import PollingThreadingHandler

log = logging.getLogger("nodepool_ng.zk.client")

# Errors the caller handles itself (create races, versioned set, non-empty delete).
PASS_THROUGH = (NodeExistsError, BadVersionError, NotEmptyError)


class ConnectionState(StrEnum):
    CONNECTED = "connected"
    SUSPENDED = "suspended"  # connection lost; the session may still be alive
    LOST = "lost"  # session expired: ephemeral znodes and locks are gone


StateListener = Callable[[ConnectionState], None]
SessionListener = Callable[[], None]


class ZooKeeperClient:
    """One ZooKeeper session shared by every store of a process."""

    def __init__(
        self,
        hosts: str,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        session_timeout: float = 10.0,
        operation_timeout: float = 10.0,
        max_retry_delay: float = 1.0,
        read_only: bool = False,
    ) -> None:
        """`hosts` is `host:port[,host:port][/chroot]`. TLS is used when cert, key and ca are
        all given; giving only some of them is an error (plaintext is for loopback tests)."""
        tls = (tls_cert, tls_key, tls_ca)
        if any(tls) and not all(tls):
            raise ZooKeeperError("zookeeper-tls: cert, key and ca must all be set")
        self.hosts = hosts
        self.operation_timeout = operation_timeout
        kwargs: dict[str, Any] = {}
        if all(tls):
            kwargs.update(use_ssl=True, certfile=tls_cert, keyfile=tls_key, ca=tls_ca)
        self.kazoo = KazooClient(
            hosts=hosts,
            timeout=session_timeout,
            read_only=read_only,
            # A small max_delay reconnects within about a second after an outage.
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=max_retry_delay),
            handler=PollingThreadingHandler(),
            **kwargs,
        )
        # Persistent watches (the caches) are routed from kazoo's connection thread.
        self.watch_router = install_connection(self.kazoo)
        self.suspended = threading.Event()
        self.suspended.set()
        self._connected = threading.Event()
        self.session_generation = 0
        self._session_id: int | None = None
        self._state_listeners: list[StateListener] = []
        self._session_listeners: list[SessionListener] = []
        self._events: queue.Queue[tuple[ConnectionState, bool] | None] = queue.Queue()
        self._dispatcher: threading.Thread | None = None
        self.kazoo.add_listener(self._on_state)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Connect; raises ZooKeeperError if no server answers within `timeout`."""
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="zk-state-dispatch", daemon=True
        )
        self._dispatcher.start()
        try:
            self.kazoo.start(timeout=timeout)
        except KazooTimeoutError as e:
            self.kazoo.stop()
            self._events.put(None)
            raise ZooKeeperError(f"cannot connect to ZooKeeper {self.hosts}: {e}") from e
        self._session_id = self.kazoo.client_id[0] if self.kazoo.client_id else None

    def stop(self) -> None:
        """Close the session (ephemeral znodes and locks go away) and stop the dispatcher."""
        try:
            self.kazoo.stop()
            self.kazoo.close()
        finally:
            self._events.put(None)
            if self._dispatcher is not None:
                self._dispatcher.join(5)

    # -- state -------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        """True while the connection is usable."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until connected; returns False on timeout."""
        return self._connected.wait(timeout)

    @property
    def session_id(self) -> int | None:
        """The current session id (changes after an expiry)."""
        return self._session_id

    def add_state_listener(self, listener: StateListener) -> None:
        """Call `listener(ConnectionState)` on every state change (dispatch thread)."""
        self._state_listeners.append(listener)

    def remove_state_listener(self, listener: StateListener) -> None:
        """Undo add_state_listener."""
        if listener in self._state_listeners:
            self._state_listeners.remove(listener)

    def add_session_listener(self, listener: SessionListener) -> None:
        """Call `listener()` after a new session replaced an expired one (re-register here)."""
        self._session_listeners.append(listener)

    def remove_session_listener(self, listener: SessionListener) -> None:
        """Undo add_session_listener."""
        if listener in self._session_listeners:
            self._session_listeners.remove(listener)

    def _on_state(self, state: str) -> bool:
        # Runs in kazoo's connection thread: no ZooKeeper calls here, only bookkeeping.
        new_session = False
        if state == KazooState.CONNECTED:
            client_id = self.kazoo.client_id
            sid = client_id[0] if client_id else None
            if self._session_id is not None and sid != self._session_id:
                new_session = True
                self.session_generation += 1
            self._session_id = sid
            self._connected.set()
            self.suspended.clear()
            self._events.put((ConnectionState.CONNECTED, new_session))
        elif state == KazooState.SUSPENDED:
            self._connected.clear()
            self.suspended.set()
            self._events.put((ConnectionState.SUSPENDED, False))
        elif state == KazooState.LOST:
            self._connected.clear()
            self.suspended.set()
            self._events.put((ConnectionState.LOST, False))
        return False

    def _dispatch(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            state, new_session = item
            log.info("ZooKeeper connection %s%s", state.value,
                     " (new session)" if new_session else "")
            for listener in list(self._state_listeners):
                try:
                    listener(state)
                except Exception:
                    log.exception("ZooKeeper state listener failed")
            if new_session:
                for session_listener in list(self._session_listeners):
                    try:
                        session_listener()
                    except Exception:
                        log.exception("ZooKeeper session listener failed")

    # -- bounded calls -----------------------------------------------------------------------
    def call(
        self,
        what: str,
        method: Callable[..., Any],
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run a kazoo `*_async` method and wait at most `timeout` (default: operation timeout).

        `what` names the object in errors. Raises RecordNotFound when the znode is missing,
        ZooKeeperError on timeout / connection loss; NodeExistsError, BadVersionError and
        NotEmptyError pass through for the caller to handle.
        """
        limit = self.operation_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        if not self._connected.is_set() and not self._connected.wait(limit):
            raise ZooKeeperError(f"{what}: not connected to ZooKeeper")
        try:
            result = method(*args, **kwargs)
            return result.get(timeout=max(0.0, deadline - time.monotonic()))
        except NoNodeError as e:
            raise RecordNotFound(f"{what}: znode does not exist") from e
        except PASS_THROUGH:
            raise
        except KazooTimeoutError as e:
            raise ZooKeeperError(f"{what}: no answer from ZooKeeper within {limit}s") from e
        except KazooException as e:
            raise ZooKeeperError(f"{what}: {type(e).__name__} {e}".rstrip()) from e

    # Convenience wrappers used by the stores.
    def get(self, path: str, what: str | None = None, watch: Any = None) -> tuple[bytes, Any]:
        """(data, stat) of `path`."""
        return self.call(what or path, self.kazoo.get_async, path, watch=watch)

    def exists(self, path: str, what: str | None = None) -> Any:
        """ZnodeStat or None."""
        return self.call(what or path, self.kazoo.exists_async, path)

    def get_children(self, path: str, what: str | None = None) -> list[str]:
        """Child names; [] when `path` does not exist."""
        try:
            return list(self.call(what or path, self.kazoo.get_children_async, path))
        except RecordNotFound:
            return []

    def create(
        self,
        path: str,
        value: bytes = b"",
        *,
        ephemeral: bool = False,
        sequence: bool = False,
        makepath: bool = True,
        what: str | None = None,
    ) -> str:
        """Create `path` and return the created path (with the sequence suffix)."""
        return self.call(
            what or path,
            self.kazoo.create_async,
            path,
            value,
            ephemeral=ephemeral,
            sequence=sequence,
            makepath=makepath,
        )

    def set(self, path: str, value: bytes, version: int = -1, what: str | None = None) -> Any:
        """Write `value`; returns the new ZnodeStat. BadVersionError passes through."""
        return self.call(what or path, self.kazoo.set_async, path, value, version)

    def ensure_path(self, path: str) -> None:
        """Create `path` and its parents if missing."""
        self.call(path, self.kazoo.ensure_path_async, path)

    def delete(self, path: str, recursive: bool = False, what: str | None = None) -> None:
        """Delete `path` (children first when `recursive`); a missing znode is not an error."""
        if recursive:
            for child in self.get_children(path, what):
                self.delete(f"{path}/{child}", recursive=True, what=what)
        try:
            self.call(what or path, self.kazoo.delete_async, path)
        except RecordNotFound:
            pass
        except NotEmptyError:
            if not recursive:
                raise
            # A child (e.g. a new lock contender) appeared meanwhile: go again.
            self.delete(path, recursive=True, what=what)

"""Leader election (kazoo `Election` at `/nodepool/elections/stats`) with a non-blocking check.

A background thread contends for leadership; `is_leader` tells a worker, without blocking,
whether it should report the global stats now. Leadership ends on session expiry (the
election znode is ephemeral) and the thread contends again on the new session.
"""

from __future__ import annotations

import logging
import threading

from kazoo.exceptions import CancelledError, KazooException
from kazoo.recipe.election import Election

from nodepool_ng.zk import paths
from nodepool_ng.zk.client import ConnectionState, ZooKeeperClient

log = logging.getLogger("nodepool_ng.zk.election")


class LeaderElection:
    """Contend for leadership at `path` in the background; check `is_leader` any time."""

    def __init__(
        self,
        client: ZooKeeperClient,
        identifier: str,
        path: str = paths.STATS_ELECTION,
    ) -> None:
        self.client = client
        self.path = path
        self.identifier = identifier
        self._election = Election(client.kazoo, path, identifier)
        self._leader = threading.Event()
        self._lost = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        client.add_state_listener(self._on_state)

    @property
    def is_leader(self) -> bool:
        """True while this process leads and is connected (never blocks)."""
        return self._leader.is_set() and self.client.is_connected

    def wait_leader(self, timeout: float | None = None) -> bool:
        """Wait until this process leads; False on timeout."""
        return self._leader.wait(timeout)

    def start(self) -> None:
        """Start contending in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name=f"election {self.path}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Give up leadership / stop contending."""
        self._stopped.set()
        self._lost.set()
        try:
            self._election.cancel()
        except KazooException:
            pass
        if self._thread is not None:
            self._thread.join(5)
        self.client.remove_state_listener(self._on_state)

    def _on_state(self, state: ConnectionState) -> None:
        if state == ConnectionState.LOST:
            self._leader.clear()
            self._lost.set()

    def _lead(self) -> None:
        self._lost.clear()
        self._leader.set()
        log.info("became leader of %s", self.path)
        try:
            self._lost.wait()
        finally:
            self._leader.clear()

    def _run(self) -> None:
        while not self._stopped.is_set():
            if not self.client.wait_connected(1.0):
                continue
            try:
                self._election.run(self._lead)
            except CancelledError:
                pass
            except KazooException as e:
                log.warning("election %s: %s", self.path, e)
            if not self._stopped.is_set():
                # Fresh recipe object: the old one may hold stale lock state after expiry.
                self._election = Election(self.client.kazoo, self.path, self.identifier)
                self._stopped.wait(0.2)

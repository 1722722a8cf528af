"""The skeleton every cloud driver's create and delete state machines share.

A machine keeps at most one executor call (`Future`) in flight and a named `state`; each
`advance()` looks at that call and at the shared, cached server list, never blocks, and
returns the Instance once complete (create) or None. A driver subclasses
`CreateStateMachine` / `DeleteStateMachine`, submits its first call in `_start()` and maps
each of its own states to a step in `_steps()`.

Timeouts are enforced here, once (the launcher's runner does not repeat them):

- create: past `launch_timeout` from the first call, LaunchTimeout. A create call answered
  by then is read first, so the error carries the id the cloud assigned and the core can
  delete the server at once (not wait for the leak cleanup).
- delete: past `delete_timeout`, TemporaryCloudError; the runner retries with backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Generic, Protocol, TypeVar

from nodepool_ng.drivers.base import Instance, LaunchSpec
from nodepool_ng.errors import LaunchError, LaunchTimeout, TemporaryCloudError

Log = logging.LoggerAdapter[logging.Logger] | logging.Logger
CloudT = TypeVar("CloudT")
Step = Callable[[float], "Instance | None"]


class ServerList(Protocol):
    """The part of `cache.LazyListCache` a machine reads: a snapshot newer than a moment,
    and the last listing's error (None after a good one)."""

    last_error: BaseException | None

    def peek(self, newer_than: float | None = None) -> Any: ...


class _Machine(Generic[CloudT]):
    START = "start"
    COMPLETE = "complete"

    def __init__(self, cloud: CloudT, log: Log, timeout: float) -> None:
        self.cloud = cloud  # the driver's side the machine calls (a small protocol)
        self.log = log
        self.timeout = timeout
        self.state = self.START
        self.complete = False
        self._future: Future[Any] | None = None
        self._deadline = 0.0
        self._since = 0.0  # server-list snapshots must be newer than this

    def _take(self) -> Any:
        """The finished call's result (None while it runs); its error propagates."""
        assert self._future is not None
        if not self._future.done():
            return None
        future, self._future = self._future, None
        return future.result()

    @property
    def _waiting(self) -> bool:
        return self._future is not None and not self._future.done()

    def _steps(self) -> Mapping[str, Step]:
        raise NotImplementedError

    def _step(self, now: float) -> Instance | None:
        step = self._steps().get(self.state)
        if step is None:
            raise AssertionError(f"unknown state {self.state}")
        return step(now)


class CreateStateMachine(_Machine[CloudT]):
    """START -> SUBMITTED (the create call) -> the driver's states -> COMPLETE."""

    SUBMITTED = "creating (API call)"
    noun = "server"

    def __init__(self, cloud: CloudT, spec: LaunchSpec, log: Log,
                 launch_timeout: float) -> None:
        super().__init__(cloud, log, launch_timeout)
        self.spec = spec
        self.launch_timeout = launch_timeout
        self.external_id: str | None = None
        self.instance: Instance | None = None
        self._seen = False

    @property
    def _what(self) -> str:
        return f"{self.noun} {self.spec.hostname} ({self.external_id or 'no id yet'})"

    def advance(self) -> Instance | None:
        if self.complete:
            return self.instance
        now = time.monotonic()
        if self.state == self.START:
            self._deadline = now + self.launch_timeout
            self._future = self._start()
            self.state = self.SUBMITTED
            return None
        answered = self.state == self.SUBMITTED and not self._waiting
        if answered:
            self._submitted()  # an answered create call: keep its id, even when late
        if now > self._deadline:
            raise LaunchTimeout(f"{self._what} not ready after {self.launch_timeout:g}s "
                                f"(state: {self.state})")
        if answered or self.state == self.SUBMITTED:
            return None  # one step per advance(): the next looks at the server list
        return self._step(now)

    def _start(self) -> Future[Any]:
        """Submit the create call; its answer goes to `_submitted`."""
        raise NotImplementedError

    def _submitted(self) -> None:
        """Read the finished create call: `_created(id)`, or raise its error."""
        raise NotImplementedError

    def _created(self, external_id: str, state: str) -> None:
        self.external_id = external_id
        self.log.debug("created %s", self._what)
        self._since = time.monotonic()
        self.state = state

    def _listed(self, servers: ServerList) -> tuple[bool, Any]:
        """(fresh, the server in a list fetched since the create call answered). Clouds are
        eventually consistent: a new server may be missing for a moment; once seen,
        missing means gone (LaunchError)."""
        snap = servers.peek(newer_than=self._since)
        if snap is None:
            return False, None
        raw = snap.value.get(self.external_id or "")
        if raw is None:
            if self._seen:
                raise LaunchError(f"{self._what} disappeared while launching")
            return False, None
        self._seen = True
        return True, raw

    def _finish(self, instance: Instance) -> Instance:
        self.instance = instance
        self.state = self.COMPLETE
        self.complete = True
        return instance


class DeleteStateMachine(_Machine[CloudT]):
    """START -> the driver's states -> COMPLETE; `_start()` may submit a call or not."""

    noun = "server"

    def __init__(self, cloud: CloudT, external_id: str, log: Log,
                 delete_timeout: float) -> None:
        super().__init__(cloud, log, delete_timeout)
        self.external_id: str | None = external_id
        self.delete_timeout = delete_timeout

    def advance(self) -> Instance | None:
        if self.complete:
            return None
        now = time.monotonic()
        if self.state == self.START:
            self._deadline = now + self.delete_timeout
            self._since = now
            self._start()
        if now > self._deadline:
            raise TemporaryCloudError(f"{self.noun} {self.external_id} not deleted after "
                                      f"{self.delete_timeout:g}s (state: {self.state})")
        return self._step(now)

    def _start(self) -> None:
        """Move out of START (submitting the first call, if any)."""
        raise NotImplementedError

    def _done(self, now: float = 0.0) -> Instance | None:
        self.log.debug("%s %s is gone", self.noun, self.external_id)
        self.state = self.COMPLETE
        self.complete = True
        return None

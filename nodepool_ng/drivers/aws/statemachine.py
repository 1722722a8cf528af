"""AWS EC2 create and delete state machines.

Every slow call runs in the adapter's executor; `advance()` only looks at futures and at the
shared, TTL-cached instance list (one paginated DescribeInstances for all machines).

Create: resolve the image and instance type, RunInstances (one executor call) ->
`external_id` set from its answer -> wait in the instance list for `running` -> Instance.
An instance seen `shutting-down` / `terminated` / `stopping` / `stopped` while launching (a
spot interruption, or the cloud gave up on it) is a LaunchError.

Delete: TerminateInstances -> wait until the list shows the instance `terminated` (or no
longer lists it) -> delete volumes tagged with the instance's node id that are left
`available` (DeleteOnTermination normally removed them already) -> complete.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from nodepool_ng.drivers.aws.quota import classify_create_error, error_code
from nodepool_ng.drivers.base import Instance, LaunchSpec
from nodepool_ng.drivers.executor import Priority
from nodepool_ng.errors import LaunchError, LaunchTimeout, TemporaryCloudError

if TYPE_CHECKING:
    from nodepool_ng.drivers.aws.adapter import AwsAdapter

Log = logging.LoggerAdapter[logging.Logger] | logging.Logger

GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


class AwsCreateStateMachine:
    START = "start"
    SUBMITTED = "instance creating (API call)"
    BUILDING = "instance pending"
    COMPLETE = "complete"

    def __init__(self, adapter: AwsAdapter, spec: LaunchSpec, log: Log,
                 launch_timeout: float) -> None:
        self.adapter = adapter
        self.spec = spec
        self.log = log
        self.launch_timeout = launch_timeout
        self.state = self.START
        self.complete = False
        self.external_id: str | None = None
        self.instance: Instance | None = None
        self._future: Future[dict[str, Any]] | None = None
        self._deadline = 0.0
        self._since = 0.0
        self._seen = False

    @property
    def _what(self) -> str:
        return f"instance {self.spec.hostname} ({self.external_id or 'no id yet'})"

    def advance(self) -> Instance | None:
        if self.complete:
            return self.instance
        now = time.monotonic()
        if self.state == self.START:
            self._deadline = now + self.launch_timeout
            self._future = self.adapter.submit(self.adapter.create_instance, self.spec)
            self.state = self.SUBMITTED
            return None
        if self.state == self.SUBMITTED and self._future is not None and self._future.done():
            self._submitted()  # an answered create call: keep its id, even when late
        if now > self._deadline:
            raise LaunchTimeout(
                f"{self._what} not running after {self.launch_timeout:g}s (state: {self.state})")
        if self.state == self.SUBMITTED:
            return self._submitted()
        if self.state == self.BUILDING:
            return self._building()
        raise AssertionError(f"unknown state {self.state}")

    def _submitted(self) -> Instance | None:
        assert self._future is not None
        if not self._future.done():
            return None
        future, self._future = self._future, None
        try:
            raw = future.result()
        except Exception as e:
            raise classify_create_error(e, self._what) from e
        self.external_id = str(raw["InstanceId"])
        self.log.debug("created %s", self._what)
        self._since = time.monotonic()
        self.state = self.BUILDING
        return None

    def _building(self) -> Instance | None:
        snap = self.adapter.instances.peek(newer_than=self._since)
        if snap is None:
            return None
        raw = snap.value.get(self.external_id or "")
        if raw is None:
            # EC2 is eventually consistent: a new instance may be missing from a listing
            # for a moment. Once seen, missing means gone.
            if self._seen:
                raise LaunchError(f"{self._what} disappeared while launching")
            return None
        self._seen = True
        state = (raw.get("State") or {}).get("Name", "")
        if state in GONE_STATES:
            reason = (raw.get("StateReason") or {}).get("Message") or state
            raise LaunchError(f"{self._what} went {state} while launching: {reason}")
        if state != "running":
            return None
        self.log.debug("%s is running", self._what)
        self.instance = self.adapter.instance_from_raw(raw, pool_name=self.spec.pool_name)
        self.state = self.COMPLETE
        self.complete = True
        return self.instance


class AwsDeleteStateMachine:
    START = "start"
    TERMINATING = "terminating (API call)"
    WAIT_GONE = "waiting for terminated"
    VOLUMES = "deleting leftover volumes (API calls)"
    COMPLETE = "complete"

    def __init__(self, adapter: AwsAdapter, external_id: str, log: Log,
                 delete_timeout: float) -> None:
        self.adapter = adapter
        self.external_id: str | None = external_id
        self.log = log
        self.delete_timeout = delete_timeout
        self.state = self.START
        self.complete = False
        self._future: Future[Any] | None = None
        self._deadline = 0.0
        self._since = 0.0
        self._node_id: str | None = None

    def advance(self) -> Instance | None:
        if self.complete:
            return None
        now = time.monotonic()
        if self.state == self.START:
            self._deadline = now + self.delete_timeout
            self._future = self.adapter.submit(self.adapter.terminate_instance,
                                               self.external_id, priority=Priority.CLEANUP)
            self.state = self.TERMINATING
            return None
        if now > self._deadline:
            raise TemporaryCloudError(
                f"instance {self.external_id} not deleted after {self.delete_timeout:g}s "
                f"(state: {self.state})")
        if self.state == self.TERMINATING:
            assert self._future is not None
            if not self._future.done():
                return None
            future, self._future = self._future, None
            try:
                existed, self._node_id = future.result()
            except Exception as e:
                raise TemporaryCloudError(
                    f"terminating instance {self.external_id}: {e}") from e
            if not existed:
                return self._volumes()
            self._since = time.monotonic()
            self.state = self.WAIT_GONE
            return None
        if self.state == self.WAIT_GONE:
            snap = self.adapter.instances.peek(newer_than=self._since)
            if snap is None:
                return None
            raw = snap.value.get(self.external_id or "")
            if raw is None or (raw.get("State") or {}).get("Name") == "terminated":
                return self._volumes()
            return None
        if self.state == self.VOLUMES:
            assert self._future is not None
            if not self._future.done():
                return None
            future, self._future = self._future, None
            try:
                future.result()
            except Exception as e:
                if error_code(e).endswith("NotFound"):
                    return self._done()
                raise TemporaryCloudError(
                    f"instance {self.external_id}: deleting leftover volumes: {e}") from e
            return self._done()
        raise AssertionError(f"unknown state {self.state}")

    def _volumes(self) -> Instance | None:
        if not self._node_id:
            return self._done()
        self._future = self.adapter.submit(self.adapter.delete_leftover_volumes,
                                           self._node_id, priority=Priority.CLEANUP)
        self.state = self.VOLUMES
        return None

    def _done(self) -> Instance | None:
        self.log.debug("instance %s is terminated", self.external_id)
        self.state = self.COMPLETE
        self.complete = True
        return None

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

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from nodepool_ng.drivers.aws.quota import classify_create_error, error_code
from nodepool_ng.drivers.base import Instance, LaunchSpec
from nodepool_ng.drivers.executor import Priority
from nodepool_ng.drivers.statemachine import (
    CreateStateMachine,
    DeleteStateMachine,
    ServerList,
    Step,
)
from nodepool_ng.errors import LaunchError, TemporaryCloudError

R = TypeVar("R")

GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


class AwsCloud(Protocol):
    """What the machines use of the adapter (drivers/aws/adapter.py)."""

    @property
    def instances(self) -> ServerList: ...
    def submit(self, fn: Callable[..., R], *args: Any,
               priority: Priority = Priority.START) -> Future[R]: ...
    def create_instance(self, spec: LaunchSpec) -> dict[str, Any]: ...
    def terminate_instance(self, external_id: str) -> tuple[bool, str | None]: ...
    def delete_leftover_volumes(self, node_id: str) -> list[str]: ...
    def instance_from_raw(self, raw: Mapping[str, Any],
                          pool_name: str | None = None) -> Instance: ...


def interruption(raw: Mapping[str, Any]) -> str | None:
    """Why an instance that was launching is going away (a spot interruption, or EC2 gave
    up on it: `StateReason`), or None while it is not."""
    state = (raw.get("State") or {}).get("Name", "")
    if state not in GONE_STATES:
        return None
    reason = (raw.get("StateReason") or {}).get("Message") or state
    return f"went {state}: {reason}"


class AwsCreateStateMachine(CreateStateMachine[AwsCloud]):
    SUBMITTED = "instance creating (API call)"
    BUILDING = "instance pending"
    noun = "instance"

    def _steps(self) -> Mapping[str, Step]:
        return {self.BUILDING: self._building}

    def _start(self) -> Future[Any]:
        return self.cloud.submit(self.cloud.create_instance, self.spec)

    def _submitted(self) -> None:
        try:
            raw = self._take()
        except Exception as e:
            raise classify_create_error(e, self._what) from e
        self._created(str(raw["InstanceId"]), self.BUILDING)

    def _building(self, now: float) -> Instance | None:
        fresh, raw = self._listed(self.cloud.instances)
        if not fresh:
            return None
        gone = interruption(raw)
        if gone is not None:
            raise LaunchError(f"{self._what} {gone} while launching")
        if (raw.get("State") or {}).get("Name", "") != "running":
            return None
        self.log.debug("%s is running", self._what)
        return self._finish(self.cloud.instance_from_raw(raw, pool_name=self.spec.pool_name))


class AwsDeleteStateMachine(DeleteStateMachine[AwsCloud]):
    TERMINATING = "terminating (API call)"
    WAIT_GONE = "waiting for terminated"
    VOLUMES = "deleting leftover volumes (API calls)"
    noun = "instance"
    _node_id: str | None = None  # the instance's node (tag), for its leftover volumes

    def _steps(self) -> Mapping[str, Step]:
        return {self.TERMINATING: self._terminating, self.WAIT_GONE: self._wait_gone,
                self.VOLUMES: self._deleting_volumes}

    def _start(self) -> None:
        self._future = self.cloud.submit(self.cloud.terminate_instance, self.external_id,
                                         priority=Priority.CLEANUP)
        self.state = self.TERMINATING

    def _terminating(self, now: float) -> Instance | None:
        if self._waiting:
            return None
        try:
            existed, self._node_id = self._take()
        except Exception as e:
            raise TemporaryCloudError(f"terminating instance {self.external_id}: {e}") from e
        if not existed:
            return self._volumes()
        self._since = time.monotonic()
        self.state = self.WAIT_GONE
        return None

    def _wait_gone(self, now: float) -> Instance | None:
        snap = self.cloud.instances.peek(newer_than=self._since)
        if snap is None:
            return None
        raw = snap.value.get(self.external_id or "")
        if raw is None or (raw.get("State") or {}).get("Name") == "terminated":
            return self._volumes()
        return None

    def _volumes(self) -> Instance | None:
        if not self._node_id:
            return self._done()
        self._future = self.cloud.submit(self.cloud.delete_leftover_volumes, self._node_id,
                                         priority=Priority.CLEANUP)
        self.state = self.VOLUMES
        return None

    def _deleting_volumes(self, now: float) -> Instance | None:
        if self._waiting:
            return None
        try:
            self._take()
        except Exception as e:
            if not error_code(e).endswith("NotFound"):
                raise TemporaryCloudError(
                    f"instance {self.external_id}: deleting leftover volumes: {e}") from e
        return self._done()

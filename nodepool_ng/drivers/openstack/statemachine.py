"""OpenStack create and delete state machines.

Every slow call runs in the adapter's executor; `advance()` only looks at futures and at the
shared, TTL-cached server list, so one thread can drive any number of machines.

Create: POST the server (compute proxy) -> wait for ACTIVE in the server list -> expand the
list's JSON of the server with openstacksdk's `add_server_interfaces` -> if
auto-floating-ip, let openstacksdk decide whether the server needs a floating IP and add one
(`add_ips_to_server(auto_ip=True)`) -> re-read the server until the floating IP shows ->
Instance with openstacksdk's `public_v4` / `private_v4` / `public_v6` / `interface_ip`.

Delete: wait for a server list fetched after the deletion was asked for -> expand the
server's JSON from it (openstacksdk `add_server_interfaces`, so floating IPs that only
Neutron knows about are found too) -> `_delete_server(delete_ips=True)` -> wait until the
server is gone from the list. A server missing from that list is already gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from openstack import exceptions as os_exc

from nodepool_ng.drivers.base import Instance, LaunchSpec
from nodepool_ng.drivers.executor import Priority
from nodepool_ng.drivers.openstack.quota import classify_create_error, classify_fault
from nodepool_ng.drivers.statemachine import (
    CreateStateMachine,
    DeleteStateMachine,
    ServerList,
    Step,
)
from nodepool_ng.errors import LaunchError, TemporaryCloudError

R = TypeVar("R")


class OpenStackCloud(Protocol):
    """What the machines use of the adapter (drivers/openstack/adapter.py)."""

    poll_interval: float

    @property
    def servers(self) -> ServerList: ...
    def submit(self, fn: Callable[..., R], *args: Any,
               priority: Priority = Priority.START) -> Future[R]: ...
    def create_server(self, spec: LaunchSpec) -> Any: ...
    def get_raw_server(self, external_id: str) -> Any: ...
    def get_server(self, external_id: str, listed: Mapping[str, Any] | None = None) -> Any: ...
    def add_floating_ip(self, external_id: str,
                        listed: Mapping[str, Any] | None = None) -> tuple[Any, bool]: ...
    def delete_server(self, external_id: str,
                      listed: Mapping[str, Any] | None = None) -> bool: ...
    def instance_from_server(self, server: Any, expanded: bool = True) -> Instance: ...


def has_floating_address(server: Any) -> bool:
    """True once an (expanded) server shows a floating IP openstacksdk picked up."""
    floating = any(addr.get("OS-EXT-IPS:type") == "floating"
                   for addrs in (server["addresses"] or {}).values() for addr in addrs)
    return floating and bool(server["public_v4"] or server["interface_ip"])


class OpenStackCreateStateMachine(CreateStateMachine[OpenStackCloud]):
    SUBMITTED = "server creating (API call)"
    BUILDING = "server building"
    FAULT = "reading fault"
    FLOATING_IP = "adding floating ip"
    FIP_WAIT = "waiting for floating ip"
    _next_check = 0.0  # FIP_WAIT: when to read the server again
    _wait_for = False  # a floating IP was added and must show on the server

    def _steps(self) -> Mapping[str, Step]:
        return {self.BUILDING: self._building, self.FAULT: self._fault,
                self.FLOATING_IP: self._floating_ip, self.FIP_WAIT: self._fip_wait}

    def _start(self) -> Future[Any]:
        return self.cloud.submit(self.cloud.create_server, self.spec)

    def _submitted(self) -> None:
        try:
            server = self._take()
        except os_exc.SDKException as e:
            extra = getattr(e, "extra_data", None) or {}
            if extra.get("server") is not None:  # created, but already in ERROR
                self.external_id = str(extra["server"]["id"])
                raise classify_fault(extra["server"].get("fault"), self._what) from e
            raise classify_create_error(e, self._what) from e
        except Exception as e:
            raise classify_create_error(e, self._what) from e
        self._created(str(server["id"]), self.BUILDING)

    def _building(self, now: float) -> Instance | None:
        fresh, server = self._listed(self.cloud.servers)
        if not fresh:
            return None
        status = (server["status"] or "").upper()
        if status == "ERROR":
            if server["fault"]:
                raise classify_fault(server["fault"], self._what)
            self._future = self.cloud.submit(self.cloud.get_raw_server, self.external_id,
                                             priority=Priority.FINISH)
            self.state = self.FAULT
            return None
        if status != "ACTIVE":
            return None
        self.log.debug("%s is ACTIVE", self._what)
        # The list's JSON of the ACTIVE server is fresh: openstacksdk expands it (no GET).
        if self.spec.auto_floating_ip:
            self._future = self.cloud.submit(self.cloud.add_floating_ip, self.external_id,
                                             server, priority=Priority.FINISH)
            self.state = self.FLOATING_IP
        else:
            self._future = self.cloud.submit(self.cloud.get_server, self.external_id,
                                             server, priority=Priority.FINISH)
            self.state = self.FIP_WAIT
        return None

    def _fault(self, now: float) -> Instance | None:
        if self._waiting:
            return None
        try:
            server = self._take()
        except Exception as e:
            raise LaunchError(f"{self._what}: went to ERROR; reading its fault failed: {e}") \
                from e
        raise classify_fault(server["fault"] if server else None, self._what)

    def _floating_ip(self, now: float) -> Instance | None:
        if self._waiting:
            return None
        try:
            server, added = self._take()
        except Exception as e:
            raise classify_create_error(e, f"{self._what}: adding a floating IP") from e
        if not added:
            return self._finish_or_wait(server)
        # add_ips_to_server's answer lacks the derived fields (public_v4, interface_ip):
        # re-read the server until openstacksdk shows the floating IP on it
        self.log.debug("added a floating IP to %s", self._what)
        self._wait_for = True
        self.state = self.FIP_WAIT
        self._next_check = now
        return None

    def _fip_wait(self, now: float) -> Instance | None:
        if self._future is None:
            if now < self._next_check:
                return None
            self._future = self.cloud.submit(self.cloud.get_server, self.external_id,
                                             priority=Priority.FINISH)
            return None
        if self._waiting:
            return None
        try:
            server = self._take()
        except Exception as e:
            raise LaunchError(f"{self._what}: reading the server failed: {e}") from e
        if server is None:
            raise LaunchError(f"{self._what} disappeared while waiting for its addresses")
        return self._finish_or_wait(server)

    def _finish_or_wait(self, server: Any) -> Instance | None:
        if self._wait_for and not has_floating_address(server):
            self.state = self.FIP_WAIT
            self._next_check = time.monotonic() + self.cloud.poll_interval
            return None
        return self._finish(self.cloud.instance_from_server(server))


class OpenStackDeleteStateMachine(DeleteStateMachine[OpenStackCloud]):
    LOOKUP = "waiting for a fresh server list"
    DELETING = "deleting server and floating ips (API calls)"
    WAIT_GONE = "waiting for server to go away"

    def _steps(self) -> Mapping[str, Step]:
        return {self.LOOKUP: self._lookup, self.DELETING: self._deleting,
                self.WAIT_GONE: self._wait_gone}

    def _start(self) -> None:
        self.state = self.LOOKUP

    def _lookup(self, now: float) -> Instance | None:
        snap = self.cloud.servers.peek(newer_than=self._since)
        if snap is None and self.cloud.servers.last_error is None:
            return None
        # Listing fails: openstacksdk GETs the server itself (listed None).
        listed = snap.value.get(self.external_id or "") if snap is not None else None
        if snap is not None and listed is None:
            return self._done()
        self._future = self.cloud.submit(self.cloud.delete_server, self.external_id,
                                         listed, priority=Priority.CLEANUP)
        self.state = self.DELETING
        return None

    def _deleting(self, now: float) -> Instance | None:
        if self._waiting:
            return None
        try:
            existed = self._take()
        except os_exc.SDKException as e:
            raise TemporaryCloudError(f"deleting server {self.external_id}: {e}") from e
        if not existed:
            return self._done()
        self._since = time.monotonic()
        self.state = self.WAIT_GONE
        return None

    def _wait_gone(self, now: float) -> Instance | None:
        snap = self.cloud.servers.peek(newer_than=self._since)
        if snap is not None and self.external_id not in snap.value:
            return self._done()
        return None

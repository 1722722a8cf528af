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

import logging
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from openstack import exceptions as os_exc

from nodepool_ng.drivers.base import Instance, LaunchSpec
from nodepool_ng.drivers.executor import Priority
from nodepool_ng.drivers.openstack.quota import classify_create_error, classify_fault
from nodepool_ng.errors import LaunchError, LaunchTimeout, TemporaryCloudError

if TYPE_CHECKING:
    from nodepool_ng.drivers.openstack.adapter import OpenStackAdapter

Log = logging.LoggerAdapter[logging.Logger] | logging.Logger


def has_floating_address(server: Any) -> bool:
    """True once an (expanded) server shows a floating IP openstacksdk picked up."""
    floating = any(addr.get("OS-EXT-IPS:type") == "floating"
                   for addrs in (server["addresses"] or {}).values() for addr in addrs)
    return floating and bool(server["public_v4"] or server["interface_ip"])


class OpenStackCreateStateMachine:
    START = "start"
    SUBMITTED = "server creating (API call)"
    BUILDING = "server building"
    FAULT = "reading fault"
    FLOATING_IP = "adding floating ip"
    FIP_WAIT = "waiting for floating ip"
    COMPLETE = "complete"

    def __init__(self, adapter: OpenStackAdapter, spec: LaunchSpec, log: Log,
                 launch_timeout: float) -> None:
        self.adapter = adapter
        self.spec = spec
        self.log = log
        self.launch_timeout = launch_timeout
        self.state = self.START
        self.complete = False
        self.external_id: str | None = None
        self.instance: Instance | None = None
        self._future: Future[Any] | None = None
        self._deadline = 0.0
        self._since = 0.0  # server-list snapshots must start after this
        self._next_check = 0.0
        self._seen = False

    @property
    def _what(self) -> str:
        return f"server {self.spec.hostname} ({self.external_id or 'no id yet'})"

    def advance(self) -> Instance | None:
        if self.complete:
            return self.instance
        now = time.monotonic()
        if self.state == self.START:
            self._deadline = now + self.launch_timeout
            self._future = self.adapter.submit(self.adapter.create_server, self.spec)
            self.state = self.SUBMITTED
            return None
        if self.state == self.SUBMITTED and self._future is not None and self._future.done():
            self._submitted()  # an answered create call: keep its id, even when late
        if now > self._deadline:
            raise LaunchTimeout(
                f"{self._what} not ready after {self.launch_timeout:g}s (state: {self.state})"
            )
        if self.state == self.SUBMITTED:
            return self._submitted()
        if self.state == self.BUILDING:
            return self._building()
        if self.state == self.FAULT:
            return self._fault()
        if self.state == self.FLOATING_IP:
            return self._floating_ip()
        if self.state == self.FIP_WAIT:
            return self._fip_wait(now)
        raise AssertionError(f"unknown state {self.state}")

    def _take(self) -> Any:
        """The finished future's result (None while running); errors propagate."""
        assert self._future is not None
        if not self._future.done():
            return None
        future, self._future = self._future, None
        return future.result()

    def _submitted(self) -> Instance | None:
        assert self._future is not None
        if not self._future.done():
            return None
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
        self.external_id = str(server["id"])
        self.log.debug("created %s", self._what)
        self._since = time.monotonic()
        self.state = self.BUILDING
        return None

    def _building(self) -> Instance | None:
        snap = self.adapter.servers.peek(newer_than=self._since)
        if snap is None:
            return None
        server = snap.value.get(self.external_id or "")
        if server is None:
            if self._seen:
                raise LaunchError(f"{self._what} disappeared while building")
            return None
        self._seen = True
        status = (server["status"] or "").upper()
        if status == "ERROR":
            if server["fault"]:
                raise classify_fault(server["fault"], self._what)
            self._future = self.adapter.submit(self.adapter.get_raw_server, self.external_id,
                                               priority=Priority.FINISH)
            self.state = self.FAULT
            return None
        if status != "ACTIVE":
            return None
        self.log.debug("%s is ACTIVE", self._what)
        # The list's JSON of the ACTIVE server is fresh: openstacksdk expands it (no GET).
        if self.spec.auto_floating_ip:
            self._future = self.adapter.submit(self.adapter.add_floating_ip, self.external_id,
                                               server, priority=Priority.FINISH)
            self.state = self.FLOATING_IP
        else:
            self._future = self.adapter.submit(self.adapter.get_server, self.external_id,
                                               server, priority=Priority.FINISH)
            self.state = self.FIP_WAIT
        return None

    def _fault(self) -> Instance | None:
        assert self._future is not None
        if not self._future.done():
            return None
        try:
            server = self._take()
        except Exception as e:
            raise LaunchError(f"{self._what}: went to ERROR; reading its fault failed: {e}") \
                from e
        raise classify_fault(server["fault"] if server else None, self._what)

    def _floating_ip(self) -> Instance | None:
        assert self._future is not None
        if not self._future.done():
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
        self._next_check = time.monotonic()
        return None

    def _fip_wait(self, now: float) -> Instance | None:
        if self._future is None:
            if now < self._next_check:
                return None
            self._future = self.adapter.submit(self.adapter.get_server, self.external_id,
                                               priority=Priority.FINISH)
            return None
        if not self._future.done():
            return None
        try:
            server = self._take()
        except Exception as e:
            raise LaunchError(f"{self._what}: reading the server failed: {e}") from e
        if server is None:
            raise LaunchError(f"{self._what} disappeared while waiting for its addresses")
        return self._finish_or_wait(server)

    _wait_for = False  # a floating IP was added and must show on the server

    def _finish_or_wait(self, server: Any) -> Instance | None:
        if self._wait_for and not has_floating_address(server):
            self.state = self.FIP_WAIT
            self._next_check = time.monotonic() + self.adapter.poll_interval
            return None
        self.instance = self.adapter.instance_from_server(server)
        self.state = self.COMPLETE
        self.complete = True
        return self.instance


class OpenStackDeleteStateMachine:
    START = "start"
    LOOKUP = "waiting for a fresh server list"
    DELETING = "deleting server and floating ips (API calls)"
    WAIT_GONE = "waiting for server to go away"
    COMPLETE = "complete"

    def __init__(self, adapter: OpenStackAdapter, external_id: str, log: Log,
                 delete_timeout: float) -> None:
        self.adapter = adapter
        self.external_id: str | None = external_id
        self.log = log
        self.delete_timeout = delete_timeout
        self.state = self.START
        self.complete = False
        self._future: Future[bool] | None = None
        self._deadline = 0.0
        self._since = 0.0

    def advance(self) -> Instance | None:
        if self.complete:
            return None
        now = time.monotonic()
        if self.state == self.START:
            self._deadline = now + self.delete_timeout
            self._since = now
            self.state = self.LOOKUP
        if self.state == self.LOOKUP:
            snap = self.adapter.servers.peek(newer_than=self._since)
            if snap is None and self.adapter.servers.last_error is None:
                if now > self._deadline:
                    raise TemporaryCloudError(
                        f"server {self.external_id}: no server list within "
                        f"{self.delete_timeout:g}s")
                return None
            # Listing fails: openstacksdk GETs the server itself (listed None).
            listed = snap.value.get(self.external_id or "") if snap is not None else None
            if snap is not None and listed is None:
                return self._done()
            self._future = self.adapter.submit(self.adapter.delete_server, self.external_id,
                                               listed, priority=Priority.CLEANUP)
            self.state = self.DELETING
            return None
        if now > self._deadline:
            raise TemporaryCloudError(
                f"server {self.external_id} not deleted after {self.delete_timeout:g}s "
                f"(state: {self.state})"
            )
        if self.state == self.DELETING:
            assert self._future is not None
            if not self._future.done():
                return None
            future, self._future = self._future, None
            try:
                existed = future.result()
            except os_exc.SDKException as e:
                raise TemporaryCloudError(f"deleting server {self.external_id}: {e}") from e
            if not existed:
                return self._done()
            self._since = time.monotonic()
            self.state = self.WAIT_GONE
            return None
        if self.state == self.WAIT_GONE:
            snap = self.adapter.servers.peek(newer_than=self._since)
            if snap is not None and self.external_id not in snap.value:
                return self._done()
            return None
        raise AssertionError(f"unknown state {self.state}")

    def _done(self) -> Instance | None:
        self.log.debug("server %s is gone", self.external_id)
        self.state = self.COMPLETE
        self.complete = True
        return None

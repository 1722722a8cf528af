"""OpenStack servers: the create, read, floating-IP and delete calls the state machines
make (in the adapter's executor), and one server list shared by every machine, refreshed at
most once per `poll_interval` (`cache.LazyListCache`). The list is kept up to date with
`GET /servers/detail?changes-since=...` (only what changed, deleted servers as DELETED) and
read in full once per `reconcile_interval` to catch anything an incremental poll missed."""

from __future__ import annotations

import email.utils
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar, cast

from openstack import exceptions as os_exc
from openstack import utils as os_utils
from openstack.cloud import meta as _meta
from openstack.compute.v2 import flavor as _flavor
from openstack.compute.v2 import server as _server
from openstack.utils import Munch

from nodepool_ng.drivers.base import (
    META_NODE_ID,
    META_POOL_NAME,
    META_PROVIDER_NAME,
    Instance,
    LaunchSpec,
)
from nodepool_ng.drivers.cache import LazyListCache
from nodepool_ng.drivers.executor import Priority, PriorityExecutor
from nodepool_ng.drivers.openstack.lookups import CloudLookups
from nodepool_ng.drivers.openstack.quota import flavor_quota
from nodepool_ng.drivers.openstack.statemachine import OpenStackCloud
from nodepool_ng.errors import TemporaryCloudError
from nodepool_ng.model.quota import Quota

R = TypeVar("R")

RECONCILE_INTERVAL = 60.0  # seconds between full server lists
# changes-since asks from the previous poll's start (in the cloud's clock) minus this much:
# covers clock estimates (the Date header has whole seconds) and changes being committed.
CHANGES_SINCE_SLACK = 5.0

STATUS_MAP = {"BUILD": "building", "ACTIVE": "ready", "ERROR": "error",
              "DELETED": "deleting", "SOFT_DELETED": "deleting"}


def server_metadata(spec: LaunchSpec) -> dict[str, str]:
    """The launcher's metadata plus the owner keys every server carries."""
    meta = dict(spec.metadata)
    meta.update({META_NODE_ID: spec.node_id, META_POOL_NAME: spec.pool_name,
                 META_PROVIDER_NAME: spec.provider_name})
    return meta


class OpenStackServers:
    """What the state machines drive (`statemachine.OpenStackCloud`)."""

    def __init__(self, conn: Any, cloud: str, region: str | None, lookups: CloudLookups,
                 executor: PriorityExecutor, poll_interval: float, name: str,
                 reconcile_interval: float = RECONCILE_INTERVAL) -> None:
        self.conn = conn
        self.cloud = cloud
        self.region = region
        self.lookups = lookups
        self.poll_interval = poll_interval
        self.reconcile_interval = reconcile_interval  # <= 0: every poll lists in full
        self.changes_since_slack = CHANGES_SINCE_SLACK
        self._poll_lock = threading.Lock()
        self._known: dict[str, dict[str, Any]] = {}  # the last poll's result (never mutated)
        # server id -> (its dict in a poll's result, the Instance made of it): a listing
        # converts only the servers whose dict changed since the previous listing.
        self._instances: dict[str, tuple[dict[str, Any], Instance]] = {}
        self._instances_lock = threading.Lock()
        self._changes_since: float | None = None  # cloud time the next incremental poll uses
        self._full_at = float("-inf")  # monotonic time of the last full list
        self.full_polls = 0
        self.incremental_polls = 0
        self._executor = executor
        self._server_mv: str | None = None  # "" once found out that there is none
        self._compute_endpoint: str | None = None
        self._auto_networks: bool | None = None  # compute microversion >= 2.37
        self.servers: LazyListCache[dict[str, Any]] = LazyListCache(
            self._fetch_servers, executor.at(Priority.POLL), poll_interval,
            name=f"{name} servers")

    def submit(self, fn: Callable[..., R], *args: Any,
               priority: Priority = Priority.START) -> Future[R]:
        return self._executor.submit(fn, *args, priority=priority)

    def list_instances(self) -> list[Instance]:
        """The cloud's servers as Instances (without addresses); cost proportional to the
        servers that changed since the last listing, not to the cloud's size."""
        servers = self.servers.get()
        with self._instances_lock:
            made = self._instances
            fresh: dict[str, tuple[dict[str, Any], Instance]] = {}
            for server_id, server in servers.items():
                hit = made.get(server_id)
                # (a poll re-sends servers that changed just before it: equal, not the same)
                if hit is None or (hit[0] is not server and hit[0] != server):
                    hit = (server, self.instance_from_server(server, expanded=False))
                fresh[server_id] = hit
            self._instances = fresh
        return [instance for _, instance in fresh.values()]

    def _fetch_servers(self) -> dict[str, dict[str, Any]]:
        """Every server, as light dicts, through openstacksdk's authenticated compute session.

        The list is polled for all building servers at once, so it is the launcher's hottest
        cloud call: building openstacksdk `Server` resources costs ~1 ms each, so we read the
        JSON directly and keep only the keys the state machines and quota need. Servers that
        finish building are re-read once through openstacksdk for their addresses.

        Polls ask only for what changed since the previous poll began (Nova's
        `changes-since`, in the cloud's clock as estimated from its Date header, minus
        `changes_since_slack`) and merge it into the previous result: a server listed
        DELETED is dropped. Every `reconcile_interval` (and first) the whole list replaces
        it, which repairs anything missed (e.g. a deletion whose record the cloud archived).
        """
        with self._poll_lock:  # a probe's refresh may overlap the cache's own
            started = time.time()
            full = self._changes_since is None or \
                time.monotonic() - self._full_at >= self.reconcile_interval
            if full:
                full_at = time.monotonic()
                listed, skew = self._list_servers(None)
                servers = listed
                self._full_at = full_at
                self.full_polls += 1
            else:
                assert self._changes_since is not None
                listed, skew = self._list_servers(self._changes_since)
                servers = dict(self._known)
                for server_id, server in listed.items():
                    if str(server["status"]).upper() == "DELETED":
                        servers.pop(server_id, None)
                    else:
                        servers[server_id] = server
                self.incremental_polls += 1
            self._known = servers
            self._changes_since = started + skew - self.changes_since_slack
            return servers

    def _list_servers(self, changes_since: float | None
                      ) -> tuple[dict[str, dict[str, Any]], float]:
        """(servers by id, the cloud's clock minus ours as its first answer's Date says)."""
        servers: dict[str, dict[str, Any]] = {}
        url: str | None = self._compute_url("/servers/detail")
        if changes_since is not None:
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(changes_since)))
            url = f"{url}?{urllib.parse.urlencode({'changes-since': since})}"
        skew: float | None = None
        while url:
            response = self.conn.compute.get(url)
            if not response.ok:
                raise TemporaryCloudError(
                    f"listing servers: HTTP {response.status_code} {response.text[:200]}")
            if skew is None:
                skew = _clock_skew(response, time.time())
            body = response.json()
            for raw in body.get("servers") or []:
                server = light_server(raw)
                servers[server["id"]] = server
            url = next((link.get("href") for link in body.get("servers_links") or []
                        if link.get("rel") == "next"), None)
        return servers, skew or 0.0

    def create_server(self, spec: LaunchSpec) -> Any:
        """POST the server; returns its JSON (at least its id).

        Image boots send the request body openstacksdk's cloud layer would send, through the
        compute proxy's own HTTP methods (its session: auth, endpoint, microversion, errors
        mapped by `raise_from_response`). Not `create_server(wait=False)`, which re-GETs and
        expands the new server, nor the proxy's `create_server`, which builds `Server`
        resources for the request and the answer: in a burst that resource layer was a
        third of the launcher's CPU, and the shared server list makes both redundant.
        Boot-from-volume keeps the cloud layer (block device mapping).
        """
        if spec.boot_from_volume:
            return self._create_server_cloud_layer(spec)
        flavor = self.lookups.find_flavor(spec)
        meta = server_metadata(spec)
        body: dict[str, Any] = {
            "name": spec.hostname, "imageRef": self.lookups.find_image(spec.image).id,
            "flavorRef": flavor.id, "metadata": meta, "min_count": 1, "max_count": 1,
        }
        networks = [{"uuid": self.lookups.find_network(n)["id"]} for n in spec.networks]
        if not networks:
            default = self.conn.get_default_network()  # cached by openstacksdk
            if default:
                networks = [{"uuid": default["id"]}]
        if networks:
            body["networks"] = networks
        elif self._supports_auto_networks():
            body["networks"] = "auto"
        if spec.security_groups:
            body["security_groups"] = [{"name": sg} for sg in spec.security_groups]
        if spec.userdata:
            body["user_data"] = self.conn._encode_server_userdata(spec.userdata)
        if spec.key_name:
            body["key_name"] = spec.key_name
        if spec.config_drive:
            body["config_drive"] = spec.config_drive
        if spec.availability_zone is not None:
            body["availability_zone"] = spec.availability_zone
        response = self.conn.compute.post(self._compute_url("/servers"), json={"server": body},
                                          microversion=self._server_microversion())
        os_exc.raise_from_response(response)
        return response.json()["server"]

    def _compute_url(self, path: str) -> str:
        """The absolute compute URL of `path`, for the hot calls (list, create, delete).

        keystoneauth resolves a relative URL against the service catalog on every call
        (catalog search and endpoint normalisation, ~5% of the launcher's CPU in a burst);
        the compute proxy's endpoint is resolved once instead. Auth, microversion headers
        and error handling stay the proxy's."""
        if self._compute_endpoint is None:
            self._compute_endpoint = str(self.conn.compute.get_endpoint()).rstrip("/")
        return self._compute_endpoint + path

    def _server_microversion(self) -> str | None:
        """The microversion openstacksdk's `Server` resource negotiates (found out once)."""
        if self._server_mv is None:
            self._server_mv = _server.Server._get_microversion(self.conn.compute) or ""
        return self._server_mv or None

    def _supports_auto_networks(self) -> bool:
        if self._auto_networks is None:
            self._auto_networks = bool(os_utils.supports_microversion(self.conn.compute, "2.37"))
        return self._auto_networks

    def _create_server_cloud_layer(self, spec: LaunchSpec) -> Any:
        flavor = self.lookups.find_flavor(spec)
        meta = server_metadata(spec)
        kwargs: dict[str, Any] = dict(
            image=self.lookups.find_image(spec.image),
            flavor=_flavor.Flavor(id=flavor.id),  # a Resource: no second lookup by the SDK
            auto_ip=spec.auto_floating_ip, wait=False, meta=meta,
            network=[self.lookups.find_network(n) for n in spec.networks] or None,
            boot_from_volume=spec.boot_from_volume, terminate_volume=True,
        )
        if spec.boot_from_volume and spec.volume_size:
            kwargs["volume_size"] = spec.volume_size
        for key in ("key_name", "availability_zone", "config_drive", "userdata"):
            value = getattr(spec, key)
            if value is not None:
                kwargs[key] = value
        if spec.security_groups:
            kwargs["security_groups"] = list(spec.security_groups)
        return self.conn.create_server(spec.hostname, **kwargs)

    def get_raw_server(self, external_id: str) -> Any:
        try:
            return self.conn.compute.get_server(external_id)
        except os_exc.NotFoundException:
            return None

    def get_server(self, external_id: str, listed: Mapping[str, Any] | None = None) -> Any:
        """The server with openstacksdk's address fields (public_v4, interface_ip, ...).

        With `listed` (the server from a server list fetched after the moment that matters),
        openstacksdk expands its JSON instead of GETting the server again: `get_server_by_id`
        is a GET + the same `add_server_interfaces` (which takes dict-like servers)."""
        if listed is None or listed.get("raw") is None:
            return self.conn.get_server_by_id(external_id)
        raw = listed["raw"]
        server = Munch(raw)
        # add_server_interfaces may append to the address lists: do not touch the cache's.
        server["addresses"] = {net: [dict(a) for a in addrs]
                               for net, addrs in (raw.get("addresses") or {}).items()}
        server.update(host_id=listed["host_id"], availability_zone=listed["availability_zone"],
                      task_state=listed["task_state"], metadata=listed["metadata"])
        return _meta.add_server_interfaces(self.conn, server)  # type: ignore[arg-type]

    def add_floating_ip(self, external_id: str,
                        listed: Mapping[str, Any] | None = None) -> tuple[Any, bool]:
        """Add a floating IP if openstacksdk says the server needs one; (server, added)."""
        server = self.get_server(external_id, listed)
        if server is None:
            raise os_exc.SDKException(f"server {external_id} disappeared")
        if not self.conn._needs_floating_ip(server, nat_destination=None):
            return server, False
        server = self.conn.add_ips_to_server(server, auto_ip=True, reuse=False, wait=False)
        return server, True

    def delete_server(self, external_id: str, listed: Mapping[str, Any] | None = None) -> bool:
        """Delete the server and its floating IPs; False when it was already gone. `listed`:
        the server from a list fetched after the deletion was asked for (spares a GET)."""
        server = self.get_server(external_id, listed)
        if server is None:
            return False
        # openstacksdk's `_delete_server(server, delete_ips=True)`, step by step: its proxy
        # builds a full `Server` resource from the expanded server only to send a DELETE
        # (~40% of the launcher's CPU in a burst); the proxy's session sends the same one.
        if self.conn._has_floating_ips() and server["addresses"]:
            self.conn._delete_server_floating_ips(server, delete_ip_retry=1)
        response = self.conn.compute.delete(self._compute_url(f"/servers/{server['id']}"))
        if response.status_code == 404:
            return False
        os_exc.raise_from_response(response)
        return True

    def instance_from_server(self, server: Any, expanded: bool = True) -> Instance:
        status = (server["status"] or "").upper()
        if (server.get("task_state") or "") == "deleting":
            status = "DELETED"
        fault = server.get("fault") or None
        addr: dict[str, str | None] = {}
        if expanded:
            public_v4 = server["public_v4"] or None
            addr = {"public_ipv4": public_v4,
                    "private_ipv4": server["private_v4"] or public_v4,
                    "public_ipv6": server["public_v6"] or None,
                    "interface_ip": server["interface_ip"] or None}
        return Instance(
            external_id=str(server["id"]),
            name=str(server["name"]),
            status=STATUS_MAP.get(status, "building"),
            metadata={str(k): str(v) for k, v in (server["metadata"] or {}).items()},
            host_id=server.get("host_id") or None,
            cloud=self.cloud,
            region=self.region,
            az=server.get("availability_zone") or None,
            fault=str(fault.get("message")) if isinstance(fault, Mapping) else None,
            resources=self._server_quota(server),
            **addr,
        )

    def _server_quota(self, server: Any) -> Quota | None:
        flavor = server.get("flavor") or {}
        # Embedded flavor (compute microversion >= 2.47). vcpus 0 is never real: it is
        # openstacksdk's default when a server built from a list's JSON has only the id.
        if flavor.get("vcpus") and flavor.get("ram") is not None:
            return flavor_quota(flavor)
        flavor_id = flavor.get("id")
        for f in self.lookups.list_flavors():
            if f.id == flavor_id:
                return flavor_quota(f)
        return None



def _clock_skew(response: Any, now: float) -> float:
    """The cloud's clock minus ours from the response's Date header (0 without one). The
    header is sent before we read it and has whole seconds: the estimate errs early, which
    only makes `changes-since` ask for a little more."""
    headers = getattr(response, "headers", None) or {}
    date = headers.get("Date") if hasattr(headers, "get") else None
    if not date:
        return 0.0
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() - now
    except (TypeError, ValueError, IndexError):
        return 0.0


def light_server(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a compute API server body that polling and quota use, under the names
    openstacksdk's normalised server uses (so both kinds work in `instance_from_server`)."""
    return {
        "id": str(raw.get("id")),
        "name": str(raw.get("name") or ""),
        "status": raw.get("status") or "",
        "fault": raw.get("fault"),
        "metadata": raw.get("metadata") or {},
        "flavor": raw.get("flavor") or {},
        "task_state": raw.get("OS-EXT-STS:task_state"),
        "host_id": raw.get("hostId"),
        "availability_zone": raw.get("OS-EXT-AZ:availability_zone"),
        "raw": raw,  # a reference, no copy: expanded once when the server is ACTIVE
    }


if TYPE_CHECKING:  # mypy proves the machines get what they use
    _check_cloud: OpenStackCloud = cast(OpenStackServers, None)

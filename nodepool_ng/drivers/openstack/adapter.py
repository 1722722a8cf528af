"""The OpenStack provider adapter: one openstacksdk Connection, a bounded API executor, caches.

openstacksdk does the cloud work (clouds.yaml and vendor profiles, `create_server`, floating
IPs, address selection, `create_image`); this module shares one server list between all
state machines, picks flavors, and turns limits and servers into `Quota`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Container, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import openstack.config
import openstack.connection
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
    ImageAdapter,
    Instance,
    LaunchSpec,
    QuotaReportingAdapter,
    Resource,
)
from nodepool_ng.drivers.executor import Priority, PriorityExecutor
from nodepool_ng.drivers.openstack.cache import LazyListCache, TTLMemo
from nodepool_ng.drivers.openstack.quota import (
    FlavorInfo,
    flavor_quota,
    limits_quota,
    select_flavor,
)
from nodepool_ng.drivers.openstack.statemachine import (
    Log,
    OpenStackCreateStateMachine,
    OpenStackDeleteStateMachine,
)
from nodepool_ng.errors import ConfigError, PermanentCloudError, TemporaryCloudError
from nodepool_ng.launcher.health import Backoff
from nodepool_ng.model.quota import Quota

R = TypeVar("R")
log = logging.getLogger(__name__)

STATUS_MAP = {"BUILD": "building", "ACTIVE": "ready", "ERROR": "error",
              "DELETED": "deleting", "SOFT_DELETED": "deleting"}


class OpenStackProviderLike(Protocol):
    """The part of `config.models.ProviderConfig` the adapter reads."""

    @property
    def name(self) -> str: ...
    @property
    def cloud(self) -> str: ...
    @property
    def region_name(self) -> str | None: ...
    @property
    def rate(self) -> float: ...
    @property
    def launch_timeout(self) -> int: ...


def load_cloud_region(cloud: str, region_name: str | None = None,
                      clouds_yaml: str | None = None) -> Any:
    """openstacksdk's CloudRegion for `cloud`; an explicit clouds.yaml replaces the search."""
    try:
        if clouds_yaml:
            config = openstack.config.OpenStackConfig(
                config_files=[clouds_yaml], secure_files=[], load_envvars=False)
        else:
            config = openstack.config.OpenStackConfig()
        return config.get_one(cloud=cloud, region_name=region_name)
    except os_exc.SDKException as e:  # ConfigException and friends
        raise ConfigError(f"cloud {cloud!r}: {e}", path="cloud") from e


class OpenStackAdapter:
    def __init__(
        self,
        provider: OpenStackProviderLike,
        *,
        clouds_yaml: str | None = None,
        executor_workers: int = 10,
        poll_interval: float = 1.0,
        flavor_cache_ttl: float = 300.0,
        delete_timeout: float = 600.0,
    ) -> None:
        self.provider = provider
        self.poll_interval = poll_interval
        self.delete_timeout = delete_timeout
        self.cloud_region = load_cloud_region(provider.cloud, provider.region_name, clouds_yaml)
        # rate is seconds between calls; openstacksdk wants calls per second
        rate_limit = 1.0 / provider.rate if provider.rate and provider.rate > 0 else None
        self.conn = openstack.connection.Connection(
            config=self.cloud_region, rate_limit=rate_limit, app_name="nodepool_ng")
        skip_per_call_env_lookups(self.conn.session)
        remember_service_lookups(self.conn)
        self._server_mv: str | None = None  # "" once found out that there is none
        self._compute_endpoint: str | None = None
        self._auto_networks: bool | None = None  # compute microversion >= 2.37
        self._executor = PriorityExecutor(executor_workers, f"openstack-{provider.name}")
        self.servers: LazyListCache[dict[str, Any]] = LazyListCache(
            self._fetch_servers, self._executor.at(Priority.POLL), poll_interval,
            name=f"{provider.name} servers")
        self._flavors: TTLMemo[str, list[FlavorInfo]] = TTLMemo(flavor_cache_ttl)
        self._images: TTLMemo[str, Any] = TTLMemo(flavor_cache_ttl)
        self._networks: TTLMemo[str, Any] = TTLMemo(flavor_cache_ttl)
        self._stopped = threading.Event()
        self._limits_lock = threading.Lock()
        self._limits_retry = Backoff(1.0, 60.0)

    # ProviderAdapter ----------------------------------------------------------------------

    def get_create_state_machine(self, spec: LaunchSpec, log: Log) -> OpenStackCreateStateMachine:
        return OpenStackCreateStateMachine(self, spec, log, float(self.provider.launch_timeout))

    def get_delete_state_machine(self, external_id: str, log: Log) -> OpenStackDeleteStateMachine:
        return OpenStackDeleteStateMachine(self, external_id, log, self.delete_timeout)

    def list_instances(self) -> list[Instance]:
        return [self.instance_from_server(s, expanded=False)
                for s in self.servers.get().values()]

    def get_quota_limits(self) -> Quota:
        """The cloud's limits. After a failure the call backs off (with jitter) and raises
        at once meanwhile: every pool re-reads quota, and a dead cloud need not hear it."""
        with self._limits_lock:
            if not self._limits_retry.ready():
                raise TemporaryCloudError(
                    f"compute limits: not asked again yet after "
                    f"{self._limits_retry.failures} failures")
        try:
            limits = self._call(self.conn.get_compute_limits)
        except Exception:
            with self._limits_lock:
                self._limits_retry.failed()
            raise
        with self._limits_lock:
            self._limits_retry.succeeded()
        return limits_quota(limits)

    def probe(self) -> None:
        """One cheap call to see whether the cloud answers (the launcher's health probe):
        a server listing, sent even while failed listings back off."""
        self.servers.get(max_age=0.0, retry_now=True)

    def get_unmanaged_quota_used(self, known_node_ids: Container[str] | None = None) -> Quota:
        """What servers this provider does not manage use: other owners' servers, and ours
        whose node id is not in `known_node_ids` (leaked) when that is given."""
        used = []
        for inst in self.list_instances():
            ours = inst.provider_name == self.provider.name
            if ours and (known_node_ids is None or inst.node_id in known_node_ids):
                continue
            if inst.resources is not None:
                used.append(inst.resources)
        return Quota.total(used)

    def get_available_quota(self, known_node_ids: Container[str] | None = None) -> Quota:
        """The cloud's limits minus what unmanaged servers use (unlimited stays unlimited)."""
        return self.get_quota_limits().headroom(self.get_unmanaged_quota_used(known_node_ids))

    def get_quota_for_label(self, spec: LaunchSpec) -> Quota:
        flavor = self.find_flavor(spec)
        return flavor_quota(flavor, boot_from_volume=spec.boot_from_volume,
                            volume_size=spec.volume_size)

    def list_resources(self) -> list[Resource]:
        out: list[Resource] = []
        for fip in self._call(lambda: list(self.conn.network.ips())):
            out.append(Resource("floatingip", str(fip.id),
                                {"port_id": fip.port_id or "",
                                 "floating_ip_address": fip.floating_ip_address or ""},
                                status=fip.status))
        for port in self._call(lambda: list(self.conn.network.ports())):
            out.append(Resource("port", str(port.id),
                                {"device_owner": port.device_owner or "",
                                 "device_id": port.device_id or ""}, status=port.status))
        for image in self.list_images():
            out.append(image)
        return out

    def delete_resource(self, resource: Resource) -> None:
        if resource.kind == "floatingip":
            self._call(self.conn.delete_floating_ip, resource.external_id)
        elif resource.kind == "port":
            self._call(self.conn.network.delete_port, resource.external_id, ignore_missing=True)
        elif resource.kind == "image":
            self.delete_image(resource.external_id)
        else:
            raise PermanentCloudError(f"unknown resource kind {resource.kind!r}")

    def get_console_log(self, external_id: str) -> str:
        return str(self._call(self.conn.get_server_console, external_id) or "")

    def stop(self) -> None:
        self._stopped.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.conn.close()

    # Images (builder) ---------------------------------------------------------------------

    @property
    def image_format(self) -> str:
        """The disk format this cloud wants (openstacksdk cloud config, vendor profiles)."""
        return str(self.cloud_region.config.get("image_format") or "qcow2")

    def upload_image(self, name: str, filename: str, disk_format: str | None,
                     metadata: Mapping[str, str], timeout: float,
                     md5: str | None = None, sha256: str | None = None) -> str:
        """Upload with openstacksdk `create_image` (it picks PUT or the import flow) and wait
        until the image is active; returns its id. The builder owns retries. `md5`/`sha256`
        (the builder's checksum files) spare the SDK from hashing the file again."""
        try:
            # Metadata goes in as `properties`: openstacksdk's task-import flow drops `meta`.
            image = self.conn.create_image(
                name, filename=filename, disk_format=disk_format or self.image_format,
                wait=True, timeout=timeout, allow_duplicates=True, md5=md5, sha256=sha256,
                properties=dict(metadata))
        except os_exc.HttpException as e:
            raise _cloud_error(e, f"uploading image {name}") from e
        except os_exc.SDKException as e:  # timeouts, image in error state
            raise TemporaryCloudError(f"uploading image {name}: {e}") from e
        if image is None:
            raise TemporaryCloudError(f"uploading image {name}: the cloud returned no image")
        return str(image.id)

    def delete_image(self, external_id: str) -> None:
        try:
            self.conn.image.delete_image(external_id, ignore_missing=True)
        except os_exc.HttpException as e:
            raise _cloud_error(e, f"deleting image {external_id}") from e

    def list_images(self) -> list[Resource]:
        """Images with their properties as metadata (owner keys nodepool_build_id, ...)."""
        out = []
        for image in self._call(lambda: list(self.conn.image.images())):
            props = dict(image.properties or {})
            meta = {k: str(v) for k, v in props.items() if isinstance(v, str | int)}
            out.append(Resource("image", str(image.id), meta, status=image.status))
        return out

    # Used by the state machines (run in the executor) -------------------------------------

    def submit(self, fn: Callable[..., R], *args: Any,
               priority: Priority = Priority.START) -> Future[R]:
        return self._executor.submit(fn, *args, priority=priority)

    def set_progress_listener(self, listener: Callable[[], None] | None) -> None:
        self._executor.listener = listener

    def _call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """A synchronous API call with errors mapped onto our exception tree."""
        try:
            return fn(*args, **kwargs)
        except os_exc.HttpException as e:
            raise _cloud_error(e, getattr(fn, "__name__", "API call")) from e
        except os_exc.SDKException as e:
            raise TemporaryCloudError(f"{getattr(fn, '__name__', 'API call')}: {e}") from e

    def _fetch_servers(self) -> dict[str, dict[str, Any]]:
        """Every server, as light dicts, through openstacksdk's authenticated compute session.

        The list is polled for all building servers at once, so it is the launcher's hottest
        cloud call: building openstacksdk `Server` resources costs ~1 ms each, so we read the
        JSON directly and keep only the keys the state machines and quota need. Servers that
        finish building are re-read once through openstacksdk for their addresses.
        """
        servers: dict[str, dict[str, Any]] = {}
        url: str | None = self._compute_url("/servers/detail")
        while url:
            response = self.conn.compute.get(url)
            if not response.ok:
                raise TemporaryCloudError(
                    f"listing servers: HTTP {response.status_code} {response.text[:200]}")
            body = response.json()
            for raw in body.get("servers") or []:
                server = light_server(raw)
                servers[server["id"]] = server
            url = next((link.get("href") for link in body.get("servers_links") or []
                        if link.get("rel") == "next"), None)
        return servers

    def list_flavors(self) -> list[FlavorInfo]:
        return self._flavors.get("flavors", lambda: [
            FlavorInfo.from_sdk(f) for f in self.conn.compute.flavors(details=True)])

    def find_flavor(self, spec: LaunchSpec) -> FlavorInfo:
        return select_flavor(self.list_flavors(), spec.flavor_name, spec.min_ram,
                             label=spec.label_name)

    def find_image(self, name_or_id: str) -> Any:
        return self._images.get(name_or_id, lambda: self.conn.image.find_image(
            name_or_id, ignore_missing=False))

    def find_network(self, name_or_id: str) -> Any:
        return self._networks.get(name_or_id, lambda: self.conn.network.find_network(
            name_or_id, ignore_missing=False))

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
        flavor = self.find_flavor(spec)
        meta = dict(spec.metadata)
        meta.update({META_NODE_ID: spec.node_id, META_POOL_NAME: spec.pool_name,
                     META_PROVIDER_NAME: spec.provider_name})
        body: dict[str, Any] = {
            "name": spec.hostname, "imageRef": self.find_image(spec.image).id,
            "flavorRef": flavor.id, "metadata": meta, "min_count": 1, "max_count": 1,
        }
        networks = [{"uuid": self.find_network(n)["id"]} for n in spec.networks]
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
        flavor = self.find_flavor(spec)
        meta = dict(spec.metadata)
        meta.update({META_NODE_ID: spec.node_id, META_POOL_NAME: spec.pool_name,
                     META_PROVIDER_NAME: spec.provider_name})
        kwargs: dict[str, Any] = dict(
            image=self.find_image(spec.image),
            flavor=_flavor.Flavor(id=flavor.id),  # a Resource: no second lookup by the SDK
            auto_ip=spec.auto_floating_ip, wait=False, meta=meta,
            network=[self.find_network(n) for n in spec.networks] or None,
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
            cloud=self.provider.cloud,
            region=self.cloud_region.region_name or None,
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
        for f in self.list_flavors():
            if f.id == flavor_id:
                return flavor_quota(f)
        return None


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


def skip_per_call_env_lookups(ksa_session: Any) -> bool:
    """Stop requests from re-reading the environment on every API call when it cannot matter.

    With `trust_env`, requests looks up proxy variables, the CA-bundle variables and
    ~/.netrc on every call (~10% of the launcher's CPU). When no proxy variable and no netrc
    file exist, the only effect left is the CA bundle: pin it on the session once (exactly
    what requests would pick per call) and switch the per-call lookups off. True if done.
    """
    env = os.environ
    if any(key.lower().endswith("_proxy") for key in env):
        return False
    netrc_files = [env["NETRC"]] if env.get("NETRC") else ["~/.netrc", "~/_netrc"]
    if any(os.path.exists(os.path.expanduser(f)) for f in netrc_files):
        return False
    requests_session = getattr(ksa_session, "session", None)
    if requests_session is None or not hasattr(requests_session, "trust_env"):
        return False
    bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    if bundle and getattr(ksa_session, "verify", None) is True:
        ksa_session.verify = bundle
    requests_session.trust_env = False
    return True


def remember_service_lookups(conn: Any) -> None:
    """Answer `conn.has_service(...)` from memory once it said yes.

    openstacksdk's `add_server_interfaces` asks `has_service("network")` for every server
    it expands, and each answer re-derives the cloud config (a deep copy) and searches the
    service catalog: ~7% of the launcher's CPU in a burst. The catalog a connection was
    given does not change while it lives (a config reload builds a new connection). Only
    "yes" is remembered: openstacksdk also answers "no" when the lookup itself failed.
    """
    ask = conn.has_service
    present: set[tuple[str, str | None]] = set()

    def has_service(service_key: str, version: str | None = None) -> bool:
        key = (service_key, version)
        if key in present:
            return True
        if ask(service_key, version):
            present.add(key)
            return True
        return False

    conn.has_service = has_service


def _cloud_error(e: os_exc.HttpException, what: str) -> Exception:
    status = e.status_code or 0
    if status >= 500 or status in (408, 429):
        return TemporaryCloudError(f"{what}: {status} {e.details or e}")
    return PermanentCloudError(f"{what}: {status} {e.details or e}")


if TYPE_CHECKING:  # mypy proves the adapter satisfies the driver interfaces
    _check_quota: QuotaReportingAdapter = cast(OpenStackAdapter, None)
    _check_image: ImageAdapter = cast(OpenStackAdapter, None)

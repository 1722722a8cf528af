"""Compute v2.1 (nova): discovery with microversions, flavors, servers, limits, zones.

Keypairs, the old os-floating-ips API and server actions live in `compute_extras.py`.
Microversions honoured where openstacksdk sees a difference: >= 2.47 embeds the flavor in the
server, >= 2.36 removes the os-floating-ips proxy API (404).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Any

from nodepool_ng.simcloud.http import ApiError, Request, Response, Service
from nodepool_ng.simcloud.state import CloudState, Network, Port, Server, iso, new_id

MIN_VERSION = (2, 1)
MAX_PAGE = 1000
_KINDS = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
          405: "HTTPMethodNotAllowed", 406: "computeFault", 409: "conflictingRequest",
          413: "overLimit", 500: "computeFault", 503: "serviceUnavailable"}


def _parse_version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


class ComputeService(Service):
    name = "compute"
    prefix = "/compute"

    def __init__(self, state: CloudState) -> None:
        super().__init__()
        self.max_version = _parse_version(state.profile.compute_microversion)
        self.route("GET", "/?", self.versions)
        self.route("GET", "/v2.1/?", self.version)
        self.route("GET", "/v2.1/flavors(/detail)?", self.list_flavors)
        self.route("GET", "/v2.1/flavors/([^/]+)", self.show_flavor)
        self.route("GET", "/v2.1/flavors/([^/]+)/os-extra_specs", self.extra_specs)
        self.route("GET", "/v2.1/servers(/detail)?", self.list_servers)
        self.route("POST", "/v2.1/servers", self.create_server)
        self.route("GET", "/v2.1/servers/([^/]+)", self.show_server)
        self.route("PUT", "/v2.1/servers/([^/]+)", self.update_server)
        self.route("DELETE", "/v2.1/servers/([^/]+)", self.delete_server)
        self.route("GET", "/v2.1/servers/([^/]+)/metadata", self.get_metadata)
        self.route("POST", "/v2.1/servers/([^/]+)/metadata", self.merge_metadata)
        self.route("PUT", "/v2.1/servers/([^/]+)/metadata", self.replace_metadata)
        self.route("GET", "/v2.1/servers/([^/]+)/metadata/([^/]+)", self.get_meta_item)
        self.route("PUT", "/v2.1/servers/([^/]+)/metadata/([^/]+)", self.set_meta_item)
        self.route("DELETE", "/v2.1/servers/([^/]+)/metadata/([^/]+)", self.delete_meta_item)
        self.route("GET", "/v2.1/limits", self.limits)
        self.route("GET", "/v2.1/os-availability-zone(/detail)?", self.zones)

    # --- plumbing -------------------------------------------------------------------------

    def error(self, status: int, message: str) -> ApiError:
        return ApiError(status, {_KINDS.get(status, "computeFault"): {
            "message": message, "code": status}})

    def microversion(self, req: Request) -> tuple[int, int]:
        text = req.headers.get("openstack-api-version", "")
        if text.startswith("compute "):
            text = text[len("compute "):].strip()
        else:
            text = req.headers.get("x-openstack-nova-api-version", "").strip()
        if not text:
            return MIN_VERSION
        if text == "latest":
            return self.max_version
        try:
            wanted = _parse_version(text)
        except ValueError:
            raise self.error(400, f"Invalid API version request: {text}") from None
        if not MIN_VERSION <= wanted <= self.max_version:
            raise self.error(406, f"Version {text} is not supported by the API. Minimum is 2.1 "
                                  f"and maximum is {self.max_version[0]}.{self.max_version[1]}.")
        return wanted

    def _respond(self, req: Request, status: int, body: Any,
                 headers: dict[str, str] | None = None) -> Response:
        v = self.microversion(req)
        out = {"OpenStack-API-Version": f"compute {v[0]}.{v[1]}",
               "X-OpenStack-Nova-API-Version": f"{v[0]}.{v[1]}",
               "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version"}
        out.update(headers or {})
        return Response(status, body, headers=out)

    def _version_doc(self, req: Request) -> dict[str, Any]:
        return {"id": "v2.1", "status": "CURRENT",
                "version": f"{self.max_version[0]}.{self.max_version[1]}",
                "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
                "links": [{"rel": "self", "href": f"{req.base_url}/compute/v2.1/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.compute+json;version=2.1"}]}

    def versions(self, req: Request) -> Response:
        return Response(200, {"versions": [self._version_doc(req)]})

    def version(self, req: Request) -> Response:
        return Response(200, {"version": self._version_doc(req)})

    def _server(self, req: Request, server_id: str) -> Server:
        server = req.state.servers.get(server_id)
        if server is None:
            raise self.error(404, f"Instance {server_id} could not be found.")
        return server

    # --- flavors --------------------------------------------------------------------------

    def _flavor_view(self, req: Request, f: Any, detail: bool) -> dict[str, Any]:
        link = f"{req.base_url}/compute/v2.1/flavors/{f.id}"
        out: dict[str, Any] = {"id": f.id, "name": f.name,
                               "links": [{"rel": "self", "href": link}]}
        if detail:
            out.update({"vcpus": f.vcpus, "ram": f.ram, "disk": f.disk,
                        "OS-FLV-EXT-DATA:ephemeral": 0, "swap": 0, "rxtx_factor": 1.0,
                        "os-flavor-access:is_public": True, "OS-FLV-DISABLED:disabled": False,
                        "description": None, "extra_specs": {}})
        return out

    def list_flavors(self, req: Request) -> Response:
        detail = bool(req.params[0])
        flavors = [self._flavor_view(req, f, detail) for f in req.state.flavors.values()]
        return self._respond(req, 200, {"flavors": flavors})

    def show_flavor(self, req: Request) -> Response:
        flavor = req.state.flavors.get(req.params[0])
        if flavor is None:
            raise self.error(404, f"Flavor {req.params[0]} could not be found.")
        return self._respond(req, 200, {"flavor": self._flavor_view(req, flavor, True)})

    def extra_specs(self, req: Request) -> Response:
        if req.params[0] not in req.state.flavors:
            raise self.error(404, f"Flavor {req.params[0]} could not be found.")
        return self._respond(req, 200, {"extra_specs": {}})

    # --- servers: views -------------------------------------------------------------------

    def server_view(self, req: Request, s: Server, now: float, version: tuple[int, int],
                    addresses: dict[str, Any] | None = None) -> dict[str, Any]:
        base = f"{req.base_url}/compute/v2.1"
        status = s.api_status(now)
        if version >= (2, 47):
            flavor: dict[str, Any] = {"vcpus": s.flavor.vcpus, "ram": s.flavor.ram,
                                      "disk": s.flavor.disk, "ephemeral": 0, "swap": 0,
                                      "original_name": s.flavor.name, "extra_specs": {}}
        else:
            flavor = {"id": s.flavor.id, "links": [
                {"rel": "bookmark", "href": f"{base}/flavors/{s.flavor.id}"}]}
        out: dict[str, Any] = {
            "id": s.id, "name": s.name, "status": status,
            "tenant_id": req.state.project_id, "user_id": req.state.user_id,
            "metadata": dict(s.metadata), "hostId": "" if status == "BUILD" else "simhost",
            "image": {"id": s.image_id, "links": [
                {"rel": "bookmark", "href": f"{base}/images/{s.image_id}"}]},
            "flavor": flavor, "created": iso(s.created),
            "updated": iso(s.ready_at if status != "BUILD" else s.created),
            "addresses": addresses if addresses is not None else
            req.state.server_addresses(s),
            "accessIPv4": s.access_ipv4 if status != "BUILD" else "", "accessIPv6": "",
            "links": [{"rel": "self", "href": f"{base}/servers/{s.id}"},
                      {"rel": "bookmark", "href": f"{base}/servers/{s.id}"}],
            "OS-DCF:diskConfig": "MANUAL", "progress": 100 if status == "ACTIVE" else 0,
            "OS-EXT-AZ:availability_zone": s.availability_zone,
            "config_drive": "True" if s.config_drive else "", "key_name": s.key_name,
            "OS-SRV-USG:launched_at": None if status == "BUILD" else iso(s.ready_at),
            "OS-SRV-USG:terminated_at": None,
            "OS-EXT-STS:task_state": "spawning" if status == "BUILD" else None,
            "OS-EXT-STS:vm_state": {"BUILD": "building", "ACTIVE": "active"}.get(status, "error"),
            "OS-EXT-STS:power_state": 1 if status == "ACTIVE" else 0,
            "os-extended-volumes:volumes_attached": [],
            "security_groups": [{"name": "default"}],
        }
        if version >= (2, 9):
            out["locked"] = False
        if version >= (2, 19):
            out["description"] = None
        if version >= (2, 26):
            out["tags"] = []
        if status == "ERROR":
            out["fault"] = {"code": 500, "message": s.fault_message,
                            "created": iso(s.ready_at)}
        return out

    def list_servers(self, req: Request) -> Response:
        version = self.microversion(req)
        detail = bool(req.params[0])
        name_rx = req.arg("name")
        status = req.arg("status")
        try:
            limit = min(int(req.arg("limit") or MAX_PAGE), MAX_PAGE)
        except ValueError:
            raise self.error(400, "limit param must be an integer") from None
        marker = req.arg("marker")
        try:
            rx = re.compile(name_rx) if name_rx else None
        except re.error:
            raise self.error(400, f"Invalid regular expression for name: {name_rx}") from None
        now = time.time()
        state = req.state
        with state.lock:
            servers = sorted(state.servers.values(), key=lambda s: (s.created, s.id))
            if marker:
                ids = [s.id for s in servers]
                if marker not in ids:
                    raise self.error(400, f"marker [{marker}] not found")
                servers = servers[ids.index(marker) + 1:]
            picked = []
            for s in servers:
                if rx and not rx.search(s.name):
                    continue
                if status and s.status(now) != status.upper():
                    continue
                picked.append(s)
                if len(picked) >= limit:
                    break
            if detail:
                views = [self.server_view(req, s, now, version) for s in picked]
            else:
                views = [{"id": s.id, "name": s.name, "links": [
                    {"rel": "self", "href": f"{req.base_url}/compute/v2.1/servers/{s.id}"}]}
                    for s in picked]
        body: dict[str, Any] = {"servers": views}
        if len(picked) == limit and picked:
            path = "servers/detail" if detail else "servers"
            body["servers_links"] = [{"rel": "next", "href": (
                f"{req.base_url}/compute/v2.1/{path}?limit={limit}&marker={picked[-1].id}")}]
        return self._respond(req, 200, body)

    def show_server(self, req: Request) -> Response:
        version = self.microversion(req)
        with req.state.lock:
            server = self._server(req, req.params[0])
            view = self.server_view(req, server, time.time(), version)
        return self._respond(req, 200, {"server": view})

    def update_server(self, req: Request) -> Response:
        body = req.json_object("server")
        with req.state.lock:
            server = self._server(req, req.params[0])
            if "name" in body:
                if not isinstance(body["name"], str) or not body["name"].strip():
                    raise self.error(400, "Invalid input for field/attribute name.")
                server.name = body["name"]
            view = self.server_view(req, server, time.time(), self.microversion(req))
        return self._respond(req, 200, {"server": view})

    def delete_server(self, req: Request) -> Response:
        with req.state.lock:
            if not req.state.delete_server(req.params[0]):
                raise self.error(404, f"Instance {req.params[0]} could not be found.")
        return self._respond(req, 204, None)

    # --- servers: create ------------------------------------------------------------------

    def create_server(self, req: Request) -> Response:
        self.microversion(req)
        body = req.json_object("server")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise self.error(400, "Invalid input for field/attribute name. Value: "
                                  f"{name}. 'name' is a required property")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise self.error(400, "Invalid input for field/attribute metadata. "
                                  "Value must be a dict of strings.")
        user_data = body.get("user_data")
        if user_data is not None:
            try:
                base64.b64decode(str(user_data), validate=True)
            except (binascii.Error, ValueError):
                raise self.error(400, "User data needs to be valid base 64.") from None
        az = body.get("availability_zone") or "nova"
        if az != "nova":
            raise self.error(400, "The requested availability zone is not available")
        state = req.state
        with state.lock:
            flavor = self._find_flavor(req, body.get("flavorRef"))
            image_id = self._check_image(req, body.get("imageRef"))
            key_name = body.get("key_name")
            if key_name is not None and key_name not in state.keypairs:
                raise self.error(400, "Invalid key_name provided.")
            self._check_quota(state, flavor)
            now = time.time()
            server = Server(
                id=new_id(), name=name, flavor=flavor, image_id=image_id, created=now,
                ready_at=now + state.boot_time(),
                will_error=state.rng.random() < state.faults["server_error_rate"],
                key_name=key_name, metadata=dict(metadata),
                user_data=user_data, config_drive=body.get("config_drive") in (
                    True, "true", "True", "1", 1), availability_zone=az,
            )
            self._attach_networks(req, server, body.get("networks"))
            state.servers[server.id] = server
        link = f"{req.base_url}/compute/v2.1/servers/{server.id}"
        return self._respond(req, 202, {"server": {
            "id": server.id, "links": [{"rel": "self", "href": link}],
            "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}],
            "adminPass": "simcloud-" + server.id[:8]}}, {"Location": link})

    def _find_flavor(self, req: Request, ref: Any) -> Any:
        if not isinstance(ref, str | int) or ref == "":
            raise self.error(400, "Invalid input for field/attribute flavorRef. "
                                  "'flavorRef' is a required property")
        key = str(ref).rstrip("/").rsplit("/", 1)[-1]
        flavor = req.state.flavors.get(key)
        if flavor is None:
            raise self.error(400, f"Flavor {key} could not be found.")
        return flavor

    def _check_image(self, req: Request, ref: Any) -> str:
        if not isinstance(ref, str) or not ref:
            raise self.error(400, "Invalid input for field/attribute imageRef. "
                                  "'imageRef' is a required property")
        key = ref.rstrip("/").rsplit("/", 1)[-1]
        image = req.state.images.get(key)
        if image is None:
            raise self.error(400, "Can not find requested image")
        if image.status != "active":
            raise self.error(400, f"Image {key} is not active.")
        return key

    def _check_quota(self, state: CloudState, flavor: Any) -> None:
        used = state.usage()
        wanted = {"instances": 1, "cores": flavor.vcpus, "ram": flavor.ram}
        for res in ("instances", "cores", "ram"):
            limit = state.quota[res]
            if limit >= 0 and used[res] + wanted[res] > limit:
                raise self.error(403, f"Quota exceeded for {res}: Requested {wanted[res]}, but "
                                      f"already used {used[res]} of {limit} {res}")

    def _attach_networks(self, req: Request, server: Server, networks: Any) -> None:
        state = req.state
        model = state.profile.address_model
        if model in ("nova_floating", "access_ip"):  # no neutron: nova hands out addresses
            if networks not in (None, "auto", "none", []):
                raise self.error(400, "This cloud does not support choosing networks")
            for net in state.bootable_networks():
                ip = net.pool.allocate()
                if ip is None:
                    raise self.error(409, f"No more fixed IPs in network {net.name}")
                server.fixed.append((net.name, ip))
                if model == "access_ip" and net.router_external:
                    server.access_ipv4 = ip
            return
        if networks == "none":
            return
        refs: list[dict[str, Any]]
        if networks in (None, "auto", []):
            candidates = state.bootable_networks()
            if len(candidates) > 1:
                raise self.error(409, "Multiple possible networks found, use a Network ID to "
                                      "be more specific.")
            refs = [{"uuid": n.id} for n in candidates]
        elif isinstance(networks, list) and all(isinstance(n, dict) for n in networks):
            refs = networks
        else:
            raise self.error(400, "Invalid input for field/attribute networks.")
        # Validate every reference before creating anything, so a bad one leaks no port.
        plan: list[Port | Network] = []
        for ref in refs:
            if ref.get("port"):
                existing = state.ports.get(str(ref["port"]))
                if existing is None:
                    raise self.error(400, f"Port {ref['port']} could not be found.")
                if existing.device_id:
                    raise self.error(409, f"Port {existing.id} is still in use.")
                plan.append(existing)
                continue
            wanted = state.networks.get(str(ref.get("uuid")))
            if wanted is None or not wanted.api_visible:
                raise self.error(400, f"Network {ref.get('uuid')} could not be found.")
            if wanted.router_external and not wanted.shared:
                raise self.error(403, f"It is not allowed to create an interface on "
                                      f"external network {wanted.id}")
            plan.append(wanted)
        ports: list[Port] = []
        for item in plan:
            made = state.create_port(item) if isinstance(item, Network) else item
            if made is None:
                for p in ports:
                    if not p.device_id:
                        state.delete_port(p.id)
                raise self.error(409, f"No more IP addresses available on network {item.id}.")
            ports.append(made)
        for made in ports:
            made.device_id = server.id
            made.device_owner = "compute:nova"
            server.port_ids.append(made.id)

    # --- metadata -------------------------------------------------------------------------

    def _meta_body(self, req: Request, key: str) -> dict[str, str]:
        data = req.json_object(key)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise self.error(400, f"Invalid input for field/attribute {key}.")
        return data

    def get_metadata(self, req: Request) -> Response:
        with req.state.lock:
            meta = dict(self._server(req, req.params[0]).metadata)
        return self._respond(req, 200, {"metadata": meta})

    def merge_metadata(self, req: Request) -> Response:
        new = self._meta_body(req, "metadata")
        with req.state.lock:
            server = self._server(req, req.params[0])
            server.metadata.update(new)
            meta = dict(server.metadata)
        return self._respond(req, 200, {"metadata": meta})

    def replace_metadata(self, req: Request) -> Response:
        new = self._meta_body(req, "metadata")
        with req.state.lock:
            self._server(req, req.params[0]).metadata = dict(new)
        return self._respond(req, 200, {"metadata": new})

    def get_meta_item(self, req: Request) -> Response:
        with req.state.lock:
            meta = self._server(req, req.params[0]).metadata
            if req.params[1] not in meta:
                raise self.error(404, "Metadata item was not found")
            return self._respond(req, 200, {"meta": {req.params[1]: meta[req.params[1]]}})

    def set_meta_item(self, req: Request) -> Response:
        new = self._meta_body(req, "meta")
        if list(new) != [req.params[1]]:
            raise self.error(400, "Request body and URI mismatch")
        with req.state.lock:
            self._server(req, req.params[0]).metadata.update(new)
        return self._respond(req, 200, {"meta": new})

    def delete_meta_item(self, req: Request) -> Response:
        with req.state.lock:
            meta = self._server(req, req.params[0]).metadata
            if meta.pop(req.params[1], None) is None:
                raise self.error(404, "Metadata item was not found")
        return self._respond(req, 204, None)

    # --- limits and zones -----------------------------------------------------------------

    def limits(self, req: Request) -> Response:
        state = req.state
        with state.lock:
            used = state.usage()
            fips = sum(1 for f in state.floating_ips.values())
            absolute = {
                "maxTotalInstances": state.quota["instances"],
                "maxTotalCores": state.quota["cores"],
                "maxTotalRAMSize": state.quota["ram"],
                "totalInstancesUsed": used["instances"], "totalCoresUsed": used["cores"],
                "totalRAMUsed": used["ram"], "maxServerMeta": 128, "maxImageMeta": 128,
                "maxPersonality": 5, "maxPersonalitySize": 10240, "maxTotalKeypairs": 100,
                "maxServerGroups": 10, "maxServerGroupMembers": 10,
                "maxSecurityGroups": 10, "maxSecurityGroupRules": 20,
                "maxTotalFloatingIps": -1, "totalFloatingIpsUsed": fips,
                "totalSecurityGroupsUsed": 1, "totalServerGroupsUsed": 0,
            }
        return self._respond(req, 200, {"limits": {"rate": [], "absolute": absolute}})

    def zones(self, req: Request) -> Response:
        zone: dict[str, Any] = {"zoneName": "nova", "zoneState": {"available": True},
                                "hosts": None}
        return self._respond(req, 200, {"availabilityZoneInfo": [zone]})

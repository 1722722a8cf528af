"""Compute v2.1 servers (nova): list with paging and filters, show, create (flavor, image,
key, quota and network checks), rename, delete; and each server's metadata.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from nodepool_ng.simcloud.compute import ComputeRoutes
from nodepool_ng.simcloud.http import Request, Response, handles
from nodepool_ng.simcloud.state import (
    CloudState,
    DeletedServer,
    Network,
    Port,
    Server,
    iso,
    new_id,
)

MAX_PAGE = 1000


def parse_time(value: str) -> float | None:
    """An ISO 8601 time (`2026-12-03T14:00:00Z`, `...+00:00`, fractions; naive = UTC) as a
    POSIX timestamp, or None if it is not one."""
    try:
        # an unencoded "+" of the offset arrives as a space
        parsed = datetime.fromisoformat(re.sub(r" (\d\d:?\d\d)$", r"+\1", value.strip()))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _server_of(item: Server | DeletedServer) -> Server:
    return item.server if isinstance(item, DeletedServer) else item


def _created_id(item: Server | DeletedServer) -> tuple[float, str]:
    s = _server_of(item)
    return s.created, s.id


class ServerRoutes(ComputeRoutes):
    """Servers: views, list, show, rename, delete, create."""

    # --- views ----------------------------------------------------------------------------

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
            "updated": iso(s.updated_at(now) if status != "BUILD" else
                           max(s.created, s.changed_at)),
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

    def deleted_view(self, req: Request, tomb: DeletedServer, now: float,
                     version: tuple[int, int]) -> dict[str, Any]:
        """A deleted server as Nova lists it under `changes-since`: status DELETED."""
        out = self.server_view(req, tomb.server, now, version, addresses={})
        out.pop("fault", None)
        out.update({"status": "DELETED", "updated": iso(tomb.deleted_at), "accessIPv4": "",
                    "OS-EXT-STS:task_state": None, "OS-EXT-STS:vm_state": "deleted",
                    "OS-EXT-STS:power_state": 0, "progress": 0,
                    "OS-SRV-USG:terminated_at": iso(tomb.deleted_at)})
        return out

    @handles("GET", "/v2.1/servers(/detail)?")
    def list_servers(self, req: Request) -> Response:
        """Servers, oldest first, paged (`limit`, `marker`), filtered by `name` (regex),
        `status` and `changes-since`: as in Nova, servers whose `updated` is at or after that
        time, deleted ones included (status DELETED) while their tombstone lasts."""
        version = self.c.microversion(req)
        detail = bool(req.params[0])
        name_rx = req.arg("name")
        status = req.arg("status")
        try:
            limit = min(int(req.arg("limit") or MAX_PAGE), MAX_PAGE)
        except ValueError:
            raise self.c.error(400, "limit param must be an integer") from None
        marker = req.arg("marker")
        try:
            rx = re.compile(name_rx) if name_rx else None
        except re.error:
            raise self.c.error(400, f"Invalid regular expression for name: {name_rx}") from None
        since_arg = req.arg("changes-since")
        since = parse_time(since_arg) if since_arg is not None else None
        if since_arg is not None and since is None:
            raise self.c.error(400, "Invalid filter field: changes-since.")
        now = time.time()
        state = req.state
        with state.lock:
            listed: list[Server | DeletedServer] = list(state.servers.values())
            if since is not None:
                state.expire_tombstones(now)
                listed.extend(state.deleted_servers.values())
            listed.sort(key=_created_id)
            if marker:
                ids = [_server_of(s).id for s in listed]
                if marker not in ids:
                    raise self.c.error(400, f"marker [{marker}] not found")
                listed = listed[ids.index(marker) + 1:]
            picked: list[Server | DeletedServer] = []
            for item in listed:
                s = _server_of(item)
                if rx and not rx.search(s.name):
                    continue
                deleted = isinstance(item, DeletedServer)
                if status and ("DELETED" if deleted else s.status(now)) != status.upper():
                    continue
                if since is not None and (item.deleted_at if isinstance(item, DeletedServer)
                                          else s.updated_at(now)) < since:
                    continue
                picked.append(item)
                if len(picked) >= limit:
                    break
            if detail:
                views = [self.deleted_view(req, s, now, version) if isinstance(s, DeletedServer)
                         else self.server_view(req, s, now, version) for s in picked]
            else:
                views = [{"id": s.id, "name": s.name, "links": [
                    {"rel": "self", "href": f"{req.base_url}/compute/v2.1/servers/{s.id}"}]}
                    for s in map(_server_of, picked)]
        body: dict[str, Any] = {"servers": views}
        if len(picked) == limit and picked:
            path = "servers/detail" if detail else "servers"
            query = [(k, v) for k, values in req.query.items() if k not in ("limit", "marker")
                     for v in values]
            query += [("limit", str(limit)), ("marker", _server_of(picked[-1]).id)]
            body["servers_links"] = [{"rel": "next", "href": (
                f"{req.base_url}/compute/v2.1/{path}?{urllib.parse.urlencode(query)}")}]
        return self.c.respond(req, 200, body)

    @handles("GET", "/v2.1/servers/([^/]+)")
    def show_server(self, req: Request) -> Response:
        version = self.c.microversion(req)
        with req.state.lock:
            server = self.c.find_server(req, req.params[0])
            view = self.server_view(req, server, time.time(), version)
        return self.c.respond(req, 200, {"server": view})

    @handles("PUT", "/v2.1/servers/([^/]+)")
    def update_server(self, req: Request) -> Response:
        body = req.json_object("server")
        with req.state.lock:
            server = self.c.find_server(req, req.params[0])
            if "name" in body:
                if not isinstance(body["name"], str) or not body["name"].strip():
                    raise self.c.error(400, "Invalid input for field/attribute name.")
                server.name = body["name"]
                server.touch(time.time())
            view = self.server_view(req, server, time.time(), self.c.microversion(req))
        return self.c.respond(req, 200, {"server": view})

    @handles("DELETE", "/v2.1/servers/([^/]+)")
    def delete_server(self, req: Request) -> Response:
        with req.state.lock:
            if not req.state.delete_server(req.params[0]):
                raise self.c.error(404, f"Instance {req.params[0]} could not be found.")
        return self.c.respond(req, 204, None)

    # --- servers: create ------------------------------------------------------------------

    @handles("POST", "/v2.1/servers")
    def create_server(self, req: Request) -> Response:
        self.c.microversion(req)
        body = req.json_object("server")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise self.c.error(400, "Invalid input for field/attribute name. Value: "
                                  f"{name}. 'name' is a required property")
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise self.c.error(400, "Invalid input for field/attribute metadata. "
                                  "Value must be a dict of strings.")
        user_data = body.get("user_data")
        if user_data is not None:
            try:
                base64.b64decode(str(user_data), validate=True)
            except (binascii.Error, ValueError):
                raise self.c.error(400, "User data needs to be valid base 64.") from None
        az = body.get("availability_zone") or "nova"
        if az != "nova":
            raise self.c.error(400, "The requested availability zone is not available")
        state = req.state
        with state.lock:
            flavor = self._find_flavor(req, body.get("flavorRef"))
            image_id = self._check_image(req, body.get("imageRef"))
            key_name = body.get("key_name")
            if key_name is not None and key_name not in state.keypairs:
                raise self.c.error(400, "Invalid key_name provided.")
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
        return self.c.respond(req, 202, {"server": {
            "id": server.id, "links": [{"rel": "self", "href": link}],
            "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}],
            "adminPass": "simcloud-" + server.id[:8]}}, {"Location": link})

    def _find_flavor(self, req: Request, ref: Any) -> Any:
        if not isinstance(ref, str | int) or ref == "":
            raise self.c.error(400, "Invalid input for field/attribute flavorRef. "
                                  "'flavorRef' is a required property")
        key = str(ref).rstrip("/").rsplit("/", 1)[-1]
        flavor = req.state.flavors.get(key)
        if flavor is None:
            raise self.c.error(400, f"Flavor {key} could not be found.")
        return flavor

    def _check_image(self, req: Request, ref: Any) -> str:
        if not isinstance(ref, str) or not ref:
            raise self.c.error(400, "Invalid input for field/attribute imageRef. "
                                  "'imageRef' is a required property")
        key = ref.rstrip("/").rsplit("/", 1)[-1]
        image = req.state.images.get(key)
        if image is None:
            raise self.c.error(400, "Can not find requested image")
        if image.status != "active":
            raise self.c.error(400, f"Image {key} is not active.")
        return key

    def _check_quota(self, state: CloudState, flavor: Any) -> None:
        used = state.usage()
        wanted = {"instances": 1, "cores": flavor.vcpus, "ram": flavor.ram}
        for res in ("instances", "cores", "ram"):
            limit = state.quota[res]
            if limit >= 0 and used[res] + wanted[res] > limit:
                raise self.c.error(403, f"Quota exceeded for {res}: Requested {wanted[res]}, but "
                                      f"already used {used[res]} of {limit} {res}")

    def _attach_networks(self, req: Request, server: Server, networks: Any) -> None:
        state = req.state
        model = state.profile.address_model
        if model in ("nova_floating", "access_ip"):  # no neutron: nova hands out addresses
            if networks not in (None, "auto", "none", []):
                raise self.c.error(400, "This cloud does not support choosing networks")
            for net in state.bootable_networks():
                ip = net.pool.allocate()
                if ip is None:
                    raise self.c.error(409, f"No more fixed IPs in network {net.name}")
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
                raise self.c.error(409, "Multiple possible networks found, use a Network ID to "
                                      "be more specific.")
            refs = [{"uuid": n.id} for n in candidates]
        elif isinstance(networks, list) and all(isinstance(n, dict) for n in networks):
            refs = networks
        else:
            raise self.c.error(400, "Invalid input for field/attribute networks.")
        # Validate every reference before creating anything, so a bad one leaks no port.
        plan: list[Port | Network] = []
        for ref in refs:
            if ref.get("port"):
                existing = state.ports.get(str(ref["port"]))
                if existing is None:
                    raise self.c.error(400, f"Port {ref['port']} could not be found.")
                if existing.device_id:
                    raise self.c.error(409, f"Port {existing.id} is still in use.")
                plan.append(existing)
                continue
            wanted = state.networks.get(str(ref.get("uuid")))
            if wanted is None or not wanted.api_visible:
                raise self.c.error(400, f"Network {ref.get('uuid')} could not be found.")
            if wanted.router_external and not wanted.shared:
                raise self.c.error(403, f"It is not allowed to create an interface on "
                                      f"external network {wanted.id}")
            plan.append(wanted)
        ports: list[Port] = []
        for item in plan:
            made = state.create_port(item) if isinstance(item, Network) else item
            if made is None:
                for p in ports:
                    if not p.device_id:
                        state.delete_port(p.id)
                raise self.c.error(409, f"No more IP addresses available on network {item.id}.")
            ports.append(made)
        for made in ports:
            made.device_id = server.id
            made.device_owner = "compute:nova"
            server.port_ids.append(made.id)


class ServerMetadataRoutes(ComputeRoutes):
    """A server's metadata, whole or one item."""

    def _meta_body(self, req: Request, key: str) -> dict[str, str]:
        data = req.json_object(key)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise self.c.error(400, f"Invalid input for field/attribute {key}.")
        return data

    @handles("GET", "/v2.1/servers/([^/]+)/metadata")
    def get_metadata(self, req: Request) -> Response:
        with req.state.lock:
            meta = dict(self.c.find_server(req, req.params[0]).metadata)
        return self.c.respond(req, 200, {"metadata": meta})

    @handles("POST", "/v2.1/servers/([^/]+)/metadata")
    def merge_metadata(self, req: Request) -> Response:
        new = self._meta_body(req, "metadata")
        with req.state.lock:
            server = self.c.find_server(req, req.params[0])
            server.metadata.update(new)
            server.touch(time.time())
            meta = dict(server.metadata)
        return self.c.respond(req, 200, {"metadata": meta})

    @handles("PUT", "/v2.1/servers/([^/]+)/metadata")
    def replace_metadata(self, req: Request) -> Response:
        new = self._meta_body(req, "metadata")
        with req.state.lock:
            server = self.c.find_server(req, req.params[0])
            server.metadata = dict(new)
            server.touch(time.time())
        return self.c.respond(req, 200, {"metadata": new})

    @handles("GET", "/v2.1/servers/([^/]+)/metadata/([^/]+)")
    def get_meta_item(self, req: Request) -> Response:
        with req.state.lock:
            meta = self.c.find_server(req, req.params[0]).metadata
            if req.params[1] not in meta:
                raise self.c.error(404, "Metadata item was not found")
            return self.c.respond(req, 200, {"meta": {req.params[1]: meta[req.params[1]]}})

    @handles("PUT", "/v2.1/servers/([^/]+)/metadata/([^/]+)")
    def set_meta_item(self, req: Request) -> Response:
        new = self._meta_body(req, "meta")
        if list(new) != [req.params[1]]:
            raise self.c.error(400, "Request body and URI mismatch")
        with req.state.lock:
            server = self.c.find_server(req, req.params[0])
            server.metadata.update(new)
            server.touch(time.time())
        return self.c.respond(req, 200, {"meta": new})

    @handles("DELETE", "/v2.1/servers/([^/]+)/metadata/([^/]+)")
    def delete_meta_item(self, req: Request) -> Response:
        with req.state.lock:
            server = self.c.find_server(req, req.params[0])
            if server.metadata.pop(req.params[1], None) is None:
                raise self.c.error(404, "Metadata item was not found")
            server.touch(time.time())
        return self.c.respond(req, 204, None)

"""Network v2.0 (neutron): networks, subnets, ports, routers, security groups; floating IPs
are listed here and changed in `network_fips.py`.

Served only by clouds whose address model has a network service. Errors use neutron's
`{"NeutronError": {"type", "message", "detail"}}` body.
"""

from __future__ import annotations

import time
from typing import Any

from nodepool_ng.simcloud.http import ApiError, Request, Response, Service
from nodepool_ng.simcloud.state import CloudState, FloatingIP, Network, Port, iso

_TYPES = {400: "HTTPBadRequest", 401: "HTTPUnauthorized", 403: "HTTPForbidden",
          404: "HTTPNotFound", 405: "HTTPMethodNotAllowed", 409: "HTTPConflict",
          500: "HTTPInternalServerError"}
_PAGING = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}


def _matches(view: dict[str, Any], query: dict[str, list[str]]) -> bool:
    for key, wanted in query.items():
        if key in _PAGING or key not in view:
            continue
        value = view[key]
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(
            value)
        if text not in [w.lower() if isinstance(value, bool) else w for w in wanted]:
            return False
    return True


class NetworkService(Service):
    name = "network"
    prefix = "/network"

    def __init__(self) -> None:
        super().__init__()
        self.route("GET", "/?", self.versions)
        for kind in ("networks", "subnets", "ports", "floatingips", "routers",
                     "security-groups"):
            self.route("GET", f"/v2.0/{kind}", self._lister(kind))
            self.route("GET", f"/v2.0/{kind}/([^/]+)", self._shower(kind))
        self.route("GET", "/v2.0/extensions", self.extensions)
        self.route("POST", "/v2.0/ports", self.create_port)
        self.route("PUT", "/v2.0/ports/([^/]+)", self.update_port)
        self.route("DELETE", "/v2.0/ports/([^/]+)", self.delete_port)

    def error(self, status: int, message: str, kind: str | None = None) -> ApiError:
        return ApiError(status, {"NeutronError": {
            "type": kind or _TYPES.get(status, "HTTPError"), "message": message, "detail": ""}})

    def versions(self, req: Request) -> Response:
        return Response(200, {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [
            {"rel": "self", "href": f"{req.base_url}/network/v2.0/"}]}]})

    def extensions(self, req: Request) -> Response:
        names = ("router", "external-net", "standard-attr-tag", "port-security")
        return Response(200, {"extensions": [
            {"alias": n, "name": n, "description": n, "links": [], "updated": "2020-01-01"}
            for n in names]})

    # --- views ----------------------------------------------------------------------------

    def _common(self, state: CloudState, created: float) -> dict[str, Any]:
        return {"tenant_id": state.project_id, "project_id": state.project_id,
                "description": "", "tags": [], "created_at": iso(created),
                "updated_at": iso(created), "revision_number": 1}

    def network_view(self, state: CloudState, n: Network) -> dict[str, Any]:
        out = self._common(state, n.created)
        out.update({"id": n.id, "name": n.name, "status": "ACTIVE", "admin_state_up": True,
                    "subnets": [n.subnet_id], "shared": n.shared,
                    "router:external": n.router_external, "mtu": 1500,
                    "port_security_enabled": True, "availability_zones": ["nova"],
                    "is_default": n.router_external, "l2_adjacency": True})
        return out

    def subnet_view(self, state: CloudState, n: Network) -> dict[str, Any]:
        out = self._common(state, n.created)
        hosts = n.pool.network
        out.update({"id": n.subnet_id, "name": f"{n.name}-subnet", "network_id": n.id,
                    "cidr": str(hosts), "ip_version": 4, "gateway_ip": n.pool.gateway,
                    "enable_dhcp": True, "dns_nameservers": [], "host_routes": [],
                    "allocation_pools": [{"start": str(hosts.network_address + 2),
                                          "end": str(hosts.broadcast_address - 1)}],
                    "ipv6_ra_mode": None, "ipv6_address_mode": None, "subnetpool_id": None})
        return out

    def port_view(self, state: CloudState, p: Port, now: float) -> dict[str, Any]:
        server = state.servers.get(p.device_id) if p.device_id else None
        status = "ACTIVE" if server is not None and server.status(now) == "ACTIVE" else "DOWN"
        out = self._common(state, p.created)
        out.update({"id": p.id, "name": p.name, "network_id": p.network_id,
                    "device_id": p.device_id, "device_owner": p.device_owner,
                    "status": status, "mac_address": p.mac, "admin_state_up": True,
                    "fixed_ips": [{"subnet_id": state.networks[p.network_id].subnet_id,
                                   "ip_address": p.ip}],
                    "security_groups": [], "allowed_address_pairs": [],
                    "extra_dhcp_opts": [], "binding:vnic_type": "normal",
                    "port_security_enabled": True, "dns_name": ""})
        return out

    def fip_view(self, state: CloudState, f: FloatingIP) -> dict[str, Any]:
        out = self._common(state, f.created)
        out.update({"id": f.id, "floating_ip_address": f.address,
                    "floating_network_id": f.network_id, "router_id": None,
                    "port_id": f.port_id, "fixed_ip_address": f.fixed_ip,
                    "status": "ACTIVE" if f.port_id else "DOWN", "port_details": None,
                    "dns_name": "", "dns_domain": ""})
        return out

    def _views(self, state: CloudState, kind: str) -> dict[str, dict[str, Any]]:
        now = time.time()
        nets = [n for n in state.networks.values() if n.api_visible]
        if kind == "networks":
            return {n.id: self.network_view(state, n) for n in nets}
        if kind == "subnets":
            return {n.subnet_id: self.subnet_view(state, n) for n in nets}
        if kind == "ports":
            return {p.id: self.port_view(state, p, now) for p in state.ports.values()}
        if kind == "floatingips":
            return {f.id: self.fip_view(state, f) for f in state.floating_ips.values()}
        if kind == "routers":
            return {}
        sg = self._common(state, 0)
        sg.update({"id": "00000000-0000-0000-0000-000000000001", "name": "default",
                   "security_group_rules": [], "stateful": True})
        return {sg["id"]: sg}

    def _lister(self, kind: str) -> Any:
        key = kind.replace("-", "_")

        def handler(req: Request) -> Response:
            with req.state.lock:
                views = [v for v in self._views(req.state, kind).values()
                         if _matches(v, req.query)]
            return Response(200, {key: views})
        return handler

    def _shower(self, kind: str) -> Any:
        key = kind.replace("-", "_")[:-1]
        label = {"networks": "Network", "subnets": "Subnet", "ports": "Port",
                 "floatingips": "Floating IP", "routers": "Router",
                 "security-groups": "Security group"}[kind]

        def handler(req: Request) -> Response:
            with req.state.lock:
                view = self._views(req.state, kind).get(req.params[0])
            if view is None:
                raise self.error(404, f"{label} {req.params[0]} could not be found.",
                                 f"{label.replace(' ', '')}NotFound")
            return Response(200, {key: view})
        return handler

    def find_network(self, state: CloudState, network_id: Any) -> Network:
        """A network this project sees, or neutron's 404."""
        net = state.networks.get(str(network_id))
        if net is None or not net.api_visible:
            raise self.error(404, f"Network {network_id} could not be found.", "NetworkNotFound")
        return net

    # --- ports ----------------------------------------------------------------------------

    def create_port(self, req: Request) -> Response:
        body = req.json_object("port")
        state = req.state
        with state.lock:
            net = self.find_network(state, body.get("network_id"))
            port = state.create_port(net, name=str(body.get("name") or ""))
            if port is None:
                raise self.error(409, f"No more IP addresses available on network {net.id}.",
                                 "IpAddressGenerationFailure")
            port.device_id = str(body.get("device_id") or "")
            port.device_owner = str(body.get("device_owner") or "")
            view = self.port_view(state, port, time.time())
        return Response(201, {"port": view})

    def find_port(self, state: CloudState, port_id: str) -> Port:
        port = state.ports.get(port_id)
        if port is None:
            raise self.error(404, f"Port {port_id} could not be found.", "PortNotFound")
        return port

    def update_port(self, req: Request) -> Response:
        body = req.json_object("port")
        with req.state.lock:
            port = self.find_port(req.state, req.params[0])
            for field in ("name", "device_id", "device_owner"):
                if field in body:
                    setattr(port, field, str(body[field] or ""))
            view = self.port_view(req.state, port, time.time())
        return Response(200, {"port": view})

    def delete_port(self, req: Request) -> Response:
        state = req.state
        with state.lock:
            port = self.find_port(state, req.params[0])
            server = state.servers.get(port.device_id)
            if server is not None and port.id in server.port_ids:
                server.port_ids.remove(port.id)
            state.delete_port(port.id)
        return Response(204, None)

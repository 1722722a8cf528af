"""Inspection and fault-injection endpoint, `/_admin/...` on every cloud's port (no auth).

    GET  /_admin/servers | ports | floating_ips | images | networks | summary | stats
    GET  /_admin/faults      PUT /_admin/faults   {"error_rate": {"compute": 0.5}, ...}
                             ("method_error_rate": {"DELETE": 1.0}: that method, any service)
    GET  /_admin/quota       PUT /_admin/quota    {"instances": 5, "cores": -1, "ram": -1}
    GET  /_admin/boot        PUT /_admin/boot     {"delay": 0.5, "jitter": 0.1}
    DELETE /_admin/deleted_servers   forget deleted servers (`changes-since` no longer shows
                                     them, as after their tombstones expired)

PUT bodies are partial updates, validated like the profile file.
"""

from __future__ import annotations

import time
from typing import Any

import voluptuous as v

from nodepool_ng.simcloud.http import Request, Response, Service
from nodepool_ng.simcloud.profile import SERVICES
from nodepool_ng.simcloud.state import CloudState, iso

_rate = v.All(v.Coerce(float), v.Range(min=0.0, max=1.0))
_seconds = v.All(v.Coerce(float), v.Range(min=0.0))
_limit = v.All(int, v.Range(min=-1))
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")
FAULTS = v.Schema({v.Optional("error_rate"): {v.In(SERVICES): _rate},
                   v.Optional("method_error_rate"): {v.In(METHODS): _rate},
                   v.Optional("server_error_rate"): _rate, v.Optional("slow_rate"): _rate,
                   v.Optional("slow_delay"): _seconds})
QUOTA = v.Schema({v.Optional(k): _limit for k in ("instances", "cores", "ram")})
BOOT = v.Schema({v.Optional("delay"): _seconds, v.Optional("jitter"): _seconds})


def servers_view(state: CloudState) -> list[dict[str, Any]]:
    now = time.time()
    out = []
    for s in state.servers.values():
        addrs = state.server_addresses(s)
        status = s.status(now)
        item: dict[str, Any] = {
            "id": s.id, "name": s.name, "status": status, "flavor": s.flavor.name,
            "image_id": s.image_id, "metadata": dict(s.metadata), "key_name": s.key_name,
            "created": iso(s.created), "port_ids": list(s.port_ids),
            "addresses": {net: [a["addr"] for a in entries] for net, entries in addrs.items()},
            "access_ipv4": s.access_ipv4, "user_data": s.user_data,
            "config_drive": s.config_drive,
        }
        if status == "ERROR":
            item["fault"] = s.fault_message
        out.append(item)
    return out


class AdminService(Service):
    name = "admin"
    prefix = "/_admin"
    requires_auth = False

    def __init__(self) -> None:
        super().__init__()
        self.route("GET", "/servers", self.servers)
        self.route("GET", "/ports", self.ports)
        self.route("GET", "/floating_ips", self.floating_ips)
        self.route("GET", "/images", self.images)
        self.route("GET", "/networks", self.networks)
        self.route("GET", "/summary", self.summary)
        self.route("GET", "/stats", self.stats)
        self.route("GET", "/faults", self.get_faults)
        self.route("PUT", "/faults", self.set_faults)
        self.route("GET", "/quota", self.get_quota)
        self.route("PUT", "/quota", self.set_quota)
        self.route("GET", "/boot", self.get_boot)
        self.route("PUT", "/boot", self.set_boot)
        self.route("DELETE", "/deleted_servers", self.forget_deleted_servers)

    def servers(self, req: Request) -> Response:
        with req.state.lock:
            return Response(200, {"servers": servers_view(req.state)})

    def ports(self, req: Request) -> Response:
        st = req.state
        with st.lock:
            ports = [{"id": p.id, "network": st.networks[p.network_id].name, "ip": p.ip,
                      "device_id": p.device_id, "device_owner": p.device_owner,
                      "name": p.name} for p in st.ports.values()]
        return Response(200, {"ports": ports})

    def floating_ips(self, req: Request) -> Response:
        with req.state.lock:
            fips = [{"id": f.id, "address": f.address, "port_id": f.port_id,
                     "fixed_ip": f.fixed_ip, "server_id": f.server_id,
                     "api": "compute" if f.nova else "network"}
                    for f in req.state.floating_ips.values()]
        return Response(200, {"floating_ips": fips})

    def images(self, req: Request) -> Response:
        with req.state.lock:
            images = [{"id": i.id, "name": i.name, "status": i.status,
                       "disk_format": i.disk_format, "size": i.size, "tags": list(i.tags),
                       "properties": dict(i.properties)} for i in req.state.images.values()]
        return Response(200, {"images": images})

    def networks(self, req: Request) -> Response:
        with req.state.lock:
            nets = [{"id": n.id, "name": n.name, "router_external": n.router_external,
                     "shared": n.shared, "cidr": str(n.pool.network),
                     "network_api": n.api_visible} for n in req.state.networks.values()]
        return Response(200, {"networks": nets})

    def summary(self, req: Request) -> Response:
        st = req.state
        with st.lock:
            body = {"cloud": st.profile.name, "address_model": st.profile.address_model,
                    "image_formats": list(st.profile.image_formats),
                    "image_upload": st.profile.image_upload,
                    "servers": len(st.servers), "deleted_servers": len(st.deleted_servers),
                    "ports": len(st.ports),
                    "floating_ips": len(st.floating_ips), "images": len(st.images),
                    "usage": st.usage()}
        return Response(200, body)

    def forget_deleted_servers(self, req: Request) -> Response:
        with req.state.lock:
            forgotten = len(req.state.deleted_servers)
            req.state.deleted_servers.clear()
        return Response(200, {"forgotten": forgotten})

    def stats(self, req: Request) -> Response:
        st = req.state
        with st.lock:
            now = time.time()
            errored = sum(1 for s in st.servers.values() if s.status(now) == "ERROR")
            body = {"requests": dict(st.requests), "injected_errors": dict(st.injected),
                    "error_servers": errored}
        return Response(200, body)

    def _validated(self, req: Request, schema: v.Schema) -> dict[str, Any]:
        data = req.json()
        try:
            return dict(schema(data))
        except v.MultipleInvalid as e:
            err = e.errors[0]
            path = ".".join(str(p) for p in err.path) or "<body>"
            raise self.error(400, f"{path}: {err.msg}") from None

    def get_faults(self, req: Request) -> Response:
        with req.state.lock:
            faults = dict(req.state.faults)
            faults["error_rate"] = dict(faults["error_rate"])
            faults["method_error_rate"] = dict(faults["method_error_rate"])
        return Response(200, faults)

    def set_faults(self, req: Request) -> Response:
        new = self._validated(req, FAULTS)
        with req.state.lock:
            faults = req.state.faults
            faults["error_rate"].update(new.pop("error_rate", {}))
            faults["method_error_rate"].update(new.pop("method_error_rate", {}))
            faults.update(new)
        return self.get_faults(req)

    def get_quota(self, req: Request) -> Response:
        with req.state.lock:
            return Response(200, dict(req.state.quota))

    def set_quota(self, req: Request) -> Response:
        new = self._validated(req, QUOTA)
        with req.state.lock:
            req.state.quota.update(new)
        return self.get_quota(req)

    def get_boot(self, req: Request) -> Response:
        with req.state.lock:
            return Response(200, dict(req.state.boot))

    def set_boot(self, req: Request) -> Response:
        new = self._validated(req, BOOT)
        with req.state.lock:
            req.state.boot.update(new)
        return self.get_boot(req)

"""Compute v2.1 extras: keypairs, server actions, and the old os-floating-ips API.

os-floating-ips / os-floating-ip-pools exist only on the `nova_floating` cloud (no network
service) and, as in real nova, only below microversion 2.36.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
from typing import Any

from nodepool_ng.simcloud.compute import ComputeRoutes
from nodepool_ng.simcloud.http import Request, Response, handles
from nodepool_ng.simcloud.state import FloatingIP, Keypair, iso, new_id

POOL = "public"


def _fingerprint(public_key: str) -> str | None:
    parts = public_key.split()
    if len(parts) < 2:
        return None
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return None
    digest = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def _generate_key() -> tuple[str, str]:
    import paramiko  # only when a client asks nova to generate a key

    key = paramiko.RSAKey.generate(2048)
    out = io.StringIO()
    key.write_private_key(out)
    return f"{key.get_name()} {key.get_base64()} Generated-by-simcloud", out.getvalue()


class ComputeExtras(ComputeRoutes):
    """Keypairs, server actions, os-floating-ips."""

    # --- keypairs -------------------------------------------------------------------------

    def _kp_view(self, kp: Keypair, private: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": kp.name, "public_key": kp.public_key,
                               "fingerprint": kp.fingerprint, "type": kp.type}
        if private:
            out["private_key"] = private
        return out

    @handles("GET", "/v2.1/os-keypairs")
    def list_keypairs(self, req: Request) -> Response:
        with req.state.lock:
            kps = [{"keypair": self._kp_view(k)} for k in req.state.keypairs.values()]
        return self.c.respond(req, 200, {"keypairs": kps})

    @handles("POST", "/v2.1/os-keypairs")
    def create_keypair(self, req: Request) -> Response:
        body = req.json_object("keypair")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise self.c.error(400, "Invalid input for field/attribute name. "
                                    "'name' is a required property")
        private = None
        public_key = body.get("public_key")
        if public_key is None:
            public_key, private = _generate_key()
        fingerprint = _fingerprint(str(public_key))
        if fingerprint is None:
            raise self.c.error(400, "Keypair data is invalid: failed to generate fingerprint")
        with req.state.lock:
            if name in req.state.keypairs:
                raise self.c.error(409, f"Key pair '{name}' already exists.")
            kp = Keypair(name, str(public_key), fingerprint, time.time(),
                         str(body.get("type", "ssh")))
            req.state.keypairs[name] = kp
        status = 201 if self.c.microversion(req) >= (2, 2) else 200
        return self.c.respond(req, status, {"keypair": self._kp_view(kp, private)})

    @handles("GET", "/v2.1/os-keypairs/([^/]+)")
    def show_keypair(self, req: Request) -> Response:
        kp = req.state.keypairs.get(req.params[0])
        if kp is None:
            raise self.c.error(404, f"Keypair {req.params[0]} not found for user "
                                    f"{req.state.user_id}")
        view = self._kp_view(kp)
        view.update({"created_at": iso(kp.created), "deleted": False, "id": 1,
                     "user_id": req.state.user_id})
        return self.c.respond(req, 200, {"keypair": view})

    @handles("DELETE", "/v2.1/os-keypairs/([^/]+)")
    def delete_keypair(self, req: Request) -> Response:
        with req.state.lock:
            if req.state.keypairs.pop(req.params[0], None) is None:
                raise self.c.error(404, f"Keypair {req.params[0]} not found for user "
                                        f"{req.state.user_id}")
        return self.c.respond(req, 202 if self.c.microversion(req) < (2, 2) else 204, None)

    # --- actions --------------------------------------------------------------------------

    @handles("POST", "/v2.1/servers/([^/]+)/action")
    def action(self, req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict) or len(body) != 1:
            raise self.c.error(400, "Malformed request body: expected one action")
        (name, args), = body.items()
        with req.state.lock:
            server = self.c.find_server(req, req.params[0])
            if name == "os-getConsoleOutput":
                status = server.status(time.time())
                lines = [f"[    0.000000] simcloud: booting {server.name} ({server.id})",
                         f"[    0.100000] simcloud: flavor {server.flavor.name}"]
                if status != "BUILD":
                    lines.append(f"[    1.000000] simcloud: server is {status}")
                length = (args or {}).get("length") if isinstance(args, dict) else None
                if length is not None:
                    try:
                        lines = lines[-int(length):] if int(length) > 0 else []
                    except (TypeError, ValueError):
                        raise self.c.error(400, "Invalid input for field/attribute length.") \
                            from None
                return self.c.respond(req, 200, {"output": "\n".join(lines) + "\n"})
            if name in ("reboot", "os-start", "os-stop", "createBackup", "lock", "unlock"):
                return self.c.respond(req, 202, None)
            if name == "addFloatingIp":
                return self._add_fip(req, server.id, args)
            if name == "removeFloatingIp":
                return self._remove_fip(req, server.id, args)
        raise self.c.error(400, f"Unsupported server action {name}")

    # --- os-floating-ips (nova-network era) -----------------------------------------------

    def _require_nova_net(self, req: Request) -> None:
        if (req.state.profile.address_model != "nova_floating"
                or self.c.microversion(req) >= (2, 36)):
            raise self.c.error(404, "The resource could not be found.")

    def _fip_view(self, f: FloatingIP) -> dict[str, Any]:
        return {"id": f.id, "ip": f.address, "pool": f.network_id, "fixed_ip": f.fixed_ip,
                "instance_id": f.server_id}

    @handles("GET", "/v2.1/os-floating-ip-pools")
    def list_pools(self, req: Request) -> Response:
        self._require_nova_net(req)
        return self.c.respond(req, 200, {"floating_ip_pools": [{"name": POOL}]})

    @handles("GET", "/v2.1/os-floating-ips")
    def list_fips(self, req: Request) -> Response:
        self._require_nova_net(req)
        with req.state.lock:
            fips = [self._fip_view(f) for f in req.state.floating_ips.values()]
        return self.c.respond(req, 200, {"floating_ips": fips})

    @handles("POST", "/v2.1/os-floating-ips")
    def create_fip(self, req: Request) -> Response:
        self._require_nova_net(req)
        body = req.json() if req.body else {}
        pool = (body or {}).get("pool") or POOL if isinstance(body, dict) else None
        if pool != POOL:
            raise self.c.error(404, f"Floating IP pool not found: {pool}")
        with req.state.lock:
            addr = req.state.public_pool.allocate()
            if addr is None:
                raise self.c.error(404, "No more floating IPs in pool public.")
            fip = FloatingIP(new_id(), addr, POOL, time.time(), nova=True)
            req.state.floating_ips[fip.id] = fip
        return self.c.respond(req, 200, {"floating_ip": self._fip_view(fip)})

    @handles("GET", "/v2.1/os-floating-ips/([^/]+)")
    def show_fip(self, req: Request) -> Response:
        self._require_nova_net(req)
        fip = req.state.floating_ips.get(req.params[0])
        if fip is None:
            raise self.c.error(404, f"Floating IP not found for ID {req.params[0]}")
        return self.c.respond(req, 200, {"floating_ip": self._fip_view(fip)})

    @handles("DELETE", "/v2.1/os-floating-ips/([^/]+)")
    def delete_fip(self, req: Request) -> Response:
        self._require_nova_net(req)
        with req.state.lock:
            fip = req.state.floating_ips.pop(req.params[0], None)
            if fip is None:
                raise self.c.error(404, f"Floating IP not found for ID {req.params[0]}")
            req.state.public_pool.release(fip.address)
        return self.c.respond(req, 202, None)

    def _find_by_address(self, req: Request, args: Any) -> FloatingIP:
        address = args.get("address") if isinstance(args, dict) else None
        if not address:
            raise self.c.error(400, "Invalid input for field/attribute address.")
        for fip in req.state.floating_ips.values():
            if fip.address == address:
                return fip
        raise self.c.error(404, f"Floating IP not found for address {address}.")

    def _add_fip(self, req: Request, server_id: str, args: Any) -> Response:
        self._require_nova_net(req)
        fip = self._find_by_address(req, args)
        server = req.state.servers[server_id]
        fixed = args.get("fixed_address") or (server.fixed[0][1] if server.fixed else None)
        if fixed is None or fixed not in [ip for _, ip in server.fixed]:
            raise self.c.error(400, f"No nw_info cache associated with instance {server_id}")
        if fip.server_id and fip.server_id != server_id:
            raise self.c.error(400, f"Floating IP {fip.address} is associated with another "
                                    "instance")
        fip.server_id, fip.fixed_ip = server_id, fixed
        return self.c.respond(req, 202, None)

    def _remove_fip(self, req: Request, server_id: str, args: Any) -> Response:
        self._require_nova_net(req)
        fip = self._find_by_address(req, args)
        if fip.server_id != server_id:
            raise self.c.error(409, f"Floating IP {fip.address} is not associated with "
                                    f"instance {server_id}.")
        fip.server_id = fip.fixed_ip = None
        return self.c.respond(req, 202, None)

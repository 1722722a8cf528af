"""Thread-safe in-memory state of one simulated cloud.

One `CloudState` per cloud; every mutation happens under `state.lock`. Server status is
computed lazily from timestamps (no timer per server), so thousands of servers cost nothing
while they "boot".
"""

from __future__ import annotations

import functools
import ipaddress
import random
import threading
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from nodepool_ng.simcloud.profile import CloudProfile, FlavorProfile

TOMBSTONE_TTL = 3600.0  # seconds a deleted server stays visible to `changes-since`
MAX_TOMBSTONES = 10_000  # and at most this many of them (the oldest go first)


def new_id() -> str:
    return str(uuid.uuid4())


def iso(ts: float) -> str:
    return _iso_seconds(int(ts))


@functools.lru_cache(maxsize=8192)
def _iso_seconds(seconds: int) -> str:  # cached: gmtime dominated listing 1,000 servers
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class AddressPool:
    """Hands out host addresses of one loopback CIDR (gateway .1 excluded), reusing freed ones."""

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr)
        self.gateway = str(self.network.network_address + 1)
        self._next = int(self.network.network_address) + 2
        self._last = int(self.network.broadcast_address) - 1
        self._free: list[int] = []

    def allocate(self) -> str | None:
        if self._free:
            return str(ipaddress.ip_address(self._free.pop()))
        if self._next > self._last:
            return None
        self._next += 1
        return str(ipaddress.ip_address(self._next - 1))

    def release(self, address: str) -> None:
        self._free.append(int(ipaddress.ip_address(address)))


@dataclass
class Network:
    id: str
    name: str
    router_external: bool
    shared: bool
    pool: AddressPool
    subnet_id: str
    created: float
    api_visible: bool = True  # False: only nova knows it (clouds without a network service)


@dataclass
class Port:
    id: str
    network_id: str
    ip: str
    mac: str
    created: float
    name: str = ""
    device_id: str = ""
    device_owner: str = ""


@dataclass
class FloatingIP:
    id: str
    address: str
    network_id: str  # neutron: floating network id; nova: pool name
    created: float
    port_id: str | None = None
    fixed_ip: str | None = None
    server_id: str | None = None
    nova: bool = False  # allocated through the compute os-floating-ips API


@dataclass
class Server:
    id: str
    name: str
    flavor: FlavorProfile
    image_id: str
    created: float
    ready_at: float
    will_error: bool
    key_name: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    user_data: str | None = None
    config_drive: bool = False
    availability_zone: str = "nova"
    port_ids: list[str] = field(default_factory=list)
    fixed: list[tuple[str, str]] = field(default_factory=list)  # (network name, ip) w/o neutron
    access_ipv4: str = ""
    fault_message: str = "Injected fault: simulated hypervisor failure"
    # Nova never answers ACTIVE to the first read after a create: clients (upstream
    # Nodepool) rely on seeing BUILD first and then re-reading the server in full.
    reported: bool = False
    reported_at: float = 0.0  # time of that first read
    changed_at: float = 0.0  # last explicit change (create, rename, metadata); 0: created

    def api_status(self, now: float) -> str:
        """The status the compute API shows: BUILD on the first read, whatever the timing."""
        status = "BUILD" if not self.reported else self.status(now)
        if not self.reported:
            self.reported, self.reported_at = True, now
        return status

    def touch(self, now: float) -> None:
        self.changed_at = now

    def updated_at(self, now: float) -> float:
        """Nova's `updated_at`: the last change, including the move out of BUILD, which the
        API shows at `ready_at` or, if the first read came later, right after that read."""
        updated = max(self.created, self.changed_at)
        if self.reported and now >= self.ready_at:
            updated = max(updated, self.ready_at, self.reported_at)
        return updated

    def status(self, now: float) -> str:
        if now < self.ready_at:
            return "BUILD"
        return "ERROR" if self.will_error else "ACTIVE"


@dataclass
class DeletedServer:
    """What the compute API still shows of a deleted server (`changes-since` lists)."""
    server: Server
    deleted_at: float


@dataclass
class Image:
    id: str
    name: str
    created: float
    status: str = "queued"
    disk_format: str | None = None
    container_format: str | None = None
    size: int | None = None
    checksum: str | None = None
    hash_value: str | None = None
    visibility: str = "private"
    min_disk: int = 0
    min_ram: int = 0
    protected: bool = False
    tags: list[str] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    updated: float = 0.0


@dataclass
class Task:
    id: str
    type: str
    input: dict[str, Any]
    created: float
    status: str = "pending"
    result: dict[str, Any] | None = None
    message: str = ""
    polled: int = 0


@dataclass
class Keypair:
    name: str
    public_key: str
    fingerprint: str
    created: float
    type: str = "ssh"


class CloudState:
    """All resources of one cloud plus its runtime-changeable behaviour (faults, quota, boot)."""

    def __init__(self, profile: CloudProfile) -> None:
        self.profile = profile
        self.lock = threading.RLock()
        self.rng = random.Random(profile.seed)
        self.project_id = uuid.uuid5(uuid.NAMESPACE_DNS, f"{profile.name}.project").hex
        self.user_id = uuid.uuid5(uuid.NAMESPACE_DNS, f"{profile.name}.user").hex
        self.tokens: dict[str, tuple[float, dict[str, Any]]] = {}
        self.flavors = {f.id: f for f in profile.flavors}
        self.networks: dict[str, Network] = {}
        self.ports: dict[str, Port] = {}
        self.floating_ips: dict[str, FloatingIP] = {}
        self.servers: dict[str, Server] = {}
        # Deleted servers, oldest first, for `changes-since` (Nova keeps soft-deleted rows
        # until archived): kept `tombstone_ttl` seconds, at most `max_tombstones`.
        self.deleted_servers: OrderedDict[str, DeletedServer] = OrderedDict()
        self.tombstone_ttl = TOMBSTONE_TTL
        self.max_tombstones = MAX_TOMBSTONES
        self.images: dict[str, Image] = {}
        self.image_data: dict[str, bytes] = {}
        self.tasks: dict[str, Task] = {}
        self.keypairs: dict[str, Keypair] = {}
        self.objects: dict[str, dict[str, tuple[bytes, dict[str, str]]]] = {}
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.faults: dict[str, Any] = {
            "error_rate": dict(profile.faults.error_rate),
            "server_error_rate": profile.faults.server_error_rate,
            "slow_rate": profile.faults.slow_rate,
            "slow_delay": profile.faults.slow_delay,
            "method_error_rate": {},  # HTTP method -> rate, every service (admin API only)
        }
        self.quota = {"instances": profile.quota.instances, "cores": profile.quota.cores,
                      "ram": profile.quota.ram}
        self.boot = {"delay": profile.boot_delay, "jitter": profile.boot_jitter}
        self._mac = 0
        self.public_pool = AddressPool(profile.public_cidr)
        self._build_networks()
        for spec in profile.images:
            now = time.time()
            img = Image(str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{profile.name}.image.{spec.name}")),
                        spec.name, now, status="active", disk_format=spec.disk_format,
                        container_format="bare", size=0, min_ram=spec.min_ram, updated=now,
                        visibility="public")
            self.images[img.id] = img

    # --- networks -------------------------------------------------------------------------

    def _add_network(self, name: str, cidr: str, external: bool, shared: bool,
                     visible: bool) -> Network:
        pool = self.public_pool if cidr == self.profile.public_cidr else AddressPool(cidr)
        net = Network(new_id(), name, external, shared, pool, new_id(), time.time(),
                      api_visible=visible)
        self.networks[net.id] = net
        return net

    def _build_networks(self) -> None:
        p = self.profile
        model = p.address_model
        if model in ("external", "external_private"):
            self._add_network("public", p.public_cidr, True, True, True)
            if model == "external_private":
                self._add_network("private", p.private_cidr, False, False, True)
        elif model == "floating":
            self._add_network("private", p.private_cidr, False, False, True)
            self._add_network("public", p.public_cidr, True, False, True)
        elif model == "nova_floating":
            self._add_network("private", p.private_cidr, False, False, False)
        else:  # access_ip: routable address, no network API at all
            self._add_network("public", p.public_cidr, True, True, False)
            self._add_network("private", p.private_cidr, False, False, False)

    def network_by_name_or_id(self, ref: str) -> Network | None:
        if ref in self.networks:
            return self.networks[ref]
        for net in self.networks.values():
            if net.name == ref:
                return net
        return None

    def bootable_networks(self) -> list[Network]:
        """Networks nova picks from when a create names none (shared or owned, not floating)."""
        if self.profile.address_model == "access_ip":
            return list(self.networks.values())
        return [n for n in self.networks.values() if n.shared or not n.router_external]

    def next_mac(self) -> str:
        self._mac += 1
        m = self._mac
        return f"fa:16:3e:{(m >> 16) & 255:02x}:{(m >> 8) & 255:02x}:{m & 255:02x}"

    def create_port(self, net: Network, name: str = "") -> Port | None:
        ip = net.pool.allocate()
        if ip is None:
            return None
        port = Port(new_id(), net.id, ip, self.next_mac(), time.time(), name=name)
        self.ports[port.id] = port
        return port

    def delete_port(self, port_id: str) -> None:
        port = self.ports.pop(port_id, None)
        if port is None:
            return
        self.networks[port.network_id].pool.release(port.ip)
        for fip in self.floating_ips.values():
            if fip.port_id == port_id:  # neutron disassociates, never deletes
                fip.port_id = fip.fixed_ip = None

    # --- servers --------------------------------------------------------------------------

    def usage(self) -> dict[str, int]:
        servers = list(self.servers.values())
        return {"instances": len(servers), "cores": sum(s.flavor.vcpus for s in servers),
                "ram": sum(s.flavor.ram for s in servers)}

    def boot_time(self) -> float:
        jitter = self.boot["jitter"]
        return max(0.0, self.boot["delay"] + (self.rng.uniform(-jitter, jitter) if jitter else 0))

    def delete_server(self, server_id: str) -> bool:
        server = self.servers.pop(server_id, None)
        if server is None:
            return False
        now = time.time()
        self.deleted_servers[server_id] = DeletedServer(server, now)
        self.expire_tombstones(now)
        for port_id in server.port_ids:
            self.delete_port(port_id)
        for net_name, ip in server.fixed:
            for net in self.networks.values():
                if net.name == net_name:
                    net.pool.release(ip)
        for fip in self.floating_ips.values():
            if fip.server_id == server_id:
                fip.server_id = fip.fixed_ip = None
        return True

    def expire_tombstones(self, now: float) -> None:
        tombs = self.deleted_servers
        while tombs and (len(tombs) > self.max_tombstones
                         or next(iter(tombs.values())).deleted_at < now - self.tombstone_ttl):
            tombs.popitem(last=False)

    def server_addresses(self, server: Server) -> dict[str, list[dict[str, Any]]]:
        """Nova's `addresses`: fixed addresses per network name, floating ones after them."""
        out: dict[str, list[dict[str, Any]]] = {}
        for port_id in server.port_ids:
            port = self.ports.get(port_id)
            if port is None:
                continue
            net = self.networks[port.network_id]
            entries = out.setdefault(net.name, [])
            entries.append(_addr(port.ip, "fixed", port.mac))
            for fip in self.floating_ips.values():
                if fip.port_id == port.id:
                    entries.append(_addr(fip.address, "floating", port.mac))
        for net_name, ip in server.fixed:
            entries = out.setdefault(net_name, [])
            entries.append(_addr(ip, "fixed", "fa:16:3e:00:00:00"))
            for fip in self.floating_ips.values():
                if fip.server_id == server.id and fip.fixed_ip == ip:
                    entries.append(_addr(fip.address, "floating", "fa:16:3e:00:00:00"))
        return out

    # --- identity -------------------------------------------------------------------------

    def add_token(self, token_id: str, body: dict[str, Any]) -> None:
        with self.lock:
            now = time.time()
            self.tokens = {k: t for k, t in self.tokens.items() if t[0] > now}
            self.tokens[token_id] = (now + self.profile.token_ttl, body)

    def check_token(self, token_id: str | None) -> dict[str, Any] | None:
        if not token_id:
            return None
        entry = self.tokens.get(token_id)
        if entry is None or entry[0] <= time.time():
            return None
        return entry[1]

    # --- faults, counters ---------------------------------------------------------

    def faults_for(self, service: str, method: str = "GET") -> tuple[float, bool]:
        """(delay seconds, inject a 500?) for one `method` request to `service`."""
        if service == "admin":
            return 0.0, False
        with self.lock:
            delay = 0.0
            if self.faults["slow_rate"] and self.rng.random() < self.faults["slow_rate"]:
                delay = float(self.faults["slow_delay"])
            rate = max(self.faults["error_rate"].get(service, 0.0),
                       self.faults["method_error_rate"].get(method, 0.0))
            fail = bool(rate) and self.rng.random() < rate
            if fail:
                self.injected[service] += 1
            return delay, fail

    def count_request(self, service: str) -> None:
        with self.lock:
            self.requests[service] += 1


def _addr(ip: str, kind: str, mac: str) -> dict[str, Any]:
    return {"addr": ip, "version": 4, "OS-EXT-IPS:type": kind, "OS-EXT-IPS-MAC:mac_addr": mac}

"""What the clouds hold that no node record claims (servers, floating IPs, ports).

A server is claimed by the node record whose `external_id` is the server's id (on that node's
provider's cloud). A port is claimed when its device is a claimed server; a floating IP when
it is attached to a claimed server's port (or, nova-style, to a claimed server). Resources
present before the launchers started (the clouds' own) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodepool_ng.simcloud.service import SimCloudService


@dataclass(frozen=True)
class Resource:
    cloud: str
    kind: str  # server | floating_ip | port
    id: str
    detail: str


def inventory(sim: SimCloudService) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every server, floating IP and port: (cloud, kind, id) -> facts."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for cloud, state in sim.states.items():
        with state.lock:
            for s in state.servers.values():
                out[(cloud, "server", s.id)] = {
                    "node": s.metadata.get("nodepool_node_id"), "name": s.name,
                    "ports": list(s.port_ids), "error": s.will_error, "created": s.created}
            for p in state.ports.values():
                out[(cloud, "port", p.id)] = {"device": p.device_id, "owner": p.device_owner,
                                              "created": p.created}
            for f in state.floating_ips.values():
                out[(cloud, "floating_ip", f.id)] = {"port": f.port_id, "server": f.server_id,
                                                     "address": f.address, "created": f.created}
    return out


def unclaimed(
    sim: SimCloudService,
    nodes: dict[str, dict[str, Any]],
    provider_cloud: dict[str, str],
    baseline: set[tuple[str, str, str]],
) -> list[Resource]:
    inv = inventory(sim)
    claimed_servers = {
        (provider_cloud.get(n.get("provider") or "", "?"), n["external_id"])
        for n in nodes.values() if n.get("external_id")
    }
    claimed_ports = {
        (cloud, pid)
        for (cloud, kind, sid), facts in inv.items()
        if kind == "server" and (cloud, sid) in claimed_servers
        for pid in facts["ports"]
    }
    out = []
    for key, facts in sorted(inv.items()):
        cloud, kind, rid = key
        if key in baseline:
            continue
        if kind == "server":
            if (cloud, rid) in claimed_servers:
                continue
            node = nodes.get(facts["node"] or "")
            why = ("its node record is gone" if node is None else
                   f"its node {facts['node']} ({node.get('state')}) has external_id "
                   f"{node.get('external_id')}")
            out.append(Resource(cloud, kind, rid, f"name {facts['name']}, "
                                f"{'ERROR ' if facts['error'] else ''}{why}"))
        elif kind == "port":
            if (cloud, rid) in claimed_ports or (cloud, facts["device"]) in claimed_servers:
                continue
            out.append(Resource(cloud, kind, rid, f"device {facts['device'] or '-'} "
                                f"owner {facts['owner'] or '-'}"))
        else:
            if (cloud, facts["port"]) in claimed_ports or (
                    cloud, facts["server"]) in claimed_servers:
                continue
            out.append(Resource(cloud, kind, rid, f"{facts['address']} port "
                                f"{facts['port'] or '-'}"))
    return out

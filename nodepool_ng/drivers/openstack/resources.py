"""OpenStack resources other than servers: floating IPs, ports and images, and which of
them the launcher's leak cleanup may delete: with `clean-floating-ips`, floating IPs on no
port; with `port-cleanup-interval`, DOWN ports nobody or nova owns that no live server
uses (upstream's rules)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from nodepool_ng.drivers.base import Instance, Resource
from nodepool_ng.drivers.openstack.images import OpenStackImages
from nodepool_ng.drivers.openstack.sdk import call
from nodepool_ng.errors import PermanentCloudError


class OpenStackResources:
    def __init__(self, conn: Any, images: OpenStackImages, clean_floating_ips: bool,
                 port_cleanup_interval: float,
                 live_servers: Callable[[], Iterable[Instance]]) -> None:
        self.conn = conn
        self.images = images
        self.clean_floating_ips = clean_floating_ips
        self.port_cleanup_interval = port_cleanup_interval
        self._live_servers = live_servers
        # The last port listing (monotonic time, DOWN ports nobody or nova owns): ports are
        # listed once per `port-cleanup-interval`, as upstream does, not on every pass (a
        # fleet of thousands has thousands of ports).
        self._down_ports: tuple[float, list[Resource]] | None = None

    def list_resources(self) -> list[Resource]:
        return [*self._floating_ips(), *self._ports(), *self.images.list_images()]

    def leak_candidates(self) -> list[Resource]:
        out: list[Resource] = []
        if self.clean_floating_ips:
            # Upstream deletes every unattached IP at once; a second pass spares the IP a
            # launch has just created and is about to attach.
            out += [Resource(r.kind, r.external_id, r.metadata, r.status, leak_interval=0.0)
                    for r in self._floating_ips() if not r.metadata.get("port_id")]
        if self.port_cleanup_interval > 0:
            listed_at, down = self._down_port_listing()
            # A booting server's port is DOWN too: never a live server's port.
            live = {i.external_id for i in self._live_servers()}
            out += [Resource(r.kind, r.external_id, r.metadata, r.status,
                             leak_interval=float(self.port_cleanup_interval),
                             listed_at=listed_at)
                    for r in down if r.metadata.get("device_id", "") not in live]
        return out

    def _down_port_listing(self) -> tuple[float, list[Resource]]:
        now = time.monotonic()
        if self._down_ports is None or now - self._down_ports[0] >= self.port_cleanup_interval:
            down = [r for r in self._ports() if r.status == "DOWN"
                    and _port_owner_ok(r.metadata.get("device_owner", ""))]
            self._down_ports = (now, down)
        return self._down_ports

    def delete_resource(self, resource: Resource) -> None:
        if resource.kind == "floatingip":
            call(self.conn.delete_floating_ip, resource.external_id)
        elif resource.kind == "port":
            call(self.conn.network.delete_port, resource.external_id, ignore_missing=True)
        elif resource.kind == "image":
            self.images.delete_image(resource.external_id)
        else:
            raise PermanentCloudError(f"unknown resource kind {resource.kind!r}")

    def _floating_ips(self) -> list[Resource]:
        return [Resource("floatingip", str(fip.id),
                         {"port_id": fip.port_id or "",
                          "floating_ip_address": fip.floating_ip_address or ""},
                         status=fip.status)
                for fip in call(lambda: list(self.conn.network.ips()))]

    def _ports(self) -> list[Resource]:
        return [Resource("port", str(port.id),
                         {"device_owner": port.device_owner or "",
                          "device_id": port.device_id or ""}, status=port.status)
                for port in call(lambda: list(self.conn.network.ports()))]


def _port_owner_ok(owner: str) -> bool:
    """Upstream only cleans ports nobody owns or that nova made (`compute:<az>`)."""
    return not owner or owner.startswith("compute:")

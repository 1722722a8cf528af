"""Network v2.0 (neutron) floating IPs: create, associate with a port or not, delete.
Listing and showing them is the network service's (as for every kind of resource).
"""

from __future__ import annotations

import time
from typing import Any

from nodepool_ng.simcloud.http import ApiError, Request, Response, RouteGroup, handles
from nodepool_ng.simcloud.network import NetworkService
from nodepool_ng.simcloud.state import CloudState, FloatingIP, new_id


class FloatingIPRoutes(RouteGroup):
    """`POST /v2.0/floatingips`, `PUT|DELETE /v2.0/floatingips/<id>` on a `NetworkService`."""

    def __init__(self, network: NetworkService) -> None:
        self.net = network
        super().__init__(network)

    def _associate(self, state: CloudState, fip: FloatingIP, port_id: Any,
                   fixed: Any) -> None:
        if port_id is None:
            fip.port_id = fip.fixed_ip = None
            return
        port = self.net.find_port(state, str(port_id))
        net = state.networks[port.network_id]
        if net.router_external:
            raise self.net.error(404, f"External network {fip.network_id} is not reachable from "
                                  f"subnet {net.subnet_id}.",
                             "ExternalGatewayForFloatingIPNotFound")
        if fixed not in (None, port.ip):
            raise self.net.error(400, f"Port {port.id} does not have fixed ip {fixed}")
        for other in state.floating_ips.values():
            if other.port_id == port.id and other.id != fip.id:
                raise self.net.error(409, f"Cannot associate floating IP {fip.address} with port "
                                      f"{port.id}: it already has floating IP "
                                      f"{other.address}.", "FloatingIPPortAlreadyAssociated")
        fip.port_id, fip.fixed_ip = port.id, port.ip

    @handles("POST", "/v2.0/floatingips")
    def create_fip(self, req: Request) -> Response:
        body = req.json_object("floatingip")
        state = req.state
        with state.lock:
            net = self.net.find_network(state, body.get("floating_network_id"))
            if not net.router_external:
                raise self.net.error(400, f"Bad floatingip request: Network {net.id} is not a "
                                      "valid external network.", "BadRequest")
            address = state.public_pool.allocate()
            if address is None:
                raise self.net.error(409, f"No more IP addresses available on network {net.id}.",
                                 "IpAddressGenerationFailure")
            fip = FloatingIP(new_id(), address, net.id, time.time())
            try:
                self._associate(state, fip, body.get("port_id"), body.get("fixed_ip_address"))
            except ApiError:
                state.public_pool.release(address)
                raise
            state.floating_ips[fip.id] = fip
            view = self.net.fip_view(state, fip)
        return Response(201, {"floatingip": view})

    def _fip(self, state: CloudState, fip_id: str) -> FloatingIP:
        fip = state.floating_ips.get(fip_id)
        if fip is None or fip.nova:
            raise self.net.error(404, f"Floating IP {fip_id} could not be found.",
                             "FloatingIPNotFound")
        return fip

    @handles("PUT", "/v2.0/floatingips/([^/]+)")
    def update_fip(self, req: Request) -> Response:
        body = req.json_object("floatingip")
        with req.state.lock:
            fip = self._fip(req.state, req.params[0])
            if "port_id" in body:
                self._associate(req.state, fip, body["port_id"], body.get("fixed_ip_address"))
            view = self.net.fip_view(req.state, fip)
        return Response(200, {"floatingip": view})

    @handles("DELETE", "/v2.0/floatingips/([^/]+)")
    def delete_fip(self, req: Request) -> Response:
        with req.state.lock:
            fip = self._fip(req.state, req.params[0])
            del req.state.floating_ips[fip.id]
            req.state.public_pool.release(fip.address)
        return Response(204, None)

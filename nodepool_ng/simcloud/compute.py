"""Compute v2.1 (nova): discovery with microversions, flavors, limits, zones.

Servers and their metadata live in `compute_servers.py`; keypairs, the old os-floating-ips API
and server actions in `compute_extras.py`: each a `ComputeRoutes` group added to the service.
Microversions honoured where openstacksdk sees a difference: >= 2.47 embeds the flavor in the
server, >= 2.36 removes the os-floating-ips proxy API (404).
"""

from __future__ import annotations

from typing import Any

from nodepool_ng.simcloud.http import ApiError, Request, Response, RouteGroup, Service
from nodepool_ng.simcloud.state import CloudState, Server

MIN_VERSION = (2, 1)
_KINDS = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
          405: "HTTPMethodNotAllowed", 406: "computeFault", 409: "conflictingRequest",
          413: "overLimit", 500: "computeFault", 503: "serviceUnavailable"}


def _parse_version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


class ComputeService(Service):
    """Nova's plumbing (microversions, error bodies, versions), flavors, limits and zones;
    the groups of `ComputeRoutes` add the rest."""

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

    def respond(self, req: Request, status: int, body: Any,
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

    def find_server(self, req: Request, server_id: str) -> Server:
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
        return self.respond(req, 200, {"flavors": flavors})

    def show_flavor(self, req: Request) -> Response:
        flavor = req.state.flavors.get(req.params[0])
        if flavor is None:
            raise self.error(404, f"Flavor {req.params[0]} could not be found.")
        return self.respond(req, 200, {"flavor": self._flavor_view(req, flavor, True)})

    def extra_specs(self, req: Request) -> Response:
        if req.params[0] not in req.state.flavors:
            raise self.error(404, f"Flavor {req.params[0]} could not be found.")
        return self.respond(req, 200, {"extra_specs": {}})

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
        return self.respond(req, 200, {"limits": {"rate": [], "absolute": absolute}})

    def zones(self, req: Request) -> Response:
        zone: dict[str, Any] = {"zoneName": "nova", "zoneState": {"available": True},
                                "hosts": None}
        return self.respond(req, 200, {"availabilityZoneInfo": [zone]})


class ComputeRoutes(RouteGroup):
    """A group of routes added to a `ComputeService` (servers, metadata, extras): its
    handlers answer with the service's microversion headers and error bodies."""

    def __init__(self, compute: ComputeService) -> None:
        self.c = compute
        super().__init__(compute)

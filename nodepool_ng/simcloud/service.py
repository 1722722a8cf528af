"""Run several simulated clouds in one process, each on its own loopback port."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

from nodepool_ng.simcloud.admin import AdminService
from nodepool_ng.simcloud.cloudsyaml import write_clouds_yaml
from nodepool_ng.simcloud.compute import ComputeService
from nodepool_ng.simcloud.compute_extras import ComputeExtras
from nodepool_ng.simcloud.compute_servers import ServerMetadataRoutes, ServerRoutes
from nodepool_ng.simcloud.http import CloudHTTPServer, Service, serve_in_thread
from nodepool_ng.simcloud.identity import IdentityService
from nodepool_ng.simcloud.image import ImageService
from nodepool_ng.simcloud.image_tasks import ImageTaskRoutes
from nodepool_ng.simcloud.network import NetworkService
from nodepool_ng.simcloud.network_fips import FloatingIPRoutes
from nodepool_ng.simcloud.objectstore import ObjectStoreService
from nodepool_ng.simcloud.profile import CloudProfile
from nodepool_ng.simcloud.state import CloudState
from nodepool_ng.simcloud.volume import VolumeService


def services_for(state: CloudState) -> list[Service]:
    """The services a cloud's profile offers, over its state."""
    compute = ComputeService(state)
    for routes in (ServerRoutes, ServerMetadataRoutes, ComputeExtras):
        routes(compute)
    images = ImageService()
    ImageTaskRoutes(images)
    services: list[Service] = [IdentityService(), compute, images, VolumeService(),
                               AdminService()]
    if state.profile.has_network_api:
        network = NetworkService()
        FloatingIPRoutes(network)
        services.append(network)
    if state.profile.image_upload == "task":
        services.append(ObjectStoreService())
    return services


class SimCloudService:
    """Serves every cloud of a profile; `start()` binds and returns once all listen."""

    def __init__(self, profiles: tuple[CloudProfile, ...], listen: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(listen).is_loopback:
            raise ValueError(f"listen: {listen} is not a loopback address")
        self.profiles = profiles
        self.listen = listen
        self.states: dict[str, CloudState] = {}
        self.servers: dict[str, CloudHTTPServer] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        try:
            for profile in self.profiles:
                state = CloudState(profile)
                server = CloudHTTPServer((self.listen, profile.port), state, services_for(state))
                self.states[profile.name] = state
                self.servers[profile.name] = server
        except OSError:
            self.stop()
            raise
        for server in self.servers.values():
            self._threads.append(serve_in_thread(server))

    def port(self, name: str) -> int:
        return int(self.servers[name].server_address[1])

    def url(self, name: str) -> str:
        return f"http://{self.listen}:{self.port(name)}"

    def write_clouds_yaml(self, path: str | Path) -> Path:
        return write_clouds_yaml(path, [(p, self.listen, self.port(p.name))
                                        for p in self.profiles])

    def stop(self) -> None:
        for server in self.servers.values():
            server.shutdown() if self._threads else None
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

"""Flavors, images and networks of an OpenStack cloud, looked up by name or id and kept
for a while in small TTL caches (`cache.TTLMemo`; failures are not kept)."""

from __future__ import annotations

from typing import Any

from nodepool_ng.drivers.base import LaunchSpec
from nodepool_ng.drivers.cache import TTLMemo
from nodepool_ng.drivers.openstack.quota import FlavorInfo, select_flavor


class CloudLookups:
    def __init__(self, conn: Any, ttl: float = 300.0) -> None:
        self.conn = conn
        self._flavors: TTLMemo[str, list[FlavorInfo]] = TTLMemo(ttl)
        self._images: TTLMemo[str, Any] = TTLMemo(ttl)
        self._networks: TTLMemo[str, Any] = TTLMemo(ttl)

    def list_flavors(self) -> list[FlavorInfo]:
        return self._flavors.get("flavors", lambda: [
            FlavorInfo.from_sdk(f) for f in self.conn.compute.flavors(details=True)])

    def find_flavor(self, spec: LaunchSpec) -> FlavorInfo:
        return select_flavor(self.list_flavors(), spec.flavor_name, spec.min_ram,
                             label=spec.label_name)

    def find_image(self, name_or_id: str) -> Any:
        return self._images.get(name_or_id, lambda: self.conn.image.find_image(
            name_or_id, ignore_missing=False))

    def find_network(self, name_or_id: str) -> Any:
        return self._networks.get(name_or_id, lambda: self.conn.network.find_network(
            name_or_id, ignore_missing=False))

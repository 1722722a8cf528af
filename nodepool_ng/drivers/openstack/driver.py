"""The registry entry of `driver: openstack` (also a provider without `driver:`)."""

from __future__ import annotations

from typing import Any

from nodepool_ng.config import checks, schema
from nodepool_ng.config.build import build_provider
from nodepool_ng.drivers.base import ImageAdapter, ProviderAdapter
from nodepool_ng.drivers.registry import AdapterOptions, Driver


def make_adapter(provider: Any, options: AdapterOptions) -> ProviderAdapter:
    from nodepool_ng.drivers.openstack.adapter import OpenStackAdapter  # openstacksdk: lazy

    return OpenStackAdapter(provider, **options.kwargs("clouds_yaml", "poll_interval"))


def make_image_adapter(provider: Any, options: AdapterOptions) -> ImageAdapter:
    from nodepool_ng.drivers.openstack.adapter import OpenStackAdapter

    return OpenStackAdapter(provider, **options.kwargs("clouds_yaml"))


DRIVER = Driver(
    name="openstack",
    schema=schema.OPENSTACK_PROVIDER,
    build_provider=build_provider,
    check_provider=checks.check_provider,
    make_adapter=make_adapter,
    make_image_adapter=make_image_adapter,
)

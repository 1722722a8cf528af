"""The OpenStack driver (openstacksdk).

The adapter (and with it openstacksdk) is imported on first use, so that loading the
driver's registry entry (`driver.py`) to validate a config stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodepool_ng.drivers.openstack.adapter import OpenStackAdapter
    from nodepool_ng.drivers.openstack.sdk import load_cloud_region

__all__ = ["OpenStackAdapter", "load_cloud_region"]


def __getattr__(name: str) -> Any:
    if name == "OpenStackAdapter":
        from nodepool_ng.drivers.openstack import adapter

        return adapter.OpenStackAdapter
    if name == "load_cloud_region":
        from nodepool_ng.drivers.openstack import sdk

        return sdk.load_cloud_region
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

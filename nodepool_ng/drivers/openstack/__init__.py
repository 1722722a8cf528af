"""The OpenStack driver (openstacksdk)."""

from nodepool_ng.drivers.openstack.adapter import OpenStackAdapter, load_cloud_region

__all__ = ["OpenStackAdapter", "load_cloud_region"]

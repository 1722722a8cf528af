"""Write the clouds.yaml openstacksdk uses, as is, to reach the simulated clouds.

Per address model it sets what a vendor profile would: `floating_ip_source`, `has_network`,
and `networks` entries (`routes_externally`, `nat_destination`) so openstacksdk's address
selection finds the intended public IPv4.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from nodepool_ng.simcloud.profile import CloudProfile

_MODEL_SETTINGS: dict[str, dict[str, Any]] = {
    "external": {"floating_ip_source": "None",
                 "networks": [{"name": "public", "routes_externally": True}]},
    "external_private": {"floating_ip_source": "neutron", "networks": [
        {"name": "public", "routes_externally": True},
        {"name": "private", "routes_externally": False, "nat_destination": True}]},
    "floating": {"floating_ip_source": "neutron", "networks": [
        {"name": "private", "routes_externally": False, "nat_destination": True},
        {"name": "public", "routes_externally": True, "nat_source": True}]},
    "nova_floating": {"floating_ip_source": "nova", "has_network": False},
    "access_ip": {"floating_ip_source": "None", "has_network": False},
}


def cloud_entry(profile: CloudProfile, host: str, port: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "auth_type": "password",
        "auth": {"auth_url": f"http://{host}:{port}/identity", "username": profile.username,
                 "password": profile.password, "project_name": profile.project,
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": profile.region,
        "identity_api_version": "3",
        "image_format": profile.image_format,
        "image_api_use_tasks": profile.image_upload == "task",
        "force_ipv4": True,
        "api_timeout": 60,
    }
    settings = _MODEL_SETTINGS[profile.address_model]
    entry.update(copy.deepcopy(settings))  # no shared objects: YAML would write anchors
    if profile.image_upload != "task":
        entry["has_object_store"] = False
    return entry


def clouds_yaml(clouds: list[tuple[CloudProfile, str, int]]) -> dict[str, Any]:
    return {"clouds": {p.name: cloud_entry(p, host, port) for p, host, port in clouds}}


def write_clouds_yaml(path: str | Path, clouds: list[tuple[CloudProfile, str, int]]) -> Path:
    """Write atomically (a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".clouds-", suffix=".yaml")
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(clouds_yaml(clouds), out, default_flow_style=False, sort_keys=False)
    os.replace(tmp, target)
    return target

"""Pure OpenStack quota helpers: flavor choice, flavor cost, limits, fault classification.

No I/O here: the adapter feeds in what openstacksdk returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from openstack import exceptions as os_exc

from nodepool_ng.errors import LaunchError, QuotaExceeded
from nodepool_ng.model.quota import Quota

VOLUMES = "volumes"
VOLUME_GB = "volume-gb"

# HTTP statuses Nova and Neutron use to refuse a request for quota (413 is the old overLimit).
QUOTA_STATUSES = frozenset({403, 413})
# Only consulted when there is no HTTP status to go by (a server's fault record, or an SDK
# error raised after the API call succeeded).
QUOTA_WORDS = ("quota", "number of ports exceeded", "overlimit")


@dataclass(frozen=True)
class FlavorInfo:
    id: str
    name: str
    vcpus: int
    ram: int  # MiB
    disk: int = 0

    @classmethod
    def from_sdk(cls, flavor: Any) -> FlavorInfo:
        return cls(
            id=str(flavor["id"]),
            name=str(flavor["name"]),
            vcpus=int(flavor["vcpus"] or 0),
            ram=int(flavor["ram"] or 0),
            disk=int(flavor["disk"] or 0),
        )


def select_flavor(
    flavors: Iterable[FlavorInfo], flavor_name: str | None, min_ram: int | None, label: str = "?"
) -> FlavorInfo:
    """Upstream's rule: with min-ram, the smallest flavor with enough RAM (whose name contains
    flavor-name, if given); otherwise the flavor named exactly flavor-name (or with that id)."""
    flavors = list(flavors)
    if min_ram:
        fits = [
            f for f in flavors
            if f.ram >= min_ram and (not flavor_name or flavor_name in f.name)
        ]
        if fits:
            return min(fits, key=lambda f: f.ram)  # ties: the cloud's listing order
        wanted = f"min-ram {min_ram}" + (f" and name containing {flavor_name!r}" if flavor_name
                                         else "")
    elif flavor_name:
        for f in flavors:
            if f.name == flavor_name:
                return f
        for f in flavors:
            if f.id == flavor_name:
                return f
        wanted = f"flavor-name {flavor_name!r}"
    else:
        raise LaunchError(f"label {label}: neither flavor-name nor min-ram is set")
    known = ", ".join(sorted(f"{f.name}({f.ram}MiB)" for f in flavors)) or "none"
    raise LaunchError(f"label {label}: no flavor matches {wanted}; the cloud has: {known}")


def flavor_quota(flavor: FlavorInfo | Mapping[str, Any], *, boot_from_volume: bool = False,
                 volume_size: int | None = None) -> Quota:
    """What one server of this flavor costs."""
    if isinstance(flavor, FlavorInfo):
        vcpus, ram = flavor.vcpus, flavor.ram
    else:
        vcpus, ram = int(flavor.get("vcpus") or 0), int(flavor.get("ram") or 0)
    extra: dict[str, float] = {}
    if boot_from_volume:
        extra = {VOLUMES: 1, VOLUME_GB: volume_size or 50}
    return Quota.of(cores=vcpus, instances=1, ram=ram, **extra)


def limits_quota(limits: Any) -> Quota:
    """openstacksdk AbsoluteLimits -> Quota; -1 or missing means unlimited."""
    return Quota.limits(
        cores=getattr(limits, "total_cores", None),
        instances=getattr(limits, "instances", None),
        ram=getattr(limits, "total_ram", None),
    )


def is_quota_text(message: str | None) -> bool:
    text = (message or "").lower()
    return any(word in text for word in QUOTA_WORDS)


def classify_create_error(exc: BaseException, what: str) -> Exception:
    """The exception a create state machine raises for an openstacksdk error.

    A 403/413 from the API is a quota refusal unless the cloud says it is about policy;
    without an HTTP status the message text decides (the last resort).
    """
    if isinstance(exc, os_exc.HttpException) and exc.status_code is not None:
        text = f"{exc.message} {exc.details or ''}"
        if exc.status_code in QUOTA_STATUSES and "policy" not in text.lower():
            return QuotaExceeded(f"{what}: cloud refused for quota: {exc.details or exc}")
        return LaunchError(f"{what}: {exc.status_code} {exc.details or exc}")
    if is_quota_text(str(exc)):
        return QuotaExceeded(f"{what}: cloud refused for quota: {exc}")
    return LaunchError(f"{what}: {exc}")


def classify_fault(fault: Mapping[str, Any] | None, what: str) -> Exception:
    """A server in ERROR -> QuotaExceeded when its fault says quota, else LaunchError."""
    fault = fault or {}
    message = str(fault.get("message") or "no fault message")
    code = fault.get("code")
    if code in QUOTA_STATUSES or is_quota_text(message):
        return QuotaExceeded(f"{what}: cloud refused for quota: {message}")
    return LaunchError(f"{what}: server went to ERROR: {message}")

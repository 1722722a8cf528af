"""Pure AWS helpers: instance-type cost, vCPU quota codes, error classification.

No I/O: the adapter feeds in what boto3 returned.

EC2 limits running instances by vCPUs per instance family and market (Service Quotas codes
below, upstream Nodepool's table). The cost of one instance is, as upstream:
`instances=1`, `cores` = the type's default (physical) cores, `ram` = MiB, and the type's
vCPUs under its quota code (e.g. `L-1216C47A`), which is what the cloud's limit counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodepool_ng.errors import LaunchError, QuotaExceeded
from nodepool_ng.model.quota import Quota

ON_DEMAND = 0
SPOT = 1

# instance family prefix -> (on-demand code, spot code); "" = no such quota
QUOTA_CODES: Mapping[str, tuple[str, str]] = {
    "a": ("L-1216C47A", "L-34B43A08"),
    "c": ("L-1216C47A", "L-34B43A08"),
    "d": ("L-1216C47A", "L-34B43A08"),
    "h": ("L-1216C47A", "L-34B43A08"),
    "i": ("L-1216C47A", "L-34B43A08"),
    "m": ("L-1216C47A", "L-34B43A08"),
    "r": ("L-1216C47A", "L-34B43A08"),
    "t": ("L-1216C47A", "L-34B43A08"),
    "z": ("L-1216C47A", "L-34B43A08"),
    "dl": ("L-6E869C2A", "L-85EED4F7"),
    "f": ("L-74FC7D96", "L-88CF9481"),
    "g": ("L-DB2E81BA", "L-3819A6DF"),
    "vt": ("L-DB2E81BA", "L-3819A6DF"),
    "u-": ("L-43DA4232", ""),
    "inf": ("L-1945791B", "L-B5D1601B"),
    "p": ("L-417A185B", "L-7212CCBC"),
    "x": ("L-7295265B", "L-E3A00192"),
    "trn": ("L-2C3B7624", "L-6B0D517C"),
    "hpc": ("L-F7808C92", ""),
}
STANDARD_ON_DEMAND = "L-1216C47A"
STANDARD_SPOT = "L-34B43A08"

# Error codes with which EC2 refuses a launch for quota or capacity: the node is aborted and
# relaunched (possibly elsewhere), not counted as a failed launch.
QUOTA_ERROR_CODES = frozenset({
    "InstanceLimitExceeded",
    "InsufficientInstanceCapacity",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "VolumeLimitExceeded",
    "InsufficientFreeAddressesInSubnet",
})

def quota_code(instance_type: str, market: int = ON_DEMAND) -> str | None:
    """The Service Quotas code limiting `instance_type`'s vCPUs, or None when unknown.

    The family is the longest prefix of the type's letters found in the table, e.g.
    `trn1.32xlarge` -> trn, `t3.micro` -> t, `u-6tb1.metal` -> u-."""
    family = instance_type.split(".", 1)[0]
    for end in range(len(family), 0, -1):
        codes = QUOTA_CODES.get(family[:end])
        if codes is not None:
            return codes[market] or None
    return None


@dataclass(frozen=True)
class InstanceTypeInfo:
    name: str
    vcpus: int
    cores: int
    ram: int  # MiB

    @classmethod
    def from_boto(cls, raw: Mapping[str, Any]) -> InstanceTypeInfo:
        vcpu = raw.get("VCpuInfo") or {}
        vcpus = int(vcpu.get("DefaultVCpus") or 0)
        return cls(
            name=str(raw["InstanceType"]),
            vcpus=vcpus,
            cores=int(vcpu.get("DefaultCores") or vcpus),
            ram=int((raw.get("MemoryInfo") or {}).get("SizeInMiB") or 0),
        )

    def quota(self, market: int = ON_DEMAND) -> Quota:
        extra: dict[str, float] = {}
        code = quota_code(self.name, market)
        if code:
            extra[code] = self.vcpus
        return Quota.of(cores=self.cores, instances=1, ram=self.ram, **extra)


def error_code(exc: BaseException) -> str:
    """botocore ClientError's code ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str((response.get("Error") or {}).get("Code") or "")
    return ""


def classify_create_error(exc: BaseException, what: str) -> Exception:
    """RunInstances' (or a lookup's) failure as the create machine raises it."""
    code = error_code(exc)
    if code in QUOTA_ERROR_CODES:
        return QuotaExceeded(f"{what}: cloud refused for quota: {exc}")
    if isinstance(exc, LaunchError):
        return exc
    return LaunchError(f"{what}: {exc}")

"""Quota arithmetic over named resources (cores, instances, ram, plus any extras).

Pure values: no I/O. A missing resource means "unlimited" in a limit and "zero" in a usage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CORES = "cores"
INSTANCES = "instances"
RAM = "ram"
UNLIMITED = math.inf


@dataclass(frozen=True)
class Quota:
    """Amounts of resources: a limit, a usage, or the cost of one node."""

    resources: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, cores: float = 0, instances: float = 0, ram: float = 0, **extra: float) -> Quota:
        values = {CORES: cores, INSTANCES: instances, RAM: ram, **extra}
        return cls({k: float(v) for k, v in values.items()})

    @classmethod
    def limits(
        cls,
        cores: float | None = None,
        instances: float | None = None,
        ram: float | None = None,
        **extra: float | None,
    ) -> Quota:
        """A limit; None or a negative value (OpenStack's -1) means unlimited."""
        values = {CORES: cores, INSTANCES: instances, RAM: ram, **extra}
        return cls(
            {k: UNLIMITED if v is None or v < 0 else float(v) for k, v in values.items()}
        )

    @classmethod
    def total(cls, quotas: Iterable[Quota]) -> Quota:
        out: dict[str, float] = {}
        for q in quotas:
            for k, v in q.resources.items():
                out[k] = out.get(k, 0.0) + v
        return cls(out)

    def get(self, name: str, default: float = 0.0) -> float:
        return self.resources.get(name, default)

    def __add__(self, other: Quota) -> Quota:
        return Quota.total([self, other])

    def __sub__(self, other: Quota) -> Quota:
        keys = set(self.resources) | set(other.resources)
        return Quota({k: self.get(k) - other.get(k) for k in keys})

    def fits_within(self, limit: Quota) -> bool:
        """True when every resource here is within `limit` (absent in the limit = unlimited)."""
        return all(v <= limit.get(k, UNLIMITED) for k, v in self.resources.items())

    def headroom(self, used: Quota) -> Quota:
        """What is left of this limit after `used` (unlimited stays unlimited)."""
        return Quota(
            {
                k: (v if math.isinf(v) else v - used.get(k))
                for k, v in self.resources.items()
            }
        )

    def min(self, other: Quota) -> Quota:
        """The stricter of two limits, resource by resource."""
        keys = set(self.resources) | set(other.resources)
        return Quota({k: min(self.get(k, UNLIMITED), other.get(k, UNLIMITED)) for k in keys})

    def as_dict(self) -> dict[str, int]:
        """Finite values as ints, for the node's `resources` JSON field."""
        return {k: int(v) for k, v in self.resources.items() if not math.isinf(v)}

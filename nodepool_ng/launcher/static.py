"""Moved: the static driver's registrar is `nodepool_ng.drivers.static.registrar` (reached by
the launcher through the driver registry). Kept so existing imports keep working."""

from nodepool_ng.drivers.static.registrar import (
    HostId,
    StaticRegistrar,
    assign_slots,
    host_id,
    node_fields,
)

__all__ = ["HostId", "StaticRegistrar", "assign_slots", "host_id", "node_fields"]

"""`LauncherOptions`: the launcher's knobs besides its config file (tests, benchmarks and
`nodepool-launcher --provider`)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class LauncherOptions:
    """Knobs for tests and benchmarks; the defaults are the daemon's."""

    hostname: str = field(default_factory=socket.getfqdn)
    clouds_yaml: str | None = None  # else openstacksdk's search (OS_CLIENT_CONFIG_FILE, ...)
    endpoint_url: str | None = None  # a cloud endpoint override (registry.AdapterOptions)
    runner_poll: float = 0.05  # while launches/deletes are in flight
    adapter_poll: float = 0.2  # server-list refresh while launches are in flight (lazy)
    pool_interval: float = 30.0  # safety net; pool workers are woken by watches
    deleter_interval: float = 5.0
    min_ready_interval: float = 5.0
    cleanup_interval: float = 60.0
    config_interval: float = 5.0
    stats_interval: float = 5.0
    cloud_quota_ttl: float = 5.0
    operation_timeout: float = 10.0
    # Run only these providers of the config (None: all). Several launcher processes, each
    # with its own providers, share one config and one ZooKeeper: one core each (see
    # doc/launcher.md, "One process per provider").
    providers: frozenset[str] | None = None

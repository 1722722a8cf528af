"""MQTT events for operators (doc/events.md): node, request and image transitions as JSON;
the launcher's observer also records request latency for Prometheus (doc/metrics.md).

events = start_launcher_events(config, hostname, node_store, request_store, is_leader)
...
if events: events.stop()
"""

from __future__ import annotations

from collections.abc import Callable

from nodepool_ng.config.models import Config
from nodepool_ng.events.observers import (
    BuilderEvents,
    LauncherEvents,
    RequestLatency,
    make_publisher,
)
from nodepool_ng.events.publisher import EventPublisher
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore

__all__ = [
    "BuilderEvents",
    "EventPublisher",
    "LauncherEvents",
    "RequestLatency",
    "start_builder_events",
    "start_launcher_events",
]


def start_launcher_events(
    config: Config,
    hostname: str,
    nodes: NodeStore,
    requests: RequestStore,
    is_leader: Callable[[], bool],
) -> LauncherEvents:
    """Started node/request observers: MQTT events when `mqtt` is configured (the publisher
    is None otherwise), request latency always. Never raises."""
    publisher = make_publisher(config, "launcher", hostname)
    events = LauncherEvents(publisher, nodes, requests, is_leader)
    events.start()
    return events


def start_builder_events(
    config: Config, hostname: str, zk: ZooKeeperClient, builder_id: str
) -> BuilderEvents | None:
    """Started image events when `mqtt` is configured, else None."""
    publisher = make_publisher(config, "builder", hostname)
    if publisher is None:
        return None
    events = BuilderEvents(publisher, zk, builder_id)
    events.start()
    return events

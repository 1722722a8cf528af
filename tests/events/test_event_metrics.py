"""Request events carry Zuul's `event_id` and `tenant_name`; dropped and published events are
counted as metrics (real Mosquitto, real ZooKeeper, simcloud)."""

from __future__ import annotations

import json
import time

from kazoo.client import KazooClient
from prometheus_client import CollectorRegistry

from nodepool_ng.config.models import MqttConfig
from nodepool_ng.events.publisher import EventPublisher
from nodepool_ng.events.transitions import request_payload
from nodepool_ng.metrics import NullClient, TeeClient
from nodepool_ng.model.request import NodeRequest, RequestState
from nodepool_ng.prometheus import PrometheusSink
from tests.events.test_launcher_events import Env, env  # noqa: F401 (fixture)
from tests.events.test_publisher import wait_for
from tests.fixtures.mosquitto import Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.fixtures.ports import free_port
from tests.launcher import harness as h


def private_stats() -> tuple[TeeClient, CollectorRegistry]:
    registry = CollectorRegistry()
    return TeeClient(NullClient(), PrometheusSink(registry)), registry


def dropped(registry: CollectorRegistry, reason: str, component: str = "launcher") -> float:
    value = registry.get_sample_value(
        "nodepool_events_dropped_total", {"component": component, "reason": reason}
    )
    return value or 0.0


def test_request_payload_has_zuuls_event_id_and_tenant_name() -> None:
    request = NodeRequest(id="100-0000000001", node_types=["small"], event_id="e-1",
                          tenant_name="tenant-a", state=RequestState.PENDING)
    payload = request_payload(request, "requested", "pending")
    assert payload["event_id"] == "e-1" and payload["tenant_name"] == "tenant-a"
    # Zuul may leave them out: null, as in the request.
    bare = request_payload(NodeRequest(id="100-0000000002"), None, "requested")
    assert bare["event_id"] is None and bare["tenant_name"] is None


def test_full_queue_drops_are_counted() -> None:
    stats, registry = private_stats()
    publisher = EventPublisher(
        MqttConfig(host="127.0.0.1", port=free_port()), "test-full", queue_size=10,
        component="builder", stats=stats,
    )
    # Not started: nothing takes events off the queue, so the 11th and later are dropped.
    for i in range(15):
        publisher.publish("node/ready", {"id": str(i)})
    assert publisher.dropped == 5
    assert dropped(registry, "queue_full", component="builder") == 5
    publisher.stop()


def test_broker_down_drops_are_counted_by_reason() -> None:
    stats, registry = private_stats()
    publisher = EventPublisher(
        MqttConfig(host="127.0.0.1", port=free_port()), "test-down", queue_size=10, stats=stats
    )
    publisher.start()
    try:
        for i in range(30):
            publisher.publish("node/ready", {"id": str(i)})
        wait_for("all events dropped", lambda: publisher.dropped == 30)
        assert dropped(registry, "not_connected") >= 1
        assert dropped(registry, "not_connected") + dropped(registry, "queue_full") == 30
        assert registry.get_sample_value(
            "nodepool_events_published_total", {"component": "launcher"}) is None
    finally:
        publisher.stop()


def test_published_events_are_counted(mosquitto: Mosquitto) -> None:  # noqa: F811
    stats, registry = private_stats()
    sub = mosquitto.subscriber("nodepool/#")
    publisher = EventPublisher(MqttConfig(host=mosquitto.host, port=mosquitto.port),
                               "test-ok", stats=stats)
    publisher.start()
    try:
        assert publisher.wait_connected(10)
        publisher.publish("node/ready", {"id": "1"})
        sub.wait_for(lambda m: m.topic == "nodepool/node/ready")
        wait_for("counted", lambda: registry.get_sample_value(
            "nodepool_events_published_total", {"component": "launcher"}) == 1)
        assert dropped(registry, "not_connected") == 0
    finally:
        publisher.stop()


def test_request_events_match_zuuls_event(
    env: Env,  # noqa: F811
    kazoo_client: KazooClient,
    mosquitto: Mosquitto,  # noqa: F811
) -> None:
    sub = mosquitto.subscriber("nodepool/request/#")
    launcher = env.start({"host": mosquitto.host, "port": mosquitto.port})
    assert launcher.events is not None and launcher.events.publisher is not None
    assert launcher.events.publisher.wait_connected(10)
    now = time.time()
    # The keys as Zuul writes them (zuul/model.py NodeRequest.toDict).
    path = kazoo_client.create("/nodepool/requests/200-", json.dumps({
        "node_types": ["small"], "requestor": "zuul-scheduler-1", "state": "requested",
        "state_time": now, "created_time": now, "relative_priority": 0, "provider": None,
        "requestor_data": {}, "event_id": "3f9a2c", "tenant_name": "example-tenant",
    }).encode(), sequence=True, makepath=True)
    rid = path.rsplit("/", 1)[1]
    assert h.wait_request(kazoo_client, rid)["state"] == "fulfilled"
    fulfilled = sub.wait_for(lambda m: m.topic == "nodepool/request/fulfilled"
                             and m.payload["id"] == rid)
    assert fulfilled.payload["event_id"] == "3f9a2c"
    assert fulfilled.payload["tenant_name"] == "example-tenant"
    pending = sub.wait_for(lambda m: m.topic == "nodepool/request/pending"
                           and m.payload["id"] == rid)
    assert pending.payload["event_id"] == "3f9a2c"
    h.accept_and_use(kazoo_client, rid)

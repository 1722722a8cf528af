"""EventPublisher against a real Mosquitto: delivery, and dropping (never blocking) without one."""

from __future__ import annotations

import time

from nodepool_ng.config.models import MqttConfig
from nodepool_ng.events.publisher import EventPublisher
from tests.fixtures.mosquitto import Mosquitto, mosquitto  # noqa: F401 (fixture)
from tests.fixtures.ports import free_port


def wait_for(what: str, check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_publishes_json_under_the_prefix(mosquitto: Mosquitto) -> None:  # noqa: F811
    sub = mosquitto.subscriber("ci/np/#")
    publisher = EventPublisher(
        MqttConfig(host=mosquitto.host, port=mosquitto.port, topic_prefix="ci/np", qos=1),
        "test-publisher",
    )
    publisher.start()
    try:
        assert publisher.wait_connected(10)
        publisher.publish("node/ready", {"id": "0000000001", "state": "ready"})
        message = sub.wait_for(lambda m: m.topic == "ci/np/node/ready")
        assert message.payload == {"id": "0000000001", "state": "ready"}
        assert publisher.published == 1 and publisher.dropped == 0
    finally:
        publisher.stop()


def test_broker_down_drops_and_counts() -> None:
    publisher = EventPublisher(
        MqttConfig(host="127.0.0.1", port=free_port()), "test-publisher", queue_size=10
    )
    publisher.start()
    try:
        for i in range(50):  # more than the queue holds: publish() must still return at once
            publisher.publish("node/ready", {"id": str(i)})
        wait_for("all events dropped", lambda: publisher.dropped == 50)
        assert publisher.published == 0 and not publisher.connected
    finally:
        publisher.stop()


def test_reconnects_when_the_broker_comes_up(tmp_path: object) -> None:
    from pathlib import Path

    broker = Mosquitto(Path(str(tmp_path)) / "late")
    publisher = EventPublisher(MqttConfig(host=broker.host, port=broker.port), "test-late")
    publisher.start()
    try:
        publisher.publish("request/pending", {"id": "early"})
        wait_for("early event dropped", lambda: publisher.dropped == 1)
        broker.start()
        sub = broker.subscriber("nodepool/#")
        assert publisher.wait_connected(15)
        publisher.publish("request/pending", {"id": "late"})
        assert sub.wait_for(lambda m: m.payload.get("id") == "late").topic == (
            "nodepool/request/pending"
        )
    finally:
        publisher.stop()
        broker.stop()

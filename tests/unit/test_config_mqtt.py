"""The `mqtt` key of nodepool.yaml: defaults, full form, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from nodepool_ng.config import ConfigError, MqttConfig, MqttTLSConfig, config_from_dicts

BASE: dict[str, Any] = {"zookeeper-servers": [{"host": "127.0.0.1"}]}


def load(mqtt: Any) -> Any:
    return config_from_dicts({**BASE, "mqtt": mqtt})


def test_absent_or_empty_means_no_events() -> None:
    assert config_from_dicts(dict(BASE)).mqtt is None
    assert load(None).mqtt is None


def test_defaults() -> None:
    assert load({"host": "127.0.0.1"}).mqtt == MqttConfig(
        host="127.0.0.1", port=1883, topic_prefix="nodepool", qos=0
    )


def test_full() -> None:
    cfg = load(
        {
            "host": "broker",
            "port": 8883,
            "topic-prefix": "ci/nodepool",
            "qos": 1,
            "username": "np",
            "password": "secret",
            "tls": {"ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem"},
        }
    ).mqtt
    assert cfg == MqttConfig(
        host="broker",
        port=8883,
        topic_prefix="ci/nodepool",
        qos=1,
        username="np",
        password="secret",
        tls=MqttTLSConfig(ca="/ca.pem", cert="/c.pem", key="/k.pem"),
    )
    assert "secret" not in repr(cfg)


def test_ca_only_tls() -> None:
    assert load({"host": "b", "tls": {"ca": "/ca.pem"}}).mqtt.tls == MqttTLSConfig(ca="/ca.pem")


@pytest.mark.parametrize(
    ("mqtt", "message"),
    [
        ({}, "mqtt.host: required key not provided"),
        ({"host": "b", "port": 0}, "mqtt.port: must be a port number"),
        ({"host": "b", "port": "1883"}, "mqtt.port: expected int"),
        ({"host": "b", "qos": 2}, "mqtt.qos: expected 0 or 1"),
        ({"host": "b", "topic-prefix": "np/#"}, "mqtt.topic-prefix: expected a non-empty"),
        ({"host": "b", "topic-prefix": "np/"}, "mqtt.topic-prefix: must not start or end"),
        ({"host": "b", "tls": {"cert": "/c"}}, "mqtt.tls: cert and key must be given together"),
        ({"host": "b", "tls": {"ca": "/c", "crt": "x"}}, "mqtt.tls.crt: unknown key"),
        ({"host": "b", "keepalive": 5}, "mqtt.keepalive: unknown key"),
    ],
)
def test_errors_name_the_field(mqtt: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(mqtt)
    assert str(exc.value).startswith(message), str(exc.value)

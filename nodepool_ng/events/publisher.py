"""`EventPublisher`: JSON events to an MQTT broker, without ever blocking the caller.

    publisher = EventPublisher(config.mqtt, client_id="nodepool-launcher-host1")
    publisher.start()
    publisher.publish("node/ready", {"id": "0000000001", ...})   # never blocks
    publisher.stop()

`publish()` only puts the event on a bounded queue. One sender thread takes events off it and
hands them to paho-mqtt, whose own loop thread does the network I/O and reconnects (1-30 s
backoff). While the broker is unreachable, or when the queue is full, events are dropped:
`dropped` counts them, as does the metric `nodepool_events_dropped_total{component,reason}`
(reason: `queue_full`, `not_connected`, `publish_failed`), and a warning is logged at most
once per `log_interval` seconds.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from nodepool_ng import metrics
from nodepool_ng.config.models import MqttConfig
from nodepool_ng.errors import ConfigError

log = logging.getLogger("nodepool_ng.events")

KEEPALIVE = 30


class EventPublisher:
    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        queue_size: int = 1000,
        log_interval: float = 60.0,
        component: str = "launcher",
        stats: object | None = None,
    ) -> None:
        """ConfigError (path `mqtt.tls`) when the TLS files cannot be used. `component`
        labels the published/dropped counters; `stats`: a metrics client (default
        `metrics.make_client()`)."""
        self.config = config
        self.component = component
        self.stats = stats if stats is not None else metrics.make_client()
        self.prefix = config.topic_prefix
        self.queue_size = queue_size
        self.log_interval = log_interval
        self.published = 0  # handed to paho while connected
        self.dropped = 0  # broker unreachable, queue full or paho refused
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=queue_size)
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._stats_lock = threading.Lock()
        self._unreported = 0
        self._last_report = 0.0
        self._thread: threading.Thread | None = None
        self.client = self._make_client(client_id)

    def _make_client(self, client_id: str) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls is not None:
            try:
                client.tls_set(ca_certs=cfg.tls.ca, certfile=cfg.tls.cert, keyfile=cfg.tls.key)
            except (OSError, ValueError, ssl.SSLError) as e:
                raise ConfigError(f"cannot use the TLS files: {e}", path="mqtt.tls") from e
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # paho keeps QoS 1 messages until acknowledged: bound that too.
        client.max_queued_messages_set(self.queue_size)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        return client

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (paho's loop thread retries until the broker is up)."""
        self.client.connect_async(self.config.host, self.config.port, keepalive=KEEPALIVE)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="EventPublisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (if connected), then disconnect."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.client.disconnect()
        except Exception as e:  # never let shutdown fail over events
            log.debug("MQTT disconnect: %s", e)
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    # -- publishing ------------------------------------------------------------------------
    def publish(self, subtopic: str, payload: dict[str, Any]) -> None:
        """Queue `payload` (JSON) for `<topic-prefix>/<subtopic>`; never blocks."""
        if self._stopping.is_set():
            return
        data = json.dumps(payload, sort_keys=True).encode()
        try:
            self._queue.put_nowait((f"{self.prefix}/{subtopic}", data))
        except queue.Full:
            self._drop("queue_full", "event queue full")

    def _run(self) -> None:
        while True:
            try:
                topic, data = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            if not self._connected.is_set():
                self._drop("not_connected", "broker not connected")
                continue
            try:
                info = self.client.publish(topic, data, qos=self.config.qos)
            except Exception as e:  # paho raises ValueError on bad topics/payloads
                self._drop("publish_failed", f"publish failed: {e}")
                continue
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._drop("publish_failed", mqtt.error_string(info.rc))
                continue
            with self._stats_lock:
                self.published += 1
            self._count(metrics.events_published(self.component))

    def _count(self, key: str) -> None:
        try:
            self.stats.incr(key)  # type: ignore[attr-defined]
        except Exception:  # metrics never stop events
            log.debug("metrics incr %s failed", key, exc_info=True)

    def _drop(self, kind: str, reason: str) -> None:
        """kind: the metric's `reason` label; reason: what the log says."""
        self._count(metrics.events_dropped(self.component, kind))
        now = time.monotonic()
        with self._stats_lock:
            self.dropped += 1
            self._unreported += 1
            if now - self._last_report < self.log_interval:
                return
            count, self._unreported, self._last_report = self._unreported, 0, now
        log.warning(
            "MQTT %s:%d: dropped %d event(s) (%s); %d dropped in total",
            self.config.host,
            self.config.port,
            count,
            reason,
            self.dropped,
        )

    # -- paho callbacks (its loop thread) --------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.warning(
                "MQTT %s:%d refused the connection: %s",
                self.config.host,
                self.config.port,
                reason_code,
            )
            return
        log.info("Connected to MQTT broker %s:%d", self.config.host, self.config.port)
        self._connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if self._connected.is_set() and not self._stopping.is_set():
            log.warning(
                "Disconnected from MQTT broker %s:%d: %s",
                self.config.host,
                self.config.port,
                reason_code,
            )
        self._connected.clear()

"""The Prometheus side of the metrics (pure): every statsd key names one family, the tee sends
each figure to both sides (Prometheus-only ones to Prometheus only), the builder's state
gauges, request latency, and the web app's /metrics and /health answers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from nodepool_ng import metrics
from nodepool_ng.builder.stats import BuilderStats
from nodepool_ng.events.observers import RequestLatency
from nodepool_ng.metrics import Key, TeeClient
from nodepool_ng.model.request import NodeRequest, RequestState
from nodepool_ng.prometheus import PrometheusSink
from nodepool_ng.web.server import WebApp


class Recorder:
    """A statsd client that remembers (kind, key, value)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float]] = []

    def incr(self, key: str, count: int = 1) -> None:
        self.sent.append(("c", str(key), count))

    def timing(self, key: str, ms: float) -> None:
        self.sent.append(("ms", str(key), ms))

    def gauge(self, key: str, value: float) -> None:
        self.sent.append(("g", str(key), value))


def tee() -> tuple[TeeClient, Recorder, CollectorRegistry]:
    registry = CollectorRegistry()
    recorder = Recorder()
    return TeeClient(recorder, PrometheusSink(registry)), recorder, registry


def every_key() -> list[Key]:
    m = metrics
    return [
        m.launch("ready"), m.launch_provider("p", "error.quota"),
        m.launch_provider_az("p", "az", "ready"), m.launch_requestor("zuul.x:1", "ready"),
        m.nodes("ready"), m.provider_nodes("p", "ready"), m.label_nodes("small", "ready"),
        m.provider_max_servers("p"), m.addressable_requests("p", "main"),
        m.tenant_limit("t", "cores"), m.provider_health("p"),
        m.request_latency("small", "p", "fulfilled"), m.api_error("p", "launch"),
        m.leaked("p", "ports"), m.launcher_zk("h", "client.connection_queue"),
        m.events_published("launcher"), m.events_dropped("launcher", "queue_full"),
        m.dib_image_build_size("img", "qcow2"),
        *(m.dib_image_build_status("img", name) for name in m.BUILD_STATUS),
        m.image_update("img", "p"), m.image_build_requests(), m.image_image_build_requests("img"),
        *(m.builder_gauge("b", name) for name in m.BUILDER_GAUGES),
        m.builder_build_state("b", "img"), m.builder_upload_state("b", "img", "p"),
    ]


def test_every_key_names_a_valid_family_with_its_label_values() -> None:
    names: dict[str, metrics.Family] = {}
    for key in every_key():
        assert isinstance(key, Key) and isinstance(key, str)
        family = key.family
        assert re.fullmatch(r"nodepool_[a-z_]+", family.name), family.name
        assert len(key.values) == len(family.labels)
        assert names.setdefault(family.name, family) is family, f"{family.name} twice"
    # Raw values as labels; the statsd key keeps upstream's normalised form.
    requestor = metrics.launch_requestor("zuul.x:1", "ready")
    assert requestor == "nodepool.launch.requestor.zuul_x_1.ready"
    assert dict(zip(requestor.family.labels, requestor.values, strict=True)) == {
        "requestor": "zuul.x:1", "result": "ready"}


def test_tee_sends_statsd_names_and_records_prometheus_families() -> None:
    client, recorder, registry = tee()
    client.incr(metrics.launch_provider("p1", "ready"))
    client.timing(metrics.launch_provider("p1", "ready"), 1500)
    client.gauge(metrics.nodes("ready"), 3)
    client.gauge(metrics.image_build_requests(), 2)
    assert recorder.sent == [
        ("c", "nodepool.launch.provider.p1.ready", 1),
        ("ms", "nodepool.launch.provider.p1.ready", 1500),
        ("g", "nodepool.nodes.ready", 3),
        ("g", "nodepool.image_build_requests", 2),
    ]
    labels = {"provider": "p1", "result": "ready"}
    assert registry.get_sample_value("nodepool_launch_provider_total", labels) == 1
    assert registry.get_sample_value(
        "nodepool_launch_provider_duration_seconds_count", labels) == 1
    assert registry.get_sample_value(
        "nodepool_launch_provider_duration_seconds_sum", labels) == 1.5
    assert registry.get_sample_value("nodepool_nodes", {"state": "ready"}) == 3
    assert registry.get_sample_value("nodepool_image_build_requests") == 2


def test_prometheus_only_figures_are_not_sent_to_statsd_and_plain_keys_not_recorded() -> None:
    client, recorder, registry = tee()
    client.timing(metrics.request_latency("small", "p1", "fulfilled"), 2000)
    client.incr(metrics.events_dropped("builder", "not_connected"))
    client.gauge("nodepool.some.inline.key", 1)
    assert recorder.sent == [("g", "nodepool.some.inline.key", 1)]
    assert registry.get_sample_value(
        "nodepool_request_duration_seconds_count",
        {"label": "small", "provider": "p1", "result": "fulfilled"}) == 1
    assert registry.get_sample_value(
        "nodepool_events_dropped_total", {"component": "builder", "reason": "not_connected"}) == 1


def test_a_failing_prometheus_side_never_stops_statsd() -> None:
    class Broken:
        def incr(self, key: Any, value: Any) -> None:
            raise RuntimeError("broken")

    recorder = Recorder()
    TeeClient(recorder, Broken()).incr(metrics.launch("ready"))
    assert recorder.sent == [("c", "nodepool.launch.ready", 1)]


def test_statsd_errors_still_reach_the_emitter_which_catches_them() -> None:
    class Down(Recorder):
        def incr(self, key: str, count: int = 1) -> None:
            raise OSError("statsd down")

    registry = CollectorRegistry()
    client = TeeClient(Down(), PrometheusSink(registry))
    with pytest.raises(OSError):
        client.incr(metrics.launch("ready"))
    assert registry.get_sample_value("nodepool_launch_total", {"result": "ready"}) == 1


def test_builder_state_gauges_use_upstreams_values() -> None:
    client, recorder, registry = tee()
    stats = BuilderStats("b1.example", client=client)
    build_state = {"host": "b1.example", "image": "debian"}
    upload_state = {**build_state, "provider": "p1"}
    stats.build_started("debian")
    assert registry.get_sample_value("nodepool_builder_image_build_state", build_state) == 1
    stats.build_finished("debian", True, 2.0, "/nonexistent/debian", ["qcow2"])
    assert registry.get_sample_value("nodepool_builder_image_build_state", build_state) == 0
    assert registry.get_sample_value("nodepool_dib_image_build_rc", {"image": "debian"}) == 0
    stats.upload_started("debian", "p1")
    assert registry.get_sample_value("nodepool_builder_image_upload_state", upload_state) == 2
    stats.upload_finished("debian", "p1", True, 3.0)
    assert registry.get_sample_value("nodepool_builder_image_upload_state", upload_state) == 0
    before = len(recorder.sent)
    stats.image_paused("debian", False)  # not paused before: nothing to say
    assert len(recorder.sent) == before
    stats.image_paused("debian", True)
    assert registry.get_sample_value("nodepool_builder_image_build_state", build_state) == 3
    stats.build_started("debian")  # (a build cannot start while paused; only the gauge)
    stats.image_paused("debian", True)  # unchanged: the 1 stays
    assert registry.get_sample_value("nodepool_builder_image_build_state", build_state) == 1
    stats.image_paused("debian", False)
    assert registry.get_sample_value("nodepool_builder_image_build_state", build_state) == 0
    stats.build_requests({"debian": True, "ubuntu": False, "fedora": True})
    assert registry.get_sample_value("nodepool_image_build_requests") == 2
    assert registry.get_sample_value(
        "nodepool_image_image_build_requests", {"image": "ubuntu"}) == 0
    assert ("g", "nodepool.builder.b1_example.image.debian.build.state", 1) in recorder.sent
    assert ("g", "nodepool.builder.b1_example.image.debian.provider.p1.upload.state",
            2) in recorder.sent
    assert ("g", "nodepool.image_build_requests", 2) in recorder.sent
    assert ("g", "nodepool.image.debian.image_build_requests", 1) in recorder.sent
    # Without the image (callers that do not pass it), only the worker counts change.
    stats.build_started()
    stats.upload_started()


def test_request_latency_per_label_and_node_provider() -> None:
    client, _recorder, registry = tee()
    latency = RequestLatency(client)
    request = NodeRequest(id="200-0000000001", node_types=["small", "big", "small"],
                          nodes=["n1", "n2", "n3"], created_time=100.0, state_time=112.5,
                          state=RequestState.FULFILLED)
    latency.finished(request, {"n1": "p1", "n2": "p2", "n3": "p1"}.get)

    def count(label: str, provider: str, result: str = "fulfilled") -> float | None:
        return registry.get_sample_value("nodepool_request_duration_seconds_count",
                                         {"label": label, "provider": provider, "result": result})

    assert count("small", "p1") == 1  # once per request, not per node
    assert count("big", "p2") == 1
    assert registry.get_sample_value(
        "nodepool_request_duration_seconds_sum",
        {"label": "small", "provider": "p1", "result": "fulfilled"}) == 12.5

    # No created_time: the first `requested` record seen starts the clock.
    seen = NodeRequest(id="200-0000000002", node_types=["small"], created_time=None,
                       state_time=50.0, state=RequestState.REQUESTED)
    latency.seen(seen)
    failed = NodeRequest(id="200-0000000002", node_types=["small"], created_time=None,
                         state_time=53.0, state=RequestState.FAILED)
    latency.finished(failed)
    assert count("small", "", "failed") == 1
    # Neither: not recorded (a request older than the launcher).
    latency.finished(NodeRequest(id="200-0000000003", node_types=["small"], created_time=None,
                                 state_time=60.0, state=RequestState.FAILED))
    assert count("small", "", "failed") == 1
    # Not final: nothing.
    latency.finished(NodeRequest(id="200-0000000004", node_types=["x"], created_time=1.0,
                                 state=RequestState.PENDING))
    assert count("x", "", "pending") is None


def test_webapp_metrics_and_health_answers() -> None:
    client, _recorder, registry = tee()
    client.incr(metrics.leaked("p1", "instances"))
    ready = [False]
    app = WebApp(lambda: None, source=None, ready_check=lambda: ready[0], registry=registry)
    assert app.respond("/health/live", "")[0] == 200
    assert app.respond("/health/ready", "")[0] == 503  # not started
    app.ready = True  # as start() does
    assert app.respond("/health/ready", "") == (503, "text/plain", "Not ready")
    ready[0] = True
    assert app.respond("/health/ready", "") == (200, "text/plain", "OK")
    assert app.respond("/health/ready?verbose=1", "")[0] == 200
    ready[0] = False  # upstream's /ready gives the same answer
    assert app.respond("/ready", "") == (503, "text/plain", "Not ready")
    ready[0] = True
    assert app.respond("/ready", "") == (200, "text/plain", "OK")
    status, ctype, body = app.respond("/metrics", "")
    assert status == 200 and ctype.startswith("text/plain; version=")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples[("nodepool_provider_leaked_total",
                    (("provider", "p1"), ("resource", "instances")))] == 1
    assert app.respond("/health", "")[0] == 404


def test_webapp_without_tables_serves_metrics_and_health_only() -> None:
    app = WebApp(None, tables=False, registry=CollectorRegistry())
    app.ready = True
    assert app.respond("/metrics", "")[0] == 200
    assert app.respond("/health/ready", "")[0] == 200
    assert app.respond("/health/live", "")[0] == 200
    assert app.respond("/node-list", "") == (404, "text/plain", "Not found")
    assert app.respond("/image-list.json", "application/json")[0] == 404

"""`/metrics` (Prometheus text format, parsed with prometheus_client's own parser) and
`/health/*` of the web app, over real HTTP, fed by the real emitters: an in-process launcher
on simcloud (a launch, a failed launch, a leaked server) and an in-process builder (an
upload). The registry is per process, so every check compares before and after.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import openstack.config
import openstack.connection
import pytest
from kazoo.client import KazooClient
from prometheus_client.parser import text_string_to_metric_families

from nodepool_ng.builder.service import Builder
from nodepool_ng.launcher.service import Launcher, LauncherOptions
from nodepool_ng.model.image import UploadState
from nodepool_ng.web.server import WebApp
from nodepool_ng.zk import paths
from tests.builder.support import diskimage, provider, read_uploads, write_config
from tests.builder.test_upload import FAST as BUILDER_FAST
from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h
from tests.launcher.env import Env

Sample = tuple[str, frozenset[tuple[str, str]]]


def get(app: WebApp, path: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{app.port}{path}", timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def scrape(app: WebApp) -> dict[Sample, float]:
    """Every sample of `/metrics`, by (sample name, labels)."""
    status, headers, body = get(app, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Scraper:
    """Differences of samples since the last `mark()`."""

    def __init__(self, app: WebApp) -> None:
        self.app = app
        self.before = scrape(app)

    def mark(self) -> None:
        self.before = scrape(self.app)

    def delta(self, name: str, **labels: str) -> float:
        return value(scrape(self.app), name, **labels) - value(self.before, name, **labels)

    def wait_delta(self, name: str, expected: float, **labels: str) -> None:
        h.wait_for(
            f"{name}{labels} to grow by {expected}",
            lambda: self.delta(name, **labels) == expected,
        )

    def now(self, name: str, **labels: str) -> float:
        return value(scrape(self.app), name, **labels)


@pytest.fixture
def app(zk_chroot: ZooKeeperChroot) -> Iterator[WebApp]:
    """A web app with no ZooKeeper client: /metrics and /health/* need none."""
    webapp = WebApp(lambda: None, host="127.0.0.1", port=0)
    webapp.start()
    try:
        yield webapp
    finally:
        webapp.stop()


def unique(prefix: str) -> str:
    """A provider name no other test in this process used (the registry is per process)."""
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def test_launch_and_failed_launch_in_metrics(
    env: Env, kazoo_client: KazooClient, app: WebApp
) -> None:
    env.clouds([{"name": "cloud1"}])
    p = unique("p")
    m = Scraper(app)
    env.start(
        [h.provider(p, "cloud1", **{"max-servers": 5, "launch-retries": 1})], stats_interval=0.2
    )
    rid = h.submit_request(kazoo_client, ["small"])
    assert h.wait_request(kazoo_client, rid)["state"] == "fulfilled"

    m.wait_delta("nodepool_launch_provider_total", 1, provider=p, result="ready")
    assert m.delta("nodepool_launch_total", result="ready") >= 1
    assert m.delta("nodepool_launch_requestor_total",
                   requestor="zuul-scheduler-1", result="ready") >= 1
    # Launch duration: a histogram beside each counter, one observation per launch.
    assert m.delta("nodepool_launch_provider_duration_seconds_count",
                   provider=p, result="ready") == 1
    assert m.now("nodepool_launch_provider_duration_seconds_sum", provider=p, result="ready") > 0
    # Request latency (creation -> fulfilled) by label and provider, from the stats leader.
    m.wait_delta("nodepool_request_duration_seconds_count", 1,
                 label="small", provider=p, result="fulfilled")
    latency = m.now("nodepool_request_duration_seconds_sum",
                    label="small", provider=p, result="fulfilled")
    assert latency > 0
    # Node gauges of the stats leader.
    h.wait_for("ready gauge", lambda: m.now("nodepool_provider_nodes", provider=p,
                                            state="ready") == 1)
    assert m.now("nodepool_provider_max_servers", provider=p) == 5

    # A failed launch: every server create fails, the one attempt is counted as an error
    # and the request fails (its latency under result="failed"). The latency of a request
    # is recorded once, when it ends: nothing more for the fulfilled one.
    state = env.sim.states["cloud1"]  # type: ignore[union-attr]
    with state.lock:
        state.faults["server_error_rate"] = 1.0
    m.mark()
    failed = h.submit_request(kazoo_client, ["small"])
    assert h.wait_request(kazoo_client, failed)["state"] == "failed"
    errors = [
        (name, labels) for (name, labels) in scrape(app)
        if name == "nodepool_launch_provider_total" and ("provider", p) in labels
        and dict(labels)["result"].startswith("error.")
    ]
    assert errors, "no error result counted for the failed launch"
    result = dict(errors[0][1])["result"]
    assert m.delta("nodepool_launch_provider_total", provider=p, result=result) == 1
    assert m.delta("nodepool_launch_provider_duration_seconds_count",
                   provider=p, result=result) == 1
    assert m.delta("nodepool_launch_provider_total", provider=p, result="ready") == 0
    # The cloud's refusal is an API error of the provider (Prometheus only).
    m.wait_delta("nodepool_provider_api_errors_total", 1, provider=p, operation="launch")
    # A failed request has no node, so no provider (nor did Zuul ask for one).
    m.wait_delta("nodepool_request_duration_seconds_count", 1,
                 label="small", provider="", result="failed")
    assert m.delta("nodepool_request_duration_seconds_count",
                   label="small", provider=p, result="fulfilled") == 0
    h.accept_and_use(kazoo_client, rid)


def test_leaked_server_in_metrics(env: Env, app: WebApp) -> None:
    sim = env.clouds([{"name": "cloud1"}])
    p = unique("leak")
    region = openstack.config.OpenStackConfig(
        config_files=[str(env.clouds_yaml)], vendor_files=[], load_envvars=False
    ).get_one(cloud="cloud1")
    conn = openstack.connection.Connection(config=region)
    owner = {"nodepool_node_id": "0000099999", "nodepool_provider_name": p,
             "nodepool_pool_name": "main"}
    leaked = conn.create_server("np0000099999", image="debian", flavor="small", meta=owner)
    conn.close()
    m = Scraper(app)
    env.start([h.provider(p, "cloud1")])
    h.wait_for("leaked server deleted",
               lambda: leaked.id not in {s.id for s in h.servers(sim, "cloud1")})
    m.wait_delta("nodepool_provider_leaked_total", 1, provider=p, resource="instances")


def test_upload_in_metrics(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, kazoo_client: KazooClient, app: WebApp
) -> None:
    image = unique("img")
    with SimCloudFixture(simcloud_profile(1), directory=tmp_path / "sim") as clouds:
        config = write_config(tmp_path, zk_chroot, [diskimage(image)],
                              [provider("sim-a", image=image)])
        m = Scraper(app)
        builder = Builder(str(config), timing=BUILDER_FAST, hostname="builder-prom",
                          upload_workers=1, clouds_yaml=str(clouds.clouds_yaml))
        builder.start()
        try:
            h.wait_for("a ready upload", lambda: [
                u for u in read_uploads(kazoo_client, "sim-a", image=image)
                if u.state == UploadState.READY], timeout=60)
            m.wait_delta("nodepool_image_update_total", 1, image=image, provider="sim-a")
            assert m.delta("nodepool_image_update_duration_seconds_count",
                           image=image, provider="sim-a") == 1
            # The build that preceded it, and the builder's state gauges back at idle.
            assert m.now("nodepool_dib_image_build_rc", image=image) == 0
            assert m.delta("nodepool_dib_image_build_duration_seconds_count", image=image) == 1
            assert m.now("nodepool_dib_image_build_last_build_timestamp_seconds",
                         image=image) > 0
            assert m.now("nodepool_builder_image_build_state",
                         host="builder-prom", image=image) == 0
            assert ("nodepool_builder_image_upload_state",
                    frozenset({("host", "builder-prom"), ("image", image),
                               ("provider", "sim-a")})) in scrape(app)
            assert m.now("nodepool_builder_upload_workers", host="builder-prom") == 1
        finally:
            builder.stop()


def test_health_ready_only_once_the_pools_are_registered(
    env: Env, kazoo_client: KazooClient
) -> None:
    env.clouds([{"name": "cloud1"}])
    config = env.config([h.provider(unique("p"), "cloud1")])
    options = LauncherOptions(hostname=unique("test-"), clouds_yaml=str(env.clouds_yaml),
                              **h.FAST)  # type: ignore[arg-type]
    launcher = Launcher(str(config), options=options)
    env.launchers.append(launcher)
    # Started before the launcher, as the daemon does: the health checks answer at once.
    app = WebApp(lambda: launcher.zk_client, lambda: launcher.config, host="127.0.0.1",
                 port=0, ready_check=launcher.ready.is_set)
    app.start()
    seen: list[tuple[int, list[str]]] = []
    stop = threading.Event()

    def poll() -> None:
        # Whenever /health/ready says 200, the pools are registered already.
        while not stop.is_set():
            status = get(app, "/health/ready")[0]
            pools = (kazoo_client.get_children(paths.COMPONENTS_ROOT + "/pool")
                     if kazoo_client.exists(paths.COMPONENTS_ROOT + "/pool") else [])
            seen.append((status, pools))

    try:
        assert get(app, "/health/live") == (200, get(app, "/health/live")[1], "OK")
        assert get(app, "/health/ready")[0] == 503
        # The status tables need ZooKeeper: 503 until the launcher connected.
        assert get(app, "/node-list")[0] == 503
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        launcher.start()
        h.wait_for("a 200 seen by the poller", lambda: any(s == 200 for s, _ in seen))
        stop.set()
        poller.join(10)
        status, _headers, body = get(app, "/health/ready")
        assert (status, body) == (200, "OK")
        assert all(pools for status, pools in seen if status == 200)
        assert get(app, "/health/live")[0] == 200
        assert get(app, "/node-list")[0] == 200
    finally:
        stop.set()
        app.stop()

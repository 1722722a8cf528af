"""Every statsd name `metrics.py` builds is upstream Nodepool's, character for character
(doc/metrics.md); node-state gauges cover every NodeState (pure)."""

from __future__ import annotations

from nodepool_ng import metrics
from nodepool_ng.model.node import NodeState


def test_launcher_names() -> None:
    assert metrics.launch("error.quota") == "nodepool.launch.error.quota"
    assert metrics.launch_provider("p1", "ready") == "nodepool.launch.provider.p1.ready"
    assert metrics.launch_provider_az("p1", "az1", "ready") == (
        "nodepool.launch.provider.p1.az1.ready")
    assert metrics.launch_requestor("zuul.example:1", "ready") == (
        "nodepool.launch.requestor.zuul_example_1.ready")
    assert metrics.nodes("in-use") == "nodepool.nodes.in-use"
    assert metrics.provider_nodes("p1", "ready") == "nodepool.provider.p1.nodes.ready"
    assert metrics.label_nodes("small", "ready") == "nodepool.label.small.nodes.ready"
    assert metrics.provider_max_servers("p1") == "nodepool.provider.p1.max_servers"
    assert metrics.addressable_requests("p1", "main") == (
        "nodepool.provider.p1.pool.main.addressable_requests")
    assert metrics.tenant_limit("t1", "cores") == "nodepool.tenant_limits.t1.cores"
    assert metrics.leaked("p1", "ports") == "nodepool.provider.p1.leaked.ports"
    assert metrics.launcher_zk("h.example", "node_cache.event_queue") == (
        "nodepool.launcher.h_example.zk.node_cache.event_queue")


def test_builder_names() -> None:
    assert metrics.dib_image_build_size("debian", "qcow2") == (
        "nodepool.dib_image_build.debian.qcow2.size")
    assert metrics.dib_image_build_status("debian", "rc") == (
        "nodepool.dib_image_build.debian.status.rc")
    assert metrics.image_update("debian", "p1") == "nodepool.image_update.debian.p1"
    assert metrics.image_build_requests() == "nodepool.image_build_requests"
    assert metrics.image_image_build_requests("debian") == (
        "nodepool.image.debian.image_build_requests")
    assert metrics.builder_gauge("b.example", "current_builds") == (
        "nodepool.builder.b_example.current_builds")
    assert metrics.builder_build_state("b:1", "debian") == (
        "nodepool.builder.b_1.image.debian.build.state")
    assert metrics.builder_upload_state("b", "debian", "p1") == (
        "nodepool.builder.b.image.debian.provider.p1.upload.state")


def test_node_states_are_every_node_state_in_order() -> None:
    assert metrics.NODE_STATES == (
        "init", "building", "testing", "ready", "in-use", "used", "hold", "deleting",
        "failed", "aborted", "deleted")
    assert tuple(NodeState) == metrics.NODE_STATES

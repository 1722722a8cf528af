"""Records derive their JSON from their fields: the exact bytes upstream writes, a round trip
that changes nothing, and unknown keys kept and written back after the known ones (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nodepool_ng.model.component import (
    BuilderComponent,
    ComponentState,
    LauncherComponent,
    PoolComponent,
)
from nodepool_ng.model.image import ImageBuild, ImageUpload
from nodepool_ng.model.node import NODE_KEYS, Node, NodeState
from nodepool_ng.model.record import MalformedRecord
from nodepool_ng.model.request import REQUEST_KEYS, NodeRequest

NODE_JSON = (
    b'{"state": "ready", "state_time": 1.0, "cloud": null, "provider": null, "pool": null, '
    b'"type": ["small"], "allocated_to": null, "az": null, "region": null, "public_ipv4": null, '
    b'"private_ipv4": null, "public_ipv6": null, "host_id": null, "interface_ip": null, '
    b'"connection_port": 22, "ssh_port": 22, "image_id": null, "launcher": null, '
    b'"created_time": null, "external_id": null, "hostname": null, "comment": null, '
    b'"user_data": null, "hold_job": null, "host_keys": [], "username": "zuul", '
    b'"connection_type": null, "shell_type": null, "hold_expiration": null, "resources": null, '
    b'"slot": null, "attributes": null, "python_path": null, "tenant_name": null, '
    b'"driver_data": null, "requestor": null, "node_properties": {}}'
)
REQUEST_JSON = (
    b'{"state": "requested", "state_time": 2.0, "declined_by": [], "node_types": ["a"], '
    b'"nodes": [], "reuse": true, "requestor": null, "requestor_data": null, "provider": null, '
    b'"relative_priority": 0, "event_id": null, "created_time": null, "tenant_name": null}'
)
BUILD_JSON = (
    b'{"state": "building", "state_time": 3.0, "builder": "h", "formats": "qcow2,raw", '
    b'"username": "zuul", "python_path": "/usr/bin/python2", "shell_type": null}'
)
UPLOAD_JSON = (
    b'{"state": "uploading", "state_time": 4.0, "external_id": "x", "external_name": null, '
    b'"format": null, "username": "zuul", "python_path": "/usr/bin/python2", '
    b'"shell_type": null}'
)
LAUNCHER_JSON = (
    b'{"hostname": "h", "kind": "launcher", "model_api": 0, "state": "initializing", '
    b'"version": "1"}'
)

POOL_JSON = (
    b'{"hostname": "h", "id": "h-PoolWorker.p-main-1", "kind": "pool", "model_api": 0, '
    b'"name": "main", "paused": false, "priority": 100, "provider_name": "p", '
    b'"state": "running", "supported_labels": ["a"], "version": null}'
)


def test_exact_upstream_json() -> None:
    assert Node(id="1", state=NodeState.READY, state_time=1.0, type=["small"]).to_json() == (
        NODE_JSON)
    request = NodeRequest(id="100-0000000001", state_time=2.0, node_types=["a"])
    assert request.to_json() == REQUEST_JSON
    build = ImageBuild(image_name="i", id="b", state_time=3.0, formats=["raw", "qcow2"],
                       builder="h")
    assert build.to_json() == BUILD_JSON
    assert ImageUpload(state_time=4.0, external_id="x").to_json() == UPLOAD_JSON
    assert LauncherComponent(hostname="h", version="1").to_json() == LAUNCHER_JSON
    pool = PoolComponent(hostname="h", state=ComponentState.RUNNING, id="h-PoolWorker.p-main-1",
                         name="main", provider_name="p", supported_labels=["a"])
    assert pool.to_json() == POOL_JSON


def test_declared_keys_are_upstream_order() -> None:
    assert tuple(json.loads(NODE_JSON)) == NODE_KEYS == Node.json_keys()
    assert tuple(json.loads(REQUEST_JSON)) == REQUEST_KEYS
    assert "id" not in NODE_KEYS and "lock" not in NODE_KEYS and "zk_version" not in NODE_KEYS


# Each record read from its exact JSON plus unknown keys, through its own from_dict.
READERS: dict[str, tuple[bytes, Any]] = {
    "node": (NODE_JSON, lambda d: Node.from_dict("0000000001", d)),
    "request": (REQUEST_JSON, lambda d: NodeRequest.from_dict("100-0000000001", d)),
    "build": (BUILD_JSON, lambda d: ImageBuild.from_dict("i", "b", d)),
    "upload": (UPLOAD_JSON, lambda d: ImageUpload.from_dict("i", "b", "p", "0000000001", d)),
    "launcher": (LAUNCHER_JSON, LauncherComponent.from_dict),
    "builder": (LAUNCHER_JSON.replace(b'"launcher"', b'"builder"'), BuilderComponent.from_dict),
    "pool": (POOL_JSON, PoolComponent.from_dict),
}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_round_trip_keeps_unknown_keys_after_known_ones(kind: str) -> None:
    raw, read = READERS[kind]
    data = {**json.loads(raw), "zuul_future": {"x": [1]}, "zuul_id": "0000000001"}
    record = read(data)
    assert record.extra == {"zuul_future": {"x": [1]}, "zuul_id": "0000000001"}
    out = record.to_dict()
    assert out == data
    if kind not in ("launcher", "builder", "pool"):  # components: sorted keys
        assert list(out) == list(data)
        unknown = b', "zuul_future": {"x": [1]}, "zuul_id": "0000000001"}'
        assert record.to_json() == raw[:-1] + unknown
    assert read(json.loads(record.to_json())) == record


def test_node_special_fields() -> None:
    # `ssh_port` is written from connection_port and read when connection_port is absent;
    # an old single-string `type` reads as a list; null node_properties reads as {}.
    node = Node.from_dict("1", {"ssh_port": 2022, "type": "old", "node_properties": None})
    assert node.connection_port == 2022 and node.type == ["old"] and node.node_properties == {}
    assert node.state is None and node.state_time is None  # absent: None, not "now"
    assert node.to_dict()["ssh_port"] == 2022 and "ssh_port" not in node.extra
    with pytest.raises(MalformedRecord, match=r"node 1: resources: \{'cores': 'x'\}"):
        Node.from_dict("1", {"resources": {"cores": "x"}})
    with pytest.raises(MalformedRecord, match=r"node 1: type: \[5\]"):
        Node.from_dict("1", {"type": 5})
    assert Node.from_dict("1", {"hold_expiration": "soon"}).hold_expiration == 0


def test_request_defaults_for_what_zuul_omits() -> None:
    request = NodeRequest.from_dict("100-1", {"state": "requested", "relative_priority": None})
    assert request.reuse is True and request.relative_priority == 0
    assert request.declined_by == request.nodes == []
    with pytest.raises(MalformedRecord, match="request 100-1: node_types: 'small'"):
        NodeRequest.from_dict("100-1", {"state": "requested", "node_types": "small"})


def test_build_omits_unset_keys_and_images_are_not_type_checked() -> None:
    build = ImageBuild.from_dict("i", "b", {"state": "ready", "formats": 5, "builder": None})
    assert build.formats == [] and set(build.to_dict()) == {
        "state", "state_time", "username", "python_path", "shell_type"}


def test_components_read_leniently() -> None:
    launcher = LauncherComponent.from_dict({"state": "exploded", "model_api": None})
    assert launcher.state is ComponentState.STOPPED and launcher.hostname == ""
    assert launcher.model_api == 0 and launcher.kind.value == "launcher"
    assert BuilderComponent.from_dict({"kind": "launcher"}).to_dict()["kind"] == "builder"
    pool = PoolComponent.from_dict({"priority": None, "paused": 1, "supported_labels": None})
    assert (pool.priority, pool.paused, pool.supported_labels) == (100, True, [])


def test_node_type_checks_look_at_each_key_as_written() -> None:
    # An `ssh_port` standing in for an absent connection_port is taken as it is, as
    # upstream does; only the keys a field owns are type-checked.
    assert Node.from_dict("1", {"ssh_port": "22"}).connection_port == "22"
    with pytest.raises(MalformedRecord, match="node 1: connection_port"):
        Node.from_dict("1", {"connection_port": "22"})

"""Record JSON: upstream keys, defaults, unknown keys kept, no internal keys (pure)."""

from __future__ import annotations

import json

import pytest

from nodepool_ng.model.component import PoolComponent
from nodepool_ng.model.image import ImageBuild, ImageUpload, UploadState
from nodepool_ng.model.node import NODE_KEYS, Node, NodeState
from nodepool_ng.model.request import (
    NodeRequest,
    RequestState,
    format_priority,
    is_request_id,
    parse_request_id,
)

SPEC_NODE_KEYS = {
    "state", "state_time", "cloud", "provider", "pool", "type", "allocated_to", "az", "region",
    "public_ipv4", "private_ipv4", "public_ipv6", "host_id", "interface_ip", "connection_port",
    "ssh_port", "image_id", "launcher", "created_time", "external_id", "hostname", "comment",
    "user_data", "hold_job", "host_keys", "username", "connection_type", "shell_type",
    "hold_expiration", "resources", "slot", "attributes", "python_path", "tenant_name",
    "driver_data", "requestor", "node_properties",
}


def test_node_json_has_every_spec_key_and_nothing_internal() -> None:
    node = Node(id="0000000001", state=NodeState.READY, type=["small"], connection_port=2222)
    node.lock = object()
    node.lock_contenders = frozenset({"x__lock__0000000000"})
    data = json.loads(node.to_json())
    assert set(data) == SPEC_NODE_KEYS == set(NODE_KEYS)
    assert "id" not in data
    assert data["ssh_port"] == data["connection_port"] == 2222
    assert data["username"] == "zuul"
    assert data["state"] == "ready"


def test_node_unknown_keys_and_zuul_id_survive() -> None:
    raw = {"state": "in-use", "type": "old-string-label", "id": "0000000007", "zuul_extra": [1]}
    node = Node.from_dict("0000000007", raw)
    assert node.type == ["old-string-label"]
    out = node.to_dict()
    assert out["id"] == "0000000007" and out["zuul_extra"] == [1]
    assert Node.from_dict("0000000007", out) == node


def test_node_read_defaults_and_coercions() -> None:
    node = Node.from_dict("1", {"state": "ready", "ssh_port": 2022, "hold_expiration": "x"})
    assert node.connection_port == 2022
    assert node.hold_expiration == 0
    assert node.username == "zuul"
    with pytest.raises(ValueError, match=r"node 1: .*'bogus'"):
        Node.from_dict("1", {"state": "bogus"})


def test_setting_state_stamps_state_time() -> None:
    node = Node.from_dict("1", {"state": "ready", "state_time": 1.0})
    assert node.state_time == 1.0
    node.state = NodeState.USED
    assert node.state_time is not None and node.state_time > 1.0
    request = NodeRequest.from_dict("100-0000000001", {"state": "requested", "state_time": 2.0})
    request.set_state("pending")
    assert request.state is RequestState.PENDING
    assert request.state_time is not None and request.state_time > 2.0


def test_request_from_zuul_json_gets_defaults_and_keeps_extras() -> None:
    zuul = {
        "requestor_data": {"build_set_uuid": "b", "job_name": "j"},
        "node_types": ["a", "b", "a"],
        "requestor": "zuul-system",
        "created_time": 5.0,
        "provider": None,
        "state": "requested",
        "state_time": 5.0,
        "relative_priority": 2,
        "event_id": None,
        "tenant_name": "t",
        "future_key": {"x": 1},
    }
    request = NodeRequest.from_dict("200-0000000003", zuul)
    assert request.reuse is True and request.declined_by == [] and request.nodes == []
    out = request.to_dict()
    for key, value in zuul.items():
        assert out[key] == value
    assert request.sort_key == ("200", 2, "0000000003")


def test_request_ids_and_priorities() -> None:
    assert format_priority(99) == "099"
    assert format_priority("100") == "100"
    with pytest.raises(ValueError):
        format_priority(1000)
    assert parse_request_id("099-0000000012") == ("099", "0000000012")
    assert not is_request_id("99-0000000012")
    assert not is_request_id("lock")


def test_image_records_round_trip() -> None:
    build = ImageBuild(image_name="debian", id="abc", formats=["vhd", "qcow2"], builder="h")
    data = build.to_dict()
    assert data["formats"] == "qcow2,vhd"
    assert "builder_id" not in data  # upstream omits unset builder ids
    back = ImageBuild.from_dict("debian", "abc", data)
    assert sorted(back.formats) == ["qcow2", "vhd"]
    legacy = ImageBuild.from_dict("debian", "abc", {"state": "ready"})
    assert legacy.python_path == "/usr/bin/python2" and legacy.formats == []
    upload = ImageUpload(image_name="debian", build_id="abc", provider_name="p", id="0000000001",
                         state=UploadState.READY, external_id="img-1")
    assert set(upload.to_dict()) == {"state", "state_time", "external_id", "external_name",
                                     "format", "username", "python_path", "shell_type"}
    assert upload.path == ""  # the UploadStore sets it: tests/zk/test_images.py


def test_pool_component_json() -> None:
    pool = PoolComponent(hostname="h", id="h-PoolWorker.p-main-1", name="main",
                         provider_name="p", supported_labels=["a"], version="1")
    data = json.loads(pool.to_json())
    assert data == {
        "hostname": "h", "state": "initializing", "kind": "pool", "version": "1",
        "model_api": 0, "id": "h-PoolWorker.p-main-1", "name": "main", "provider_name": "p",
        "supported_labels": ["a"], "priority": 100, "paused": False,
    }
    assert list(json.loads(pool.to_json())) == sorted(data)
    assert PoolComponent.from_dict(data) == pool

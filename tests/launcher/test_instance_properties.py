"""instance-properties and dynamic-instance-properties (pool labels): rendered from the request
(`{request.<attr>}`: id, labels, requestor, requestor_data, relative_priority, event_id,
created_time, tenant_name) into the server's metadata, read back with openstacksdk. A template
that cannot be rendered is logged and left out; the launch goes on (as upstream)."""

from __future__ import annotations

import logging

import openstack.config
import openstack.connection
import pytest
from kazoo.client import KazooClient

from tests.launcher import harness as h
from tests.launcher.env import Env


def connect(env: Env, cloud: str) -> openstack.connection.Connection:
    region = openstack.config.OpenStackConfig(
        config_files=[str(env.clouds_yaml)], vendor_files=[], load_envvars=False
    ).get_one(cloud=cloud)
    return openstack.connection.Connection(config=region)


def test_dynamic_instance_properties_rendered_into_server_metadata(
    env: Env, kazoo_client: KazooClient, caplog: pytest.LogCaptureFixture
) -> None:
    env.clouds([{"name": "cloud1"}])
    prov = h.provider("p1", "cloud1")
    prov["pools"][0]["labels"][0].update({
        "instance-properties": {"team": "infra"},
        "dynamic-instance-properties": {
            "zuul_tenant": "{request.tenant_name}",
            "job": "{request.requestor_data[job_name]}",
            "request": "{request.id}",
            "who": "{request.requestor}",
            "labels": "{request.labels[0]}",
            "missing_key": "{request.requestor_data[no_such_key]}",
            "missing_attr": "{request.no_such_attr}",
        },
    })
    env.start([prov])
    caplog.set_level(logging.WARNING, logger="nodepool_ng.launcher.pool")
    rid = h.submit_request(kazoo_client, ["small"])  # tenant "t", job_name "job"
    req = h.wait_request(kazoo_client, rid)
    assert req["state"] == "fulfilled"  # bad templates did not fail the launch
    node = h.node(kazoo_client, req["nodes"][0])
    assert node is not None and node["state"] == "ready"
    conn = connect(env, "cloud1")
    try:
        meta = conn.compute.get_server(node["external_id"]).metadata
    finally:
        conn.close()
    assert meta["zuul_tenant"] == "t"
    assert meta["job"] == "job"
    assert meta["request"] == rid
    assert meta["who"] == "zuul-scheduler-1"
    assert meta["labels"] == "small"
    assert meta["team"] == "infra"
    assert "missing_key" not in meta and "missing_attr" not in meta
    # Nodepool's own keys are there too.
    assert meta["nodepool_node_id"] == req["nodes"][0]
    assert meta["nodepool_provider_name"] == "p1"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "missing_key" in warned and "missing_attr" in warned

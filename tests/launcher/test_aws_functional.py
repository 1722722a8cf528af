"""A launcher with an OpenStack provider (simcloud) and an AWS provider (moto_server) in one
config: the driver registry picks each provider's adapter from its `driver:` value.

Zuul's side is plain kazoo (harness): requests for a label only OpenStack has, one only AWS
has and one both have; used AWS nodes are terminated in EC2; a leaked EC2 instance (nodepool
tags, no node record) is terminated by the cleanup passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from nodepool_ng.drivers.base import META_NODE_ID, META_POOL_NAME, META_PROVIDER_NAME
from tests.fixtures.moto import AwsCloud, FaultProxy, MotoServer, moto_behind_proxy
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h
from tests.launcher.env import Env

XENIAL = "ami-785db401"  # one of moto's stock AMIs
LABELS = [{"name": "os-only"}, {"name": "aws-only"}, {"name": "both"}]


@pytest.fixture(scope="module")
def _moto() -> Iterator[tuple[MotoServer, FaultProxy]]:
    with moto_behind_proxy() as servers:
        yield servers


@pytest.fixture
def aws(_moto: tuple[MotoServer, FaultProxy], monkeypatch: pytest.MonkeyPatch) -> AwsCloud:
    """An empty moto cloud; the standard AWS settings (AWS_ENDPOINT_URL, ...) point at it."""
    cloud = AwsCloud(*_moto)
    cloud.reset()
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for key, value in cloud.env.items():
        monkeypatch.setenv(key, value)
    return cloud


@pytest.fixture
def env(tmp_path: Path, zk_chroot: ZooKeeperChroot) -> Iterator[Env]:
    e = Env(tmp_path, zk_chroot)
    try:
        yield e
    finally:
        e.stop()


def aws_provider(aws: AwsCloud) -> dict[str, Any]:
    ec2 = aws.client("ec2")
    ec2.create_key_pair(KeyName="np-key")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]
    label = {"cloud-image": "xenial", "instance-type": "t3.medium", "key-name": "np-key"}
    return {
        "name": "ec2",
        "driver": "aws",
        "region-name": "us-east-1",
        "rate": 100,
        "cloud-images": [{"name": "xenial", "image-id": XENIAL, "username": "ubuntu"}],
        "pools": [{
            "name": "main",
            "max-servers": 5,
            "host-key-checking": False,
            "subnet-id": subnet["SubnetId"],
            "labels": [{"name": "aws-only", **label}, {"name": "both", **label}],
        }],
    }


def ec2_state(aws: AwsCloud, instance_id: str) -> str:
    found = aws.client("ec2").describe_instances(InstanceIds=[instance_id])
    return str(found["Reservations"][0]["Instances"][0]["State"]["Name"])


def test_mixed_openstack_and_aws_providers(
    env: Env, aws: AwsCloud, kazoo_client: KazooClient
) -> None:
    sim = env.clouds([{"name": "cloud1"}])
    openstack = h.provider("os", "cloud1", labels=("os-only", "both"))
    env.start([openstack, aws_provider(aws)], LABELS)
    kz = kazoo_client

    served: dict[str, dict[str, Any]] = {}
    for label in ("os-only", "aws-only", "both"):
        rid = h.submit_request(kz, [label])
        req = h.wait_request(kz, rid, timeout=60)
        assert req["state"] == "fulfilled", req
        (nid,) = req["nodes"]
        node = h.node(kz, nid)
        assert node is not None and node["state"] == "ready", node
        served[label] = node
        h.accept_and_use(kz, rid)

    os_node, aws_node = served["os-only"], served["aws-only"]
    assert os_node["provider"] == "os" and os_node["cloud"] == "cloud1"
    assert os_node["external_id"] and os_node["interface_ip"]

    assert aws_node["provider"] == "ec2"
    assert (aws_node["cloud"], aws_node["region"]) == ("AWS", "us-east-1")
    assert aws_node["az"] and aws_node["az"].startswith("us-east-1")
    assert aws_node["external_id"].startswith("i-")
    assert aws_node["interface_ip"] and aws_node["private_ipv4"]
    assert aws_node["interface_ip"] in (aws_node["public_ipv4"], aws_node["private_ipv4"])
    assert aws_node["username"] == "ubuntu"
    assert served["both"]["provider"] in ("os", "ec2")

    # Used nodes are deleted: the AWS ones are terminated in EC2, the records go.
    for node in served.values():
        if node["provider"] == "ec2":
            h.wait_for(f"instance {node['external_id']} terminated",
                       lambda n=node: ec2_state(aws, n["external_id"]) == "terminated",
                       timeout=60)
    h.wait_for("node records deleted", lambda: not h.all_nodes(kz), timeout=30)
    assert os_node["external_id"] not in {s.id for s in h.servers(sim, "cloud1")}

    # A leaked instance: nodepool's tags, a node id no record has. Cleanup terminates it.
    leaked = aws.client("ec2").run_instances(
        ImageId=XENIAL, InstanceType="t3.medium", MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": META_NODE_ID, "Value": "0000099999"},
            {"Key": META_POOL_NAME, "Value": "main"},
            {"Key": META_PROVIDER_NAME, "Value": "ec2"},
        ]}])["Instances"][0]["InstanceId"]
    h.wait_for("leaked instance terminated",
               lambda: ec2_state(aws, leaked) == "terminated", timeout=60)


def test_leaked_volume_deleted_after_two_passes(
    env: Env, aws: AwsCloud, kazoo_client: KazooClient
) -> None:
    """A volume the AWS adapter reports as a leak candidate (our provider's tags, left
    `available`, its node without a record: e.g. a launcher died between terminating the
    instance and deleting the volume) is deleted by the cleanup passes. The launcher core
    knows no resource kinds: the driver tells. A volume of a node that still has its record,
    and another owner's volume, stay."""
    env.clouds([{"name": "cloud1"}])
    launcher = env.start([aws_provider(aws)], LABELS)
    kz = kazoo_client
    rid = h.submit_request(kz, ["aws-only"])
    req = h.wait_request(kz, rid, timeout=60)
    assert req["state"] == "fulfilled", req
    (live_node,) = req["nodes"]
    ec2 = aws.client("ec2")

    def volume(*tags: tuple[str, str]) -> str:
        return str(ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, TagSpecifications=[
            {"ResourceType": "volume",
             "Tags": [{"Key": k, "Value": v} for k, v in tags]}])["VolumeId"])

    def volumes() -> set[str]:
        return {str(v["VolumeId"]) for v in ec2.describe_volumes()["Volumes"]}

    leaked = volume((META_NODE_ID, "0000099998"), (META_PROVIDER_NAME, "ec2"))
    kept = volume((META_NODE_ID, live_node), (META_PROVIDER_NAME, "ec2"))
    foreign = volume(("owner", "someone else"))
    h.wait_for("leaked volume deleted", lambda: leaked not in volumes(), timeout=60)
    passes = launcher.cleanup.passes
    h.wait_for("two more cleanup passes", lambda: launcher.cleanup.passes >= passes + 2)
    assert {kept, foreign} <= volumes()
    assert h.node(kz, live_node)["state"] == "ready"  # type: ignore[index]


def test_tags_and_dynamic_tags_on_the_instance(
    env: Env, aws: AwsCloud, kazoo_client: KazooClient
) -> None:
    """`tags` and `dynamic-tags` (upstream aws keys; the dynamic ones formatted with the
    request, as dynamic-instance-properties) end up as the EC2 instance's tags, next to
    nodepool's own; a template that cannot be rendered is left out, the launch goes on."""
    env.clouds([{"name": "cloud1"}])
    prov = aws_provider(aws)
    for label in prov["pools"][0]["labels"]:
        label["tags"] = {"team": "infra"}
        label["dynamic-tags"] = {"zuul_tenant": "{request.tenant_name}",
                                 "request": "{request.id}",
                                 "job": "{request.requestor_data[job_name]}",
                                 "missing": "{request.no_such_attr}"}
    env.start([prov], LABELS)
    kz = kazoo_client
    rid = h.submit_request(kz, ["aws-only"])  # tenant "t", job_name "job"
    req = h.wait_request(kz, rid, timeout=60)
    assert req["state"] == "fulfilled", req
    node = h.node(kz, req["nodes"][0])
    assert node is not None
    found = aws.client("ec2").describe_instances(InstanceIds=[node["external_id"]])
    raw = found["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags") or []}
    assert tags["team"] == "infra"
    assert tags["zuul_tenant"] == "t"
    assert tags["request"] == rid
    assert tags["job"] == "job"
    assert "missing" not in tags
    assert tags[META_NODE_ID] == req["nodes"][0]
    assert tags[META_PROVIDER_NAME] == "ec2" and tags[META_POOL_NAME] == "main"
    assert tags["Name"] == f"np{req['nodes'][0]}"


def test_interrupted_spot_instance_is_launched_again(
    env: Env, aws: AwsCloud, kazoo_client: KazooClient
) -> None:
    """`use-spot`: a spot instance that goes away while launching (EC2 reclaims it: state
    `terminated`, a spot state reason) fails that launch attempt, and the node is launched
    again on a new instance, so the request is still fulfilled.

    Simulated: the proxy delays DescribeInstances so the launcher has not seen the instance
    running yet, and the test terminates it in moto directly. moto's state reason is a
    user-initiated shutdown, not `Server.SpotInstanceTermination`: the launcher treats any
    instance gone while launching alike."""
    env.clouds([{"name": "cloud1"}])
    prov = aws_provider(aws)
    for label in prov["pools"][0]["labels"]:
        label["use-spot"] = True
    aws.proxy.delay("DescribeInstances", 1.5)
    env.start([prov], LABELS)
    kz = kazoo_client
    rid = h.submit_request(kz, ["aws-only"])
    first = h.wait_for("the first instance's id on the node", lambda: next(
        (n["external_id"] for n in h.all_nodes(kz).values() if n.get("external_id")), None),
        timeout=60)
    ec2 = aws.client("ec2")
    (reservation,) = ec2.describe_instances(InstanceIds=[first])["Reservations"]
    assert reservation["Instances"][0].get("InstanceLifecycle") == "spot"
    ec2.terminate_instances(InstanceIds=[first])  # the interruption
    aws.proxy.clear()
    req = h.wait_request(kz, rid, timeout=60)
    assert req["state"] == "fulfilled", req
    node = h.node(kz, req["nodes"][0])
    assert node is not None and node["state"] == "ready"
    assert node["external_id"] != first
    assert ec2_state(aws, node["external_id"]) == "running"
    assert ec2_state(aws, first) == "terminated"

"""Shared helpers of the AWS driver tests: a provider config on the moto cloud, an adapter,
launch specs, and driving a state machine to its end."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from nodepool_ng.drivers.aws.adapter import AwsAdapter
from nodepool_ng.drivers.aws.config import PROVIDER_SCHEMA, AwsProviderConfig, build_provider
from nodepool_ng.drivers.base import (
    META_NODE_ID,
    META_POOL_NAME,
    META_PROVIDER_NAME,
    Instance,
    LaunchSpec,
    StateMachine,
)
from tests.fixtures.moto import AwsCloud

UBUNTU_XENIAL = "ami-785db401"  # one of moto's stock AMIs
log = logging.getLogger("tests.aws")


def prepare_cloud(aws: AwsCloud) -> dict[str, str]:
    """A key pair, a security group and the default subnet; their names/ids."""
    ec2 = aws.client("ec2")
    ec2.create_key_pair(KeyName="np-key")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    sg = ec2.create_security_group(GroupName="np", Description="nodepool", VpcId=vpc)["GroupId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]
    return {"key": "np-key", "sg": sg, "subnet": subnet["SubnetId"],
            "az": subnet["AvailabilityZone"]}


def raw_provider(cloud: dict[str, str], labels: list[dict[str, Any]] | None = None,
                 **pool: Any) -> dict[str, Any]:
    labels = labels if labels is not None else [
        {"name": "small", "cloud-image": "xenial", "instance-type": "t3.medium",
         "key-name": cloud["key"]}]
    return {
        "name": "aws-test",
        "driver": "aws",
        "region-name": "us-east-1",
        "rate": 100,
        "launch-timeout": 60,
        "cloud-images": [
            {"name": "xenial", "image-id": UBUNTU_XENIAL, "username": "ubuntu"},
            {"name": "trusty-by-filter", "username": "ubuntu",
             "image-filters": [{"name": "name", "values": ["*ubuntu-trusty-14.04*"]}]},
            {"name": "nothing-matches", "username": "x",
             "image-filters": [{"name": "name", "values": ["no-such-image-*"]}]},
        ],
        "diskimages": [{"name": "custom", "volume-type": "gp3"}],
        "pools": [{"name": "main", "max-servers": 10, "subnet-id": cloud["subnet"],
                   "security-group-id": cloud["sg"], "labels": labels, **pool}],
    }


def provider_from(raw: dict[str, Any]) -> AwsProviderConfig:
    return build_provider(PROVIDER_SCHEMA(raw))


def make_adapter(provider: AwsProviderConfig, **kwargs: Any) -> AwsAdapter:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("max_attempts", 1)  # injected errors are not retried away by botocore
    return AwsAdapter(provider, **kwargs)


def spec(label: str, node_id: str = "0000000001", image: str = "",
         pool: str = "main", provider: str = "aws-test",
         metadata: dict[str, str] | None = None) -> LaunchSpec:
    meta = {META_NODE_ID: node_id, META_POOL_NAME: pool, META_PROVIDER_NAME: provider,
            **(metadata or {})}
    return LaunchSpec(hostname=f"np{node_id}", node_id=node_id, provider_name=provider,
                      pool_name=pool, label_name=label, image=image, metadata=meta)


def drive(adapter: AwsAdapter, machine: StateMachine, timeout: float = 60.0) -> Instance | None:
    """advance() until complete (woken by the adapter's progress listener); errors raise."""
    wake = threading.Event()
    adapter.set_progress_listener(wake.set)
    deadline = time.monotonic() + timeout
    result = None
    while not machine.complete:
        if time.monotonic() > deadline:
            raise AssertionError(f"state machine not complete after {timeout}s: "
                                 f"{getattr(machine, 'state', '?')}")
        result = machine.advance()
        wake.wait(0.05)
        wake.clear()
    return result


def describe(aws: AwsCloud, instance_id: str) -> dict[str, Any]:
    found = aws.client("ec2").describe_instances(InstanceIds=[instance_id])
    return dict(found["Reservations"][0]["Instances"][0])


def tags_of(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.get("Tags") or []}

"""Launch, delete and list instances through AwsAdapter against a real moto_server.

The adapter reaches moto_server through the standard AWS_ENDPOINT_URL setting and the fault
proxy of tests/fixtures/moto.py (which passes everything through unless a test sets a rule).
"""

from __future__ import annotations

import base64
import logging
import time

import pytest

from nodepool_ng.drivers.aws.quota import STANDARD_ON_DEMAND, STANDARD_SPOT
from nodepool_ng.drivers.base import META_NODE_ID, META_POOL_NAME, META_PROVIDER_NAME
from nodepool_ng.errors import LaunchError, QuotaExceeded
from nodepool_ng.launcher.quota import unmanaged_usage
from tests.drivers.aws.helpers import (
    UBUNTU_XENIAL,
    describe,
    drive,
    make_adapter,
    prepare_cloud,
    provider_from,
    raw_provider,
    spec,
    tags_of,
)
from tests.fixtures.moto import AwsCloud

log = logging.getLogger("tests.aws")


def test_launch_returns_a_running_instance_with_addresses_tags_and_settings(aws: AwsCloud):
    cloud = prepare_cloud(aws)
    iam = aws.client("iam")
    iam.create_instance_profile(InstanceProfileName="np-profile")
    label = {"name": "small", "cloud-image": "xenial", "instance-type": "t3.medium",
             "key-name": cloud["key"], "volume-size": 20, "volume-type": "gp3",
             "iops": 4000, "throughput": 250, "userdata": "#cloud-config\nhostname: x\n",
             "imdsv2": "required", "tags": {"team": "ci"},
             "iam-instance-profile": {"name": "np-profile"}}
    adapter = make_adapter(provider_from(raw_provider(cloud, [label])))
    try:
        machine = adapter.get_create_state_machine(
            spec("small", metadata={"job": "build-42"}), log)
        inst = drive(adapter, machine)
        assert inst is not None and machine.external_id == inst.external_id
        assert inst.status == "ready"
        assert inst.public_ipv4 and inst.private_ipv4
        assert inst.interface_ip == inst.public_ipv4  # public-ipv4 defaults to true
        assert inst.az == cloud["az"] and inst.region == "us-east-1" and inst.cloud == "AWS"
        assert inst.node_id == "0000000001" and inst.provider_name == "aws-test"
        # t3.medium: 2 vCPUs on 1 core, 4 GiB; the vCPUs count against the standard quota
        assert inst.resources is not None
        assert inst.resources.resources == {"cores": 1, "instances": 1, "ram": 4096,
                                            STANDARD_ON_DEMAND: 2}

        raw = describe(aws, inst.external_id)
        tags = tags_of(raw)
        assert tags[META_NODE_ID] == "0000000001"
        assert tags[META_POOL_NAME] == "main" and tags[META_PROVIDER_NAME] == "aws-test"
        assert tags["Name"] == "np0000000001"
        assert tags["team"] == "ci" and tags["job"] == "build-42"
        assert raw["ImageId"] == UBUNTU_XENIAL and raw["InstanceType"] == "t3.medium"
        assert raw["KeyName"] == "np-key" and raw["SubnetId"] == cloud["subnet"]
        assert raw["MetadataOptions"]["HttpTokens"] == "required"
        assert raw["IamInstanceProfile"]["Arn"].endswith("/np-profile")
        ec2 = aws.client("ec2")
        userdata = ec2.describe_instance_attribute(InstanceId=inst.external_id,
                                                   Attribute="userData")["UserData"]["Value"]
        assert base64.b64decode(userdata).decode() == "#cloud-config\nhostname: x\n"
        root = raw["BlockDeviceMappings"][0]["Ebs"]
        assert root["DeleteOnTermination"] is True
        volume = ec2.describe_volumes(VolumeIds=[root["VolumeId"]])["Volumes"][0]
        assert volume["Size"] == 20 and volume["VolumeType"] == "gp3"
        assert tags_of(volume)[META_NODE_ID] == "0000000001"  # volumes are tagged too
    finally:
        adapter.stop()


def test_delete_terminates_and_removes_leftover_volumes(aws: AwsCloud):
    cloud = prepare_cloud(aws)
    adapter = make_adapter(provider_from(raw_provider(cloud)))
    ec2 = aws.client("ec2")
    try:
        inst = drive(adapter, adapter.get_create_state_machine(spec("small"), log))
        assert inst is not None
        # A volume of this node that would outlive the instance (DeleteOnTermination off)
        leftover = ec2.create_volume(
            AvailabilityZone=cloud["az"], Size=1, TagSpecifications=[{
                "ResourceType": "volume",
                "Tags": [{"Key": META_NODE_ID, "Value": "0000000001"},
                         {"Key": META_PROVIDER_NAME, "Value": "aws-test"}]}])["VolumeId"]
        other = ec2.create_volume(AvailabilityZone=cloud["az"], Size=1)["VolumeId"]

        drive(adapter, adapter.get_delete_state_machine(inst.external_id, log))

        assert describe(aws, inst.external_id)["State"]["Name"] == "terminated"
        left = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
        assert leftover not in left  # ours: deleted
        assert other in left  # not ours: untouched
        # the root volume went with the instance (DeleteOnTermination)
        tagged = ec2.describe_volumes(Filters=[
            {"Name": "tag:" + META_NODE_ID, "Values": ["0000000001"]}])["Volumes"]
        assert tagged == []
        assert inst.external_id not in {i.external_id for i in adapter.list_instances()}
        # deleting again: already gone, completes without error
        drive(adapter, adapter.get_delete_state_machine(inst.external_id, log))
        drive(adapter, adapter.get_delete_state_machine("i-0123456789abcdef0", log))
    finally:
        adapter.stop()


def test_list_instances_shows_a_leaked_instance_with_its_nodepool_tags(aws: AwsCloud):
    cloud = prepare_cloud(aws)
    ec2 = aws.client("ec2")
    tags = [{"Key": META_NODE_ID, "Value": "0000000099"},
            {"Key": META_POOL_NAME, "Value": "main"},
            {"Key": META_PROVIDER_NAME, "Value": "aws-test"}]
    leaked = ec2.run_instances(ImageId=UBUNTU_XENIAL, MinCount=1, MaxCount=1,
                               InstanceType="t3.micro", TagSpecifications=[
                                   {"ResourceType": "instance", "Tags": tags}]
                               )["Instances"][0]["InstanceId"]
    foreign = ec2.run_instances(ImageId=UBUNTU_XENIAL, MinCount=1, MaxCount=1,
                                InstanceType="t3.micro")["Instances"][0]["InstanceId"]
    gone = ec2.run_instances(ImageId=UBUNTU_XENIAL, MinCount=1, MaxCount=1,
                             InstanceType="t3.micro", TagSpecifications=[
                                 {"ResourceType": "instance", "Tags": tags}]
                             )["Instances"][0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[gone])
    adapter = make_adapter(provider_from(raw_provider(cloud)))
    try:
        listed = {i.external_id: i for i in adapter.list_instances()}
        assert leaked in listed and foreign in listed
        assert gone not in listed  # terminated ones are not listed
        assert listed[leaked].node_id == "0000000099"
        assert listed[leaked].provider_name == "aws-test"
        assert listed[foreign].node_id is None
        # t3.micro: 2 vCPUs, 1 GiB; a foreign instance counts as unmanaged usage
        assert listed[foreign].resources is not None
        assert listed[foreign].resources.get("ram") == 1024
        # What the launcher's pool quota computes from the adapter's listing.
        used = unmanaged_usage(adapter.list_instances(), "aws-test", {"0000000099"})
        assert used.get("instances") == 1 and used.get(STANDARD_ON_DEMAND) == 2
        used = unmanaged_usage(adapter.list_instances(), "aws-test", set())  # leaked too
        assert used.get("instances") == 2 and used.get(STANDARD_ON_DEMAND) == 4
    finally:
        adapter.stop()


@pytest.mark.parametrize("code", ["InstanceLimitExceeded", "InsufficientInstanceCapacity",
                                  "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded"])
def test_quota_refusal_raises_quota_exceeded(aws: AwsCloud, code: str):
    """moto never refuses for quota: the fault proxy answers RunInstances with the error."""
    cloud = prepare_cloud(aws)
    adapter = make_adapter(provider_from(raw_provider(cloud)))
    aws.proxy.fail("RunInstances", code, "You have requested more instances than allowed",
                   times=1)
    try:
        machine = adapter.get_create_state_machine(spec("small"), log)
        with pytest.raises(QuotaExceeded, match=code):
            drive(adapter, machine)
        assert machine.external_id is None
        assert aws.proxy.calls["RunInstances"] == 1
        # the next attempt (rule used up) launches
        inst = drive(adapter, adapter.get_create_state_machine(spec("small"), log))
        assert inst is not None and inst.status == "ready"
    finally:
        adapter.stop()


def test_other_cloud_errors_are_launch_errors(aws: AwsCloud):
    """A throttled RunInstances (injected by the proxy) is a failed launch attempt, not quota."""
    cloud = prepare_cloud(aws)
    adapter = make_adapter(provider_from(raw_provider(cloud)))
    aws.proxy.fail("RunInstances", "RequestLimitExceeded", "Request limit exceeded.",
                   status=503, times=1)
    try:
        with pytest.raises(LaunchError, match="RequestLimitExceeded") as info:
            drive(adapter, adapter.get_create_state_machine(spec("small"), log))
        assert not isinstance(info.value, QuotaExceeded)
    finally:
        adapter.stop()


def test_bad_ami_fails_the_launch(aws: AwsCloud):
    """moto_server runs with MOTO_ENABLE_AMI_VALIDATION: an unknown AMI is refused."""
    cloud = prepare_cloud(aws)
    raw = raw_provider(cloud)
    raw["cloud-images"][0]["image-id"] = "ami-00000000deadbeef0"
    adapter = make_adapter(provider_from(raw))
    try:
        machine = adapter.get_create_state_machine(spec("small"), log)
        with pytest.raises(LaunchError, match="InvalidAMIID") as info:
            drive(adapter, machine)
        assert not isinstance(info.value, QuotaExceeded)
        assert machine.external_id is None
        assert adapter.list_instances() == []
    finally:
        adapter.stop()


def test_unknown_instance_type_fails_before_launching(aws: AwsCloud):
    cloud = prepare_cloud(aws)
    label = {"name": "small", "cloud-image": "xenial", "instance-type": "zz9.huge",
             "key-name": cloud["key"]}
    adapter = make_adapter(provider_from(raw_provider(cloud, [label])))
    try:
        with pytest.raises(LaunchError, match=r"zz9\.huge"):
            drive(adapter, adapter.get_create_state_machine(spec("small"), log))
        assert aws.proxy.calls["RunInstances"] == 0
    finally:
        adapter.stop()


def test_spot_launch(aws: AwsCloud):
    cloud = prepare_cloud(aws)
    label = {"name": "spot", "cloud-image": "xenial", "instance-type": "m5.large",
             "key-name": cloud["key"], "use-spot": True}
    adapter = make_adapter(provider_from(raw_provider(cloud, [label])))
    try:
        inst = drive(adapter, adapter.get_create_state_machine(spec("spot"), log))
        assert inst is not None and inst.status == "ready"
        assert describe(aws, inst.external_id)["InstanceLifecycle"] == "spot"
        # spot vCPUs count against the spot quota code, not the on-demand one
        assert inst.resources is not None
        assert inst.resources.get(STANDARD_SPOT) == 2
        assert inst.resources.get(STANDARD_ON_DEMAND) == 0
        assert adapter.get_quota_for_label(spec("spot")).get(STANDARD_SPOT) == 2
    finally:
        adapter.stop()


def test_cloud_image_by_filters(aws: AwsCloud):
    cloud = prepare_cloud(aws)
    ec2 = aws.client("ec2")
    trusty = ec2.describe_images(Filters=[
        {"Name": "name", "Values": ["*ubuntu-trusty-14.04*"]}])["Images"]
    assert len(trusty) == 1  # moto's stock AMIs: exactly one matches
    labels = [{"name": "trusty", "cloud-image": "trusty-by-filter", "instance-type": "t3.micro",
               "key-name": cloud["key"]},
              {"name": "none", "cloud-image": "nothing-matches", "instance-type": "t3.micro",
               "key-name": cloud["key"]}]
    adapter = make_adapter(provider_from(raw_provider(cloud, labels)))
    try:
        inst = drive(adapter, adapter.get_create_state_machine(
            spec("trusty", image="trusty-by-filter"), log))
        assert inst is not None
        assert describe(aws, inst.external_id)["ImageId"] == trusty[0]["ImageId"]
        with pytest.raises(LaunchError, match="no AMI matches"):
            drive(adapter, adapter.get_create_state_machine(
                spec("none", node_id="0000000002", image="nothing-matches"), log))
    finally:
        adapter.stop()


def test_instance_terminated_while_launching_is_a_launch_error(aws: AwsCloud):
    """A spot interruption: the instance is terminated (directly in moto) after RunInstances
    answered and before the machine saw it running."""
    cloud = prepare_cloud(aws)
    adapter = make_adapter(provider_from(raw_provider(cloud)))
    try:
        machine = adapter.get_create_state_machine(spec("small"), log)
        machine.advance()  # RunInstances submitted
        deadline = time.monotonic() + 30
        while machine.external_id is None:  # only the RunInstances answer is consumed
            assert time.monotonic() < deadline
            machine.advance()
            time.sleep(0.02)
        aws.client("ec2").terminate_instances(InstanceIds=[machine.external_id])
        with pytest.raises(LaunchError, match="terminated"):
            drive(adapter, machine)
    finally:
        adapter.stop()


def test_use_internal_ip_and_no_public_ip(aws: AwsCloud):
    cloud = prepare_cloud(aws)
    adapter = make_adapter(provider_from(raw_provider(cloud, **{"public-ipv4": False})))
    try:
        inst = drive(adapter, adapter.get_create_state_machine(spec("small"), log))
        assert inst is not None
        assert inst.public_ipv4 is None
        assert inst.interface_ip == inst.private_ipv4 is not None
    finally:
        adapter.stop()
    adapter = make_adapter(provider_from(raw_provider(cloud, **{"use-internal-ip": True})))
    try:
        inst = drive(adapter, adapter.get_create_state_machine(spec("small", "0000000002"),
                                                               log))
        assert inst is not None and inst.public_ipv4
        assert inst.interface_ip == inst.private_ipv4
    finally:
        adapter.stop()


def test_console_log(aws: AwsCloud):
    cloud = prepare_cloud(aws)
    adapter = make_adapter(provider_from(raw_provider(cloud)))
    try:
        inst = drive(adapter, adapter.get_create_state_machine(spec("small"), log))
        assert inst is not None
        assert "Linux version" in adapter.get_console_log(inst.external_id)
        assert adapter.get_console_log("i-0123456789abcdef0") == ""
    finally:
        adapter.stop()

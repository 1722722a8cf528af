"""The builder uploads to AWS (moto_server over HTTP): raw image -> EBS snapshot (EBS direct
APIs) -> AMI; the launcher boots a diskimage label from that AMI; rotation deregisters the old
AMI and deletes its snapshot.

Real ZooKeeper, the fake DIB (qemu-img), a real moto_server process; the builder picks the
AWS image adapter from the driver registry (`driver: aws`), the endpoint comes from
AWS_ENDPOINT_URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.model.image import BuildState, ImageUpload, UploadState
from nodepool_ng.zk import paths
from tests.builder.support import diskimage, read_builds, read_uploads, wait_for, write_config
from tests.fixtures.moto import AwsCloud, FaultProxy, MotoServer
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h

FAST = BuilderTiming(
    build_interval=0.3,
    upload_interval=0.3,
    cleanup_interval=0.5,
    config_interval=0.2,
    upload_retry_base=0.2,
    upload_retry_cap=1.0,
)
PROVIDER = "ec2"
LABEL = "debian-aws"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsCloud]:
    """A moto_server (with the fault proxy in front, no rules) for this test; the standard
    AWS settings point at it, with dummy credentials."""
    moto = MotoServer().start()
    proxy = FaultProxy(moto.port).start()
    cloud = AwsCloud(moto, proxy)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for key, value in cloud.env.items():
        monkeypatch.setenv(key, value)
    try:
        yield cloud
    finally:
        proxy.stop()
        moto.stop()


def aws_provider(aws: AwsCloud) -> dict[str, Any]:
    ec2 = aws.client("ec2")
    ec2.create_key_pair(KeyName="np-key")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]
    return {
        "name": PROVIDER,
        "driver": "aws",
        "region-name": "us-east-1",
        "rate": 100,
        "diskimages": [{"name": "debian"}],
        "pools": [{
            "name": "main",
            "max-servers": 2,
            "host-key-checking": False,
            "subnet-id": subnet["SubnetId"],
            "labels": [{"name": LABEL, "diskimage": "debian", "instance-type": "t3.small",
                        "key-name": "np-key"}],
        }],
    }


@pytest.fixture
def config(tmp_path: Path, zk_chroot: ZooKeeperChroot, aws: AwsCloud) -> Path:
    return write_config(
        tmp_path, zk_chroot, [diskimage("debian")], [aws_provider(aws)],
        labels=[{"name": LABEL}],
    )


@pytest.fixture
def builder(config: Path) -> Iterator[Builder]:
    b = Builder(str(config), timing=FAST, hostname="builder-test")
    b.start()
    yield b
    b.stop()


def ready_upload_of(kz: KazooClient, build_id: str) -> ImageUpload | None:
    for upload in read_uploads(kz, PROVIDER):
        if upload.build_id == build_id and upload.state == UploadState.READY:
            return upload
    return None


def new_ready_build(kz: KazooClient, known: list[str], what: str) -> str:
    ids = wait_for(
        lambda: [b.id for b in read_builds(kz) if b.state == BuildState.READY
                 and b.id not in known],
        what=what, timeout=60)
    return str(ids[-1])


def ami(aws: AwsCloud, image_id: str) -> dict[str, Any] | None:
    """The AMI as moto describes it; None once it is deregistered."""
    import botocore.exceptions

    try:
        images = aws.client("ec2").describe_images(ImageIds=[image_id])["Images"]
    except botocore.exceptions.ClientError as e:
        if "InvalidAMIID" in str(e.response.get("Error", {}).get("Code", "")):
            return None
        raise
    return images[0] if images and images[0].get("State") != "deregistered" else None


def snapshot_ids(aws: AwsCloud) -> set[str]:
    snaps = aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]
    return {str(s["SnapshotId"]) for s in snaps}


def root_snapshot(image: dict[str, Any]) -> str:
    (bdm,) = [b for b in image["BlockDeviceMappings"] if "Ebs" in b]
    return str(bdm["Ebs"]["SnapshotId"])


def test_upload_boot_rotate_delete(
    tmp_path: Path, config: Path, aws: AwsCloud, builder: Builder, kazoo_client: KazooClient
) -> None:
    kz = kazoo_client
    ec2 = aws.client("ec2")

    # The first build is uploaded as snapshot + AMI.
    first_build = new_ready_build(kz, [], "first build")
    (build,) = [b for b in read_builds(kz) if b.id == first_build]
    assert "raw" in build.formats
    first = wait_for(lambda: ready_upload_of(kz, first_build), what="first upload", timeout=60)
    assert first.external_id and first.external_id.startswith("ami-"), first
    assert first.format == "raw"
    image = ami(aws, first.external_id)
    assert image is not None and image["State"] == "available", image
    assert image["Name"] == first.external_name
    tags = {t["Key"]: t["Value"] for t in image.get("Tags") or []}
    assert tags["nodepool_build_id"] == first_build
    assert tags["nodepool_upload_id"] == first.id
    assert tags["nodepool_provider_name"] == PROVIDER
    first_snapshot = root_snapshot(image)
    assert first_snapshot.startswith("snap-")
    assert first_snapshot in snapshot_ids(aws)
    (snap,) = ec2.describe_snapshots(SnapshotIds=[first_snapshot])["Snapshots"]
    assert snap["State"] == "completed"

    # A launcher boots the diskimage label from that AMI.
    launcher = h.start_launcher(config, tmp_path / "no-clouds.yaml")
    try:
        rid = h.submit_request(kz, [LABEL])
        req = h.wait_request(kz, rid, timeout=60)
        assert req["state"] == "fulfilled", req
        (nid,) = req["nodes"]
        node = h.node(kz, nid)
        assert node is not None and node["state"] == "ready", node
        assert node["provider"] == PROVIDER
        # The node names the upload it booted from by its znode path.
        assert first.build_id is not None and first.id is not None
        assert node["image_id"] == paths.upload_path("debian", first.build_id, PROVIDER,
                                                     first.id)
        instance_id = node["external_id"]
        assert instance_id.startswith("i-")
        (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        instance = reservation["Instances"][0]
        assert instance["ImageId"] == first.external_id
        assert instance["State"]["Name"] == "running"
        h.accept_and_use(kz, rid)
        h.wait_for("instance terminated", lambda: ec2.describe_instances(
            InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
            == "terminated", timeout=60)
    finally:
        launcher.stop()

    # Newer builds rotate the first out (the builder keeps the 2 newest ready uploads per
    # provider, so the third build is the one that does it): its upload record goes, its
    # AMI is deregistered and its snapshot deleted.
    assert builder.ctx is not None
    builds = [first_build]
    uploads = [first]
    for n in (2, 3):
        builder.ctx.images.flags.request_build("debian")
        builds.append(new_ready_build(kz, builds, f"build {n}"))
        uploads.append(wait_for(lambda: ready_upload_of(kz, builds[-1]),
                                what=f"upload of build {n}", timeout=60))
        if n == 2:  # two kept: nothing is rotated out yet
            assert ami(aws, first.external_id) is not None
    wait_for(lambda: all(u.build_id != first_build for u in read_uploads(kz, PROVIDER)),
             what="first upload record deleted", timeout=30)
    wait_for(lambda: ami(aws, first.external_id) is None, what="first AMI deregistered",
             timeout=30)
    wait_for(lambda: first_snapshot not in snapshot_ids(aws), what="first snapshot deleted",
             timeout=30)
    wait_for(lambda: first_build not in {b.id for b in read_builds(kz)},
             what="first build deleted", timeout=30)

    # The kept uploads' AMIs and snapshots are still there.
    for upload in uploads[1:]:
        assert upload.external_id is not None
        kept = ami(aws, upload.external_id)
        assert kept is not None and kept["State"] == "available", upload
        assert root_snapshot(kept) in snapshot_ids(aws)


def test_restarted_builder_deletes_uploads_of_removed_aws_provider(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, config: Path, aws: AwsCloud,
    kazoo_client: KazooClient
) -> None:
    """A builder started after an aws provider left the config deregisters that provider's
    AMIs and deletes their snapshots: the image adapter comes from the driver the upload
    recorded (through the registry, as for OpenStack), then the record goes."""
    import json

    kz = kazoo_client
    b = Builder(str(config), timing=FAST, hostname="builder-test")
    b.start()
    try:
        build_id = new_ready_build(kz, [], "first build")
        upload = wait_for(lambda: ready_upload_of(kz, build_id), what="upload", timeout=60)
    finally:
        b.stop()
    assert upload.external_id is not None and upload.id is not None
    image = ami(aws, upload.external_id)
    assert image is not None
    snapshot = root_snapshot(image)
    # The record names the provider's driver beside its region: all a builder restarted
    # without the provider has to rebuild its image adapter.
    data, _ = kz.get(paths.upload_path("debian", build_id, PROVIDER, upload.id))
    record = json.loads(data)
    assert record["region_name"] == "us-east-1"
    assert record["driver"] == "aws"

    write_config(tmp_path, zk_chroot, [diskimage("debian")], [], labels=[{"name": LABEL}])
    b = Builder(str(config), timing=FAST, hostname="builder-test")
    b.start()
    try:
        wait_for(lambda: not read_uploads(kz, PROVIDER), what="upload record deleted",
                 timeout=30)
        assert ami(aws, upload.external_id) is None
        assert snapshot not in snapshot_ids(aws)
    finally:
        b.stop()

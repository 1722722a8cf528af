"""Image upload (EBS direct APIs -> snapshot -> AMI), boot from it, delete, leak listing;
against a real moto_server.

moto's RegisterImage ignores the block device mapping it is given (its AMI points at a
snapshot moto makes up), so the link from AMI to our snapshot is checked through the tags
the adapter puts on both, which is also how `delete_image` finds the snapshot there.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path

import pytest

from nodepool_ng.drivers.aws.ebs import BLOCK_SIZE
from nodepool_ng.drivers.base import META_BUILD_ID, META_PROVIDER_NAME, META_UPLOAD_ID
from nodepool_ng.errors import PermanentCloudError
from tests.drivers.aws.helpers import (
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
META = {META_BUILD_ID: "b-0001", META_UPLOAD_ID: "u-0001", "nodepool_image_name": "custom"}


def make_raw_image(path: Path) -> dict[int, bytes]:
    """6.5 blocks of zeros with data in blocks 0, 3 and the partial last one (6)."""
    data = bytearray(BLOCK_SIZE * 6 + BLOCK_SIZE // 2)
    data[0:4] = b"\xebc\x90\x00"
    data[3 * BLOCK_SIZE + 100: 3 * BLOCK_SIZE + 104] = b"DATA"
    data[-3:] = b"END"
    path.write_bytes(bytes(data))
    padded = bytes(data) + bytes(BLOCK_SIZE // 2)
    return {i: padded[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE] for i in (0, 3, 6)}


def test_upload_boot_and_delete_image(aws: AwsCloud, tmp_path: Path):
    cloud = prepare_cloud(aws)
    labels = [{"name": "custom-label", "diskimage": "custom", "instance-type": "t3.micro",
               "key-name": cloud["key"]}]
    adapter = make_adapter(provider_from(raw_provider(cloud, labels)))
    ec2, ebs = aws.client("ec2"), aws.client("ebs")
    image_file = tmp_path / "custom.raw"
    blocks = make_raw_image(image_file)
    try:
        assert adapter.image_format == "raw"
        ami = adapter.upload_image("custom-1700000000", str(image_file), "raw", META,
                                   timeout=120, diskimage="custom")
        assert ami.startswith("ami-")

        # the snapshot: tagged, only the non-zero blocks written, each with its checksum
        snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:" + META_UPLOAD_ID, "Values": ["u-0001"]}])["Snapshots"]
        assert len(snaps) == 1
        snap = snaps[0]
        assert snap["State"] == "completed" and snap["VolumeSize"] == 1
        assert tags_of(snap)[META_BUILD_ID] == "b-0001"
        listed = ebs.list_snapshot_blocks(SnapshotId=snap["SnapshotId"])["Blocks"]
        assert sorted(b["BlockIndex"] for b in listed) == [0, 3, 6]
        for b in listed:
            got = ebs.get_snapshot_block(SnapshotId=snap["SnapshotId"],
                                         BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])
            assert got["BlockData"].read() == blocks[b["BlockIndex"]]
            assert got["Checksum"] == base64.b64encode(
                hashlib.sha256(blocks[b["BlockIndex"]]).digest()).decode()

        # the AMI: ours (Owners=self), tagged like the snapshot
        images = {r.external_id: r for r in adapter.list_images()}
        assert images[ami].metadata[META_UPLOAD_ID] == "u-0001"
        assert images[ami].metadata["Name"] == "custom-1700000000"
        assert images[ami].status == "available"
        assert {r.external_id for r in adapter.list_resources() if r.kind == "snapshot"} == \
            {snap["SnapshotId"]}

        # boot a diskimage label from it
        inst = drive(adapter, adapter.get_create_state_machine(spec("custom-label",
                                                                    image=ami), log))
        assert inst is not None and inst.status == "ready"
        assert describe(aws, inst.external_id)["ImageId"] == ami
        drive(adapter, adapter.get_delete_state_machine(inst.external_id, log))

        adapter.delete_image(ami)
        assert ec2.describe_images(Owners=["self"])["Images"] == []
        assert ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:" + META_UPLOAD_ID, "Values": ["u-0001"]}])["Snapshots"] == []
        adapter.delete_image(ami)  # gone already: no error
    finally:
        adapter.stop()


def test_failed_upload_leaves_no_snapshot(aws: AwsCloud, tmp_path: Path):
    """CompleteSnapshot fails (the fault proxy answers 400): the started snapshot is removed
    and the error is permanent."""
    cloud = prepare_cloud(aws)
    adapter = make_adapter(provider_from(raw_provider(cloud)))
    image_file = tmp_path / "custom.raw"
    make_raw_image(image_file)
    aws.proxy.fail("POST /snapshots/completion", "ValidationException", "bad",
                   json_protocol=True)
    try:
        with pytest.raises(PermanentCloudError, match="ValidationException"):
            adapter.upload_image("custom-1", str(image_file), "raw", META, timeout=60)
        puts = [a for a in aws.proxy.calls if a.startswith("PUT /snapshots/")]
        assert len(puts) == 3  # blocks 0, 3 and 6; the zero blocks were skipped
        snaps = aws.client("ec2").describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:" + META_UPLOAD_ID, "Values": ["u-0001"]}])["Snapshots"]
        assert snaps == []
        with pytest.raises(PermanentCloudError, match="raw"):
            adapter.upload_image("custom-1", str(image_file), "qcow2", META, timeout=60)
    finally:
        adapter.stop()


def test_list_and_delete_leaked_volume(aws: AwsCloud):
    cloud = prepare_cloud(aws)
    ec2 = aws.client("ec2")
    ours = ec2.create_volume(AvailabilityZone=cloud["az"], Size=1, TagSpecifications=[{
        "ResourceType": "volume",
        "Tags": [{"Key": META_PROVIDER_NAME, "Value": "aws-test"}]}])["VolumeId"]
    theirs = ec2.create_volume(AvailabilityZone=cloud["az"], Size=1)["VolumeId"]
    adapter = make_adapter(provider_from(raw_provider(cloud)))
    try:
        volumes = [r for r in adapter.list_resources() if r.kind == "volume"]
        assert [v.external_id for v in volumes] == [ours]
        assert volumes[0].metadata[META_PROVIDER_NAME] == "aws-test"
        adapter.delete_resource(volumes[0])
        left = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
        assert ours not in left and theirs in left
    finally:
        adapter.stop()

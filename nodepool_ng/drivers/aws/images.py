"""AWS images for the builder: a raw image -> EBS snapshot (EBS direct APIs) -> AMI, and
the AMI's deletion with its snapshots."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import botocore.exceptions

from nodepool_ng.drivers.aws.api import AwsApi, cloud_error, is_gone, tags_dict
from nodepool_ng.drivers.aws.config import AwsProviderConfig, AwsProviderDiskImageConfig
from nodepool_ng.drivers.aws.ebs import tag_list, upload_snapshot
from nodepool_ng.drivers.aws.quota import error_code
from nodepool_ng.drivers.base import META_BUILD_ID, META_UPLOAD_ID, Resource
from nodepool_ng.errors import PermanentCloudError, TemporaryCloudError

log = logging.getLogger("nodepool_ng.drivers.aws.adapter")

ROOT_DEVICE = "/dev/sda1"


class AwsImages:
    """The provider's AMIs: upload, delete, list (the builder's `ImageAdapter` part)."""

    def __init__(self, api: AwsApi, provider: AwsProviderConfig, upload_workers: int = 8) -> None:
        self.api = api
        self.provider = provider
        self.upload_workers = upload_workers

    def upload_image(self, name: str, filename: str, disk_format: str | None,
                     metadata: Mapping[str, str], timeout: float,
                     md5: str | None = None, sha256: str | None = None,
                     diskimage: str | None = None) -> str:
        """Raw image -> EBS snapshot (EBS direct APIs) -> AMI; returns the AMI id.

        Tags from `metadata` (nodepool_build_id, nodepool_upload_id, ...) go on both. The
        provider diskimage `diskimage` (when given) sets architecture, ENA, the root volume
        type/size/iops/throughput, IMDS support and extra tags. One attempt: on failure the
        snapshot made so far is deleted and TemporaryCloudError (or PermanentCloudError)
        raised."""
        if disk_format not in (None, "raw"):
            raise PermanentCloudError(
                f"uploading image {name}: AWS takes raw images (EBS direct), not {disk_format}")
        pdi = self.provider.diskimage(diskimage) if diskimage else None
        pdi = pdi or AwsProviderDiskImageConfig(name=diskimage or name)
        deadline = time.monotonic() + timeout
        tags = {**pdi.tags, **{str(k): str(v) for k, v in metadata.items()}, "Name": name}
        made: list[str] = []
        try:
            snapshot_id, blocks = upload_snapshot(
                self.api.ebs, filename, tags=tags, description=f"nodepool image {name}",
                deadline=deadline, workers=self.upload_workers, volume_size=pdi.volume_size,
                on_started=made.append)
            log.debug("image %s: wrote %s blocks into snapshot %s", name, blocks, snapshot_id)
            snap = self.api.wait_for(
                lambda: self.api.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0],
                lambda s: s.get("State") == "completed", lambda s: s.get("State") == "error",
                deadline, f"snapshot {snapshot_id}")
            ebs: dict[str, Any] = {"SnapshotId": snapshot_id, "DeleteOnTermination": True,
                                   "VolumeType": pdi.volume_type,
                                   "VolumeSize": int(snap.get("VolumeSize") or 1)}
            if pdi.iops:
                ebs["Iops"] = pdi.iops
            if pdi.throughput:
                ebs["Throughput"] = pdi.throughput
            args: dict[str, Any] = dict(
                Name=name, Description=f"nodepool image {name}",
                Architecture=pdi.architecture, EnaSupport=pdi.ena_support,
                RootDeviceName=ROOT_DEVICE, VirtualizationType="hvm",
                BlockDeviceMappings=[{"DeviceName": ROOT_DEVICE, "Ebs": ebs}],
                TagSpecifications=[{"ResourceType": "image", "Tags": tag_list(tags)}])
            if pdi.imds_support:
                args["ImdsSupport"] = pdi.imds_support
            ami_id = str(self.api.ec2.register_image(**args)["ImageId"])
            made.append(ami_id)
            # Some EC2 look-alikes ignore TagSpecifications on RegisterImage (moto): tag
            # again; on AWS this changes nothing.
            self.api.ec2.create_tags(Resources=[ami_id], Tags=tag_list(tags))
            self.api.wait_for(
                lambda: (self.api.ec2.describe_images(ImageIds=[ami_id])["Images"] or [{}])[0],
                lambda i: i.get("State") == "available",
                lambda i: i.get("State") in ("failed", "error", "invalid"),
                deadline, f"image {ami_id}")
        except Exception as e:
            self._undo_upload(made)
            if isinstance(e, TemporaryCloudError | PermanentCloudError):
                raise
            raise cloud_error(e, f"uploading image {name}") from e
        return ami_id

    def delete_image(self, external_id: str) -> None:
        """Deregister the AMI, then delete its snapshots: those its block device mappings
        name, and those tagged with the same upload (nodepool_build_id/upload_id)."""
        try:
            images = self.api.ec2.describe_images(ImageIds=[external_id])["Images"]
        except botocore.exceptions.ClientError as e:
            if is_gone(e) or error_code(e).startswith("InvalidAMIID"):
                return
            raise cloud_error(e, f"deleting image {external_id}") from e
        except botocore.exceptions.BotoCoreError as e:
            raise cloud_error(e, f"deleting image {external_id}") from e
        snapshots: set[str] = set()
        for image in images:
            for bdm in image.get("BlockDeviceMappings") or []:
                snap = (bdm.get("Ebs") or {}).get("SnapshotId")
                if snap:
                    snapshots.add(str(snap))
            tags = tags_dict(image.get("Tags"))
            filters = [{"Name": f"tag:{key}", "Values": [tags[key]]}
                       for key in (META_BUILD_ID, META_UPLOAD_ID) if tags.get(key)]
            if filters:
                for snap in self.api.paginate("describe_snapshots", "Snapshots",
                                           OwnerIds=["self"], Filters=filters):
                    snapshots.add(str(snap["SnapshotId"]))
        self.api.ignore_not_found(self.api.ec2.deregister_image, ImageId=external_id)
        for snapshot_id in sorted(snapshots):
            self.api.ignore_not_found(self.api.ec2.delete_snapshot, SnapshotId=snapshot_id)

    def list_images(self) -> list[Resource]:
        """AMIs owned by this account, tags as metadata."""
        images = self.api.call(self.api.ec2.describe_images, Owners=["self"])["Images"]
        return [Resource("image", str(i["ImageId"]), tags_dict(i.get("Tags")),
                         status=i.get("State")) for i in images]

    def _undo_upload(self, made: list[str]) -> None:
        for resource in reversed(made):
            try:
                if resource.startswith("ami-"):
                    self.api.ec2.deregister_image(ImageId=resource)
                else:
                    self.api.ec2.delete_snapshot(SnapshotId=resource)
            except Exception as e:
                log.warning("could not remove %s after a failed upload: %s", resource, e)

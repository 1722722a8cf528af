"""AWS resources other than instances: this provider's volumes, AMIs and upload snapshots
(listed for `alien-image-list` and tests), and which of them the launcher's leak cleanup may
delete: volumes tagged with this provider and left `available`."""

from __future__ import annotations

from typing import Any

from nodepool_ng.drivers.aws.api import AwsApi, tags_dict
from nodepool_ng.drivers.aws.config import AwsProviderConfig
from nodepool_ng.drivers.aws.images import AwsImages
from nodepool_ng.drivers.base import (
    META_BUILD_ID,
    META_NODE_ID,
    META_PROVIDER_NAME,
    META_UPLOAD_ID,
    Resource,
)
from nodepool_ng.errors import PermanentCloudError


class AwsResources:
    def __init__(self, api: AwsApi, provider: AwsProviderConfig, images: AwsImages) -> None:
        self.api = api
        self.provider = provider
        self.images = images

    def list_resources(self) -> list[Resource]:
        """This provider's unattached volumes (kind "volume"), our AMIs ("image") and the
        snapshots of our uploads ("snapshot"), with their tags."""
        out: list[Resource] = self.leak_candidates()
        out.extend(self.images.list_images())
        snapshots = self.api.paginate("describe_snapshots", "Snapshots", OwnerIds=["self"],
                                      Filters=[{"Name": "tag-key",
                                                "Values": [META_BUILD_ID, META_UPLOAD_ID]}])
        for snap in snapshots:
            out.append(Resource("snapshot", str(snap["SnapshotId"]),
                                tags_dict(snap.get("Tags")), status=snap.get("State")))
        return out

    def leak_candidates(self) -> list[Resource]:
        """Volumes tagged with this provider and `available` (attached to nothing): a
        terminated instance's that DeleteOnTermination and the delete machine missed.
        Deleted once seen so in two passes while their node (tag) has no record."""
        return [Resource("volume", str(vol["VolumeId"]), tags_dict(vol.get("Tags")),
                         status=vol.get("State"), leak_interval=0.0)
                for vol in self._volumes()]

    def delete_resource(self, resource: Resource) -> None:
        if resource.kind == "volume":
            self.api.ignore_not_found(self.api.ec2.delete_volume, VolumeId=resource.external_id)
        elif resource.kind == "snapshot":
            self.api.ignore_not_found(self.api.ec2.delete_snapshot,
                                      SnapshotId=resource.external_id)
        elif resource.kind == "image":
            self.images.delete_image(resource.external_id)
        else:
            raise PermanentCloudError(f"unknown resource kind {resource.kind!r}")

    def delete_leftover_volumes(self, node_id: str) -> list[str]:
        """Delete this provider's `available` volumes tagged with `node_id`; their ids."""
        deleted = []
        for vol in self._volumes({"Name": "tag:" + META_NODE_ID, "Values": [node_id]}):
            self.api.ignore_not_found(self.api.ec2.delete_volume, VolumeId=vol["VolumeId"])
            deleted.append(str(vol["VolumeId"]))
        return deleted

    def _volumes(self, *filters: dict[str, Any]) -> list[dict[str, Any]]:
        return self.api.paginate("describe_volumes", "Volumes", Filters=[
            *filters,
            {"Name": "tag:" + META_PROVIDER_NAME, "Values": [self.provider.name]},
            {"Name": "status", "Values": ["available"]}])

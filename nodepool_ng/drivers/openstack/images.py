"""OpenStack images for the builder: openstacksdk `create_image` (PUT or the task import
flow, as the cloud wants), delete, list with their properties."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openstack import exceptions as os_exc

from nodepool_ng.drivers.base import Resource
from nodepool_ng.drivers.openstack.sdk import call, cloud_error
from nodepool_ng.errors import TemporaryCloudError


class OpenStackImages:
    def __init__(self, conn: Any, cloud_region: Any) -> None:
        self.conn = conn
        self.cloud_region = cloud_region

    @property
    def image_format(self) -> str:
        """The disk format this cloud wants (openstacksdk cloud config, vendor profiles)."""
        return str(self.cloud_region.config.get("image_format") or "qcow2")

    def upload_image(self, name: str, filename: str, disk_format: str | None,
                     metadata: Mapping[str, str], timeout: float,
                     md5: str | None = None, sha256: str | None = None) -> str:
        """Upload with openstacksdk `create_image` (it picks PUT or the import flow) and wait
        until the image is active; returns its id. The builder owns retries. `md5`/`sha256`
        (the builder's checksum files) spare the SDK from hashing the file again."""
        try:
            # Metadata goes in as `properties`: openstacksdk's task-import flow drops `meta`.
            image = self.conn.create_image(
                name, filename=filename, disk_format=disk_format or self.image_format,
                wait=True, timeout=timeout, allow_duplicates=True, md5=md5, sha256=sha256,
                properties=dict(metadata))
        except os_exc.HttpException as e:
            raise cloud_error(e, f"uploading image {name}") from e
        except os_exc.SDKException as e:  # timeouts, image in error state
            raise TemporaryCloudError(f"uploading image {name}: {e}") from e
        if image is None:
            raise TemporaryCloudError(f"uploading image {name}: the cloud returned no image")
        return str(image.id)

    def delete_image(self, external_id: str) -> None:
        try:
            self.conn.image.delete_image(external_id, ignore_missing=True)
        except os_exc.HttpException as e:
            raise cloud_error(e, f"deleting image {external_id}") from e

    def list_images(self) -> list[Resource]:
        """Images with their properties as metadata (owner keys nodepool_build_id, ...)."""
        out = []
        for image in call(lambda: list(self.conn.image.images())):
            props = dict(image.properties or {})
            meta = {k: str(v) for k, v in props.items() if isinstance(v, str | int)}
            out.append(Resource("image", str(image.id), meta, status=image.status))
        return out

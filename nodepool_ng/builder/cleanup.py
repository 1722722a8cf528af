"""CleanupWorker: rotation and repair of builds and uploads.

Each pass, per image:
- keep the 2 newest READY builds (none once the image left the config), the newest FAILED
  build while no READY build is newer (it names the DIB log), and, per provider that still
  uses the image, the 2 newest READY uploads of READY builds; a build stays while one of its
  uploads is kept (a provider whose newest upload keeps failing still has an image to boot);
- every other upload is set `deleting`, deleted from the cloud and from ZooKeeper;
- `uploading` records whose build+provider upload lock nobody holds (their builder died) and
  `failed` records are removed, except per provider the newest `failed` attempt of a kept
  build not yet READY there (its `error` says why while the builder retries); `building`
  records whose image build lock nobody holds are removed too;
- with `delete-after-upload`, a kept READY build of this builder that every provider has
  READY loses its local image files except `keep-formats` (`prune.py`);
- uploads of a provider gone from the config are deleted through the adapter the builder
  used before the reload, or one made from the `cloud` the upload recorded (after a
  restart); when neither works the record is removed and the image named in the log;
- builds left with no upload are set `deleting`, their local files removed, then the znode;
- local files of builds ZooKeeper no longer knows are removed.
Per provider, images in the cloud carrying our metadata (`nodepool_provider_name` = provider)
that no upload record claims are deleted once seen in two consecutive passes (upstream only
lists them in `alien-image-list`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import Any

from nodepool_ng.builder import formats, policy, prune
from nodepool_ng.builder.context import BuilderContext, ImageAdapter
from nodepool_ng.builder.upload import CLOUD_KEY, DRIVER_KEY, REGION_KEY
from nodepool_ng.config.models import Config, ProviderConfig
from nodepool_ng.drivers import registry
from nodepool_ng.drivers.base import META_BUILD_ID, META_PROVIDER_NAME, META_UPLOAD_ID
from nodepool_ng.errors import LockError, NodepoolError, RecordNotFound, ZooKeeperError
from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState
from nodepool_ng.runtime import Worker
from nodepool_ng.zk import locks, paths

log = logging.getLogger("nodepool_ng.builder.cleanup")

# Failed image deletes (one per pass) after which an upload of a provider gone from the config
# is given up: its record is removed and the image named in the log.
REMOVED_PROVIDER_ATTEMPTS = 5

_BUILD_FILE = re.compile(r"^(?P<image>.+)-(?P<build>[0-9a-f]{32}|\d{10})(\.|$)")


def removed_provider_config(upload: ImageUpload) -> ProviderConfig | None:
    """A minimal model of the provider an upload was made for, built by its driver's
    registry entry from the record's `driver`, `cloud` and `region_name` (enough for an
    image adapter to delete the upload); None when the record does not say enough."""
    driver = registry.find(upload.extra.get(DRIVER_KEY, registry.DEFAULT_DRIVER))
    if driver is None or driver.make_image_adapter is None:
        return None
    raw: dict[str, Any] = {"name": upload.provider_name or "", "driver": driver.name}
    for key, field in ((CLOUD_KEY, "cloud"), (REGION_KEY, "region-name")):
        value = upload.extra.get(key)
        if isinstance(value, str) and value:
            raw[field] = value
    try:
        return driver.build_provider(raw)
    except (TypeError, ValueError, KeyError, AssertionError) as e:
        log.warning("Upload %s: cannot rebuild removed provider %s from the record: %s",
                    upload.path, upload.provider_name, e)
        return None


def image_metadata(image: Any) -> dict[str, str]:
    """Metadata of a cloud image as the adapter lists it (Resource or openstacksdk Image)."""
    meta = getattr(image, "metadata", None)
    if meta is None:
        meta = getattr(image, "properties", None)
    return {str(k): str(v) for k, v in (meta or {}).items()}


def image_external_id(image: Any) -> str:
    return str(getattr(image, "external_id", None) or image.id)


class CleanupWorker(Worker):
    def __init__(self, ctx: BuilderContext, interval: float = 60.0) -> None:
        super().__init__("CleanupWorker", interval=interval, paused=ctx.zk_suspended)
        self.ctx = ctx
        # (provider, external id) of unclaimed cloud images seen in the previous pass.
        self._suspects: set[tuple[str, str]] = set()
        # Failed image deletes per upload path, for providers gone from the config.
        self._removed_failures: dict[str, int] = {}

    def run_once(self) -> float | None:
        config = self.ctx.config
        store = self.ctx.images.flags
        try:
            names = set(store.image_names()) | set(config.diskimages)
        except ZooKeeperError as e:
            log.warning("Cleanup: cannot list images: %s", e)
            return None
        log.debug("Cleanup pass over images %s", ", ".join(sorted(names)))
        for name in sorted(names):
            try:
                self.cleanup_image(config, name)
            except ZooKeeperError as e:
                log.warning("Cleanup of image %s: ZooKeeper error: %s", name, e)
        try:
            self.cleanup_local_files(config)
        except OSError as e:
            log.warning("Cleanup of local image files: %s", e)
        self.cleanup_leaked_images(config)
        return None

    # -- ZooKeeper records and their cloud images --------------------------------------------
    def cleanup_image(self, config: Config, image: str) -> None:
        store = self.ctx.images
        builds = store.builds.builds(image)
        in_config = image in config.diskimages
        keep_builds = policy.builds_to_keep(builds) if in_config else set()
        users = {p.name for p in self.ctx.providers_of(config, image)} if in_config else set()

        uploads: dict[str, list[ImageUpload]] = {}  # by provider, over all builds
        for build in builds:
            assert build.id is not None
            for provider in store.uploads.providers(image, build.id):
                uploads.setdefault(provider, []).extend(
                    store.uploads.uploads(image, build.id, provider))
        # Per provider still using the image, the 2 newest READY uploads of READY builds
        # (a build being deleted loses its uploads even if they are recent).
        ready_builds = {b.id for b in builds if b.state == BuildState.READY}
        kept_uploads: set[str] = set()
        for provider, items in uploads.items():
            if provider in users:
                candidates = [u for u in items if u.build_id in ready_builds]
                kept_uploads |= policy.uploads_to_keep(candidates)
                kept_uploads |= policy.failed_uploads_to_keep(items, keep_builds & ready_builds)

        for items in uploads.values():
            for upload in items:
                if policy.upload_key(upload) in kept_uploads:
                    continue
                if upload.state == UploadState.UPLOADING:
                    self._cleanup_stale_upload(upload)
                else:
                    # Rotated out, failed, marked deleting, or its provider/image/build left.
                    self.delete_upload(upload)

        diskimage = config.diskimages.get(image)
        if diskimage is not None and diskimage.delete_after_upload and config.images_dir:
            for build in builds:
                if (
                    build.id in keep_builds
                    and build.state == BuildState.READY
                    and build.builder_id == self.ctx.builder_id
                    and prune.uploaded_everywhere(build, users, uploads)
                ):
                    prune.prune_build(self.ctx, config, diskimage, build)

        for build in builds:
            if build.id in keep_builds:
                continue
            if build.state == BuildState.BUILDING:
                if locks.is_locked(self.ctx.zk, paths.image_build_lock_path(image)):
                    continue  # a live builder is building it
                log.info("Image %s build %s: builder died while building", image, build.id)
            remaining = [
                u
                for p in store.uploads.providers(image, build.id or "")
                for u in store.uploads.uploads(image, build.id or "", p)
            ]
            if remaining:
                continue  # still has uploads being deleted or kept
            self.delete_build(config, build)

    def _cleanup_stale_upload(self, upload: ImageUpload) -> None:
        store = self.ctx.images.uploads
        assert upload.image_name and upload.build_id and upload.provider_name
        if store.is_uploading(upload.image_name, upload.build_id, upload.provider_name):
            log.debug("Upload %s in progress (its lock is held)", upload.path)
            return
        log.info(
            "Removing stale uploading record %s (its builder died); the cloud image, if "
            "any, is removed as leaked",
            upload.path,
        )
        self.delete_upload(upload)

    def delete_upload(self, upload: ImageUpload) -> bool:
        """Set `deleting`, delete the cloud image, remove the record. False if not done yet."""
        store = self.ctx.images.uploads
        image, build_id = upload.image_name or "", upload.build_id or ""
        provider, upload_id = upload.provider_name or "", upload.id or ""
        try:
            lock = store.lock_upload(upload)
        except LockError:
            return False
        try:
            # Re-read under the lock: the upload may have finished since this pass read it.
            try:
                fresh = store.get_upload(image, build_id, provider, upload_id)
            except RecordNotFound:
                return True
            if fresh.state != upload.state:
                return False
            if fresh.state != UploadState.DELETING:
                fresh.state = UploadState.DELETING
                store.store_upload(fresh)
            if fresh.external_id:
                adapter = self.ctx.adapter(provider)
                gone = adapter is None
                if adapter is None:
                    adapter = self._removed_provider_adapter(fresh)
                if adapter is None:
                    log.warning(
                        "Upload %s: provider %s is gone from the config and its cloud is "
                        "unknown; removing the record only: image %s (%s) may remain in "
                        "that cloud",
                        fresh.path,
                        provider,
                        fresh.external_name,
                        fresh.external_id,
                    )
                else:
                    try:
                        adapter.delete_image(fresh.external_id)
                    except (NodepoolError, OSError) as e:
                        if not gone or self._retry_removed(fresh):
                            log.warning(
                                "Upload %s: deleting image %s failed, will retry: %s",
                                fresh.path,
                                fresh.external_id,
                                e,
                            )
                            return False
                        log.warning(
                            "Upload %s: provider %s is gone from the config and deleting "
                            "image %s (%s) failed %d times (%s); removing the record only: "
                            "the image may remain in cloud %s",
                            fresh.path,
                            provider,
                            fresh.external_name,
                            fresh.external_id,
                            REMOVED_PROVIDER_ATTEMPTS,
                            e,
                            fresh.extra.get(CLOUD_KEY, "?"),
                        )
            self._removed_failures.pop(fresh.path or "", None)
            log.info("Deleted upload %s (image %s)", fresh.path, fresh.external_id)
        finally:
            store.unlock(lock)
        store.delete_upload(fresh)
        return True

    def _removed_provider_adapter(self, upload: ImageUpload) -> ImageAdapter | None:
        """An adapter for the cloud of a provider no longer in the config: the one the
        builder used before the reload, else one its driver makes from what the upload
        recorded (after a restart): the driver (`driver`; records without one are
        OpenStack's, as upstream's), `cloud` and `region_name`."""
        provider = upload.provider_name or ""
        adapter = self.ctx.retired_adapter(provider)
        if adapter is not None or self.ctx.adapter_factory is None:
            return adapter
        config = removed_provider_config(upload)
        if config is None:
            return None
        where = config.cloud or config.region_name or "?"
        try:
            adapter = self.ctx.adapter_factory(config)
        except (NodepoolError, OSError) as e:
            log.warning("Removed provider %s: cannot reach its cloud %s: %s", provider, where, e)
            return None
        log.info("Removed provider %s: deleting its uploads from cloud %s", provider, where)
        self.ctx.add_retired(provider, adapter)
        return adapter

    def _retry_removed(self, upload: ImageUpload) -> bool:
        """Count a failed delete for a removed provider; False once it is time to give up."""
        key = upload.path or ""
        self._removed_failures[key] = self._removed_failures.get(key, 0) + 1
        if self._removed_failures[key] < REMOVED_PROVIDER_ATTEMPTS:
            return True
        del self._removed_failures[key]
        return False

    def release_removed_providers(self, known: set[tuple[str, str, str]]) -> None:
        """Stop adapters of removed providers that have no upload record left."""
        left = {provider for provider, _, _ in known}
        for provider in self.ctx.retired_providers():
            if provider not in left:
                self.ctx.release_retired(provider)

    def delete_build(self, config: Config, build: ImageBuild) -> None:
        store = self.ctx.images.builds
        image, build_id = build.image_name or "", build.id or ""
        try:
            lock = store.lock_build(image, build_id)
        except LockError:
            return
        try:
            try:
                fresh = store.get_build(image, build_id)
            except RecordNotFound:
                return
            if fresh.state != build.state:
                return  # e.g. finished building since this pass read it: judge it next pass
            if fresh.state != BuildState.DELETING:
                fresh.state = BuildState.DELETING
                store.store_build(fresh)
            if config.images_dir and fresh.builder_id in (None, self.ctx.builder_id):
                formats.remove_build_files(os.path.join(config.images_dir, f"{image}-{build_id}"))
        finally:
            store.unlock(lock)
        store.delete_build(image, build_id)
        log.info("Deleted build %s-%s", image, build_id)

    def cleanup_local_files(self, config: Config) -> None:
        """Remove files of builds that ZooKeeper does not know or is deleting."""
        if not config.images_dir or not os.path.isdir(config.images_dir):
            return
        store = self.ctx.images.builds
        live: dict[str, set[str]] = {}
        for name in os.listdir(config.images_dir):
            m = _BUILD_FILE.match(name)
            if not m:
                continue
            image, build_id = m.group("image"), m.group("build")
            if image not in live:
                live[image] = {
                    b.id for b in store.builds(image) if b.id and b.state != BuildState.DELETING
                }
            if build_id in live[image]:
                continue
            base = os.path.join(config.images_dir, f"{image}-{build_id}")
            for path in formats.remove_build_files(base):
                log.info("Removed local file %s of an unknown build", path)

    # -- cloud images nobody claims ----------------------------------------------------------
    def known_uploads(self) -> set[tuple[str, str, str]]:
        """(provider, build id, upload id) of every upload record, in any state."""
        store = self.ctx.images
        known = set()
        for image in store.flags.image_names():
            for build in store.builds.builds(image):
                assert build.id is not None
                for provider in store.uploads.providers(image, build.id):
                    for upload in store.uploads.uploads(image, build.id, provider):
                        known.add((provider, build.id, upload.id or ""))
        return known

    def cleanup_leaked_images(self, config: Config) -> None:
        try:
            known = self.known_uploads()
        except ZooKeeperError as e:
            log.warning("Leaked image check skipped: %s", e)
            return
        self.release_removed_providers(known)
        suspects: set[tuple[str, str]] = set()
        for provider, adapter in sorted(self.ctx.adapters().items()):
            try:
                images: Iterable[Any] = list(adapter.list_images())
            except (NodepoolError, OSError) as e:
                log.warning("Provider %s: cannot list images: %s", provider, e)
                continue
            for image in images:
                meta = image_metadata(image)
                if meta.get(META_PROVIDER_NAME) != provider or META_BUILD_ID not in meta:
                    continue
                key = (provider, meta[META_BUILD_ID], meta.get(META_UPLOAD_ID, ""))
                if key in known:
                    continue
                ext_id = image_external_id(image)
                suspect = (provider, ext_id)
                if suspect not in self._suspects:
                    suspects.add(suspect)  # delete only if still unclaimed next pass
                    continue
                log.info(
                    "Provider %s: deleting leaked image %s (build %s upload %s)",
                    provider,
                    ext_id,
                    key[1],
                    key[2],
                )
                try:
                    adapter.delete_image(ext_id)
                except (NodepoolError, OSError) as e:
                    log.warning(
                        "Provider %s: deleting leaked image %s failed: %s", provider, ext_id, e
                    )
                    suspects.add(suspect)
        self._suspects = suspects

"""ImageStore: builds, uploads, pause flags, build requests and their locks (spec §1.1, §5).

Tree: `/nodepool/images/<image>/{pause,request-build,builds/<build>/providers/<p>/images/<u>}`.
Build ids are uuid4 hex; upload ids are 10-digit sequences. The optional cache (one watch-driven
copy of `/nodepool/images`) lets the launcher ask "which upload is ready here" without reads.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from nodepool_ng.errors import RecordNotFound, ZooKeeperError
from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState
from nodepool_ng.model.record import decode_json
from nodepool_ng.zk import locks, paths
from nodepool_ng.zk.cache import CachedStore, RecordCache
from nodepool_ng.zk.client import ZooKeeperClient

log = logging.getLogger("nodepool_ng.zk.images")

_FLAGS = ("pause", "request-build")


@dataclass(frozen=True)
class ImageFlag:
    """A flag znode in the cache: `pause` or `request-build` of `image`."""

    image: str
    name: str
    ctime: float


CachedImageRecord = ImageBuild | ImageUpload | ImageFlag


def _parse(path: str) -> tuple[str, str | None] | None:
    rest = path[len(paths.IMAGES_ROOT) + 1 :] if path.startswith(paths.IMAGES_ROOT + "/") else ""
    parts = rest.split("/")
    if len(parts) == 2 and parts[1] in _FLAGS:
        return rest, None
    if paths.parse_build_path(path) or paths.parse_upload_path(path):
        return rest, None
    return None


def _decode(key: str, raw: bytes | None) -> CachedImageRecord | None:
    parts = key.split("/")
    if len(parts) == 2:
        # ctime is not in the payload; the cache uses the event time.
        return ImageFlag(parts[0], parts[1], time.time())
    if not raw:
        return None  # bare parent created by a lock path
    data = decode_json(raw, f"image record {key}")
    if len(parts) == 3:
        return ImageBuild.from_dict(parts[0], parts[2], data)
    return _with_path(ImageUpload.from_dict(parts[0], parts[2], parts[4], parts[6], data))


def _with_path(upload: ImageUpload) -> ImageUpload:
    """Set `upload.path` from its identity; returns it."""
    upload.path = paths.upload_path(upload.image_name or "", upload.build_id or "",
                                    upload.provider_name or "", upload.id or "")
    return upload


class ImageStore(CachedStore[CachedImageRecord]):
    """Read and write image builds and uploads; image flags; build/upload locks."""

    def __init__(self, client: ZooKeeperClient) -> None:
        super().__init__(client, RecordCache(
            client, paths.IMAGES_ROOT, _parse, _decode
        ))

    # -- images and flags --------------------------------------------------------------------
    def image_names(self) -> list[str]:
        """Images that have a znode (direct read)."""
        return sorted(self.client.get_children(paths.IMAGES_ROOT))

    def is_paused(self, image: str) -> bool:
        """True if `nodepool image-pause` set the pause flag."""
        if self.cache_started:
            return self.cache.get(f"{image}/pause") is not None
        return self.client.exists(paths.image_pause_path(image)) is not None

    def set_paused(self, image: str, paused: bool) -> None:
        """Create or remove the image pause flag."""
        if paused:
            self.client.ensure_path(paths.image_pause_path(image))
        else:
            self.client.delete(paths.image_pause_path(image))

    def request_build(self, image: str) -> None:
        """Ask builders for a manual build (`nodepool image-build`)."""
        self.client.ensure_path(paths.image_request_build_path(image))

    def build_requested_at(self, image: str) -> float | None:
        """Epoch ctime of the pending manual build request, or None."""
        stat = self.client.exists(paths.image_request_build_path(image))
        return None if stat is None else stat.ctime / 1000.0

    def remove_build_request(self, image: str) -> None:
        """Drop the manual build request (done after a READY build)."""
        self.client.delete(paths.image_request_build_path(image))

    # -- builds ------------------------------------------------------------------------------
    def create_build(self, build: ImageBuild) -> str:
        """Store a new build under a fresh uuid4-hex id; sets and returns `build.id`."""
        if not build.image_name:
            raise ValueError("build has no image_name")
        build.id = build.id or uuid.uuid4().hex
        self.client.create(paths.build_path(build.image_name, build.id), build.to_json(),
                           what=f"build {build.image_name}/{build.id}")
        return build.id

    def store_build(self, build: ImageBuild) -> None:
        """Write an existing build."""
        if not build.image_name or not build.id:
            raise ValueError("build needs image_name and id")
        self.client.set(paths.build_path(build.image_name, build.id), build.to_json(),
                        what=f"build {build.image_name}/{build.id}")

    def get_build(self, image: str, build_id: str) -> ImageBuild:
        """Read one build; RecordNotFound if gone."""
        data, stat = self.client.get(paths.build_path(image, build_id),
                                     what=f"build {image}/{build_id}")
        if not data:
            # A bare parent created by a lock path, not a build record (upstream skips it).
            raise RecordNotFound(f"build {image}/{build_id}: no record")
        try:
            build = ImageBuild.from_json(image, build_id, data)
        except ValueError as e:
            raise ZooKeeperError(str(e)) from e
        build.zk_version = stat.version
        return build

    def builds(self, image: str, states: Iterable[BuildState] | None = None) -> list[ImageBuild]:
        """Builds of `image`, newest `state_time` first, optionally filtered by state."""
        wanted = set(states) if states is not None else None
        out = []
        for build_id in self.client.get_children(paths.builds_path(image)):
            if build_id == paths.LOCK:
                continue
            try:
                build = self.get_build(image, build_id)
            except RecordNotFound:
                continue
            if wanted is None or build.state in wanted:
                out.append(build)
        return sorted(out, key=lambda b: b.state_time or 0.0, reverse=True)

    def latest_ready_build(self, image: str) -> ImageBuild | None:
        """The newest READY build of `image`, or None."""
        ready = self.builds(image, [BuildState.READY])
        return ready[0] if ready else None

    def delete_build(self, image: str, build_id: str) -> None:
        """Remove a build and everything under it (uploads, locks)."""
        self.client.delete(paths.build_path(image, build_id), recursive=True)

    # -- uploads -----------------------------------------------------------------------------
    def create_upload(self, upload: ImageUpload) -> str:
        """Store a new upload under a 10-digit sequence id; sets and returns `upload.id`."""
        if not (upload.image_name and upload.build_id and upload.provider_name):
            raise ValueError("upload needs image_name, build_id and provider_name")
        created = self.client.create(
            paths.uploads_path(upload.image_name, upload.build_id, upload.provider_name) + "/",
            upload.to_json(),
            sequence=True,
            what=f"upload of {upload.image_name}/{upload.build_id} to {upload.provider_name}",
        )
        upload.id = created.rsplit("/", 1)[-1]
        _with_path(upload)
        return upload.id

    def store_upload(self, upload: ImageUpload) -> None:
        """Write an existing upload."""
        if not upload.id:
            raise ValueError("upload has no id; use create_upload()")
        _with_path(upload)
        self.client.set(upload.path, upload.to_json(), what=f"upload {upload.path}")

    def get_upload(self, image: str, build_id: str, provider: str, upload_id: str) -> ImageUpload:
        """Read one upload; RecordNotFound if gone."""
        path = paths.upload_path(image, build_id, provider, upload_id)
        data, stat = self.client.get(path, what=f"upload {path}")
        if not data:
            raise RecordNotFound(f"upload {path}: no record")
        try:
            upload = ImageUpload.from_dict(image, build_id, provider, upload_id,
                                           decode_json(data, f"upload {path}"))
        except ValueError as e:
            raise ZooKeeperError(str(e)) from e
        upload.zk_version = stat.version
        return _with_path(upload)

    def get_upload_by_path(self, path: str) -> ImageUpload:
        """Read the upload a node's `image_id` points at."""
        parsed = paths.parse_upload_path(path)
        if parsed is None:
            raise RecordNotFound(f"{path}: not an upload path")
        return self.get_upload(*parsed)

    def providers(self, image: str, build_id: str) -> list[str]:
        """Providers that have uploads (or upload locks) for a build."""
        return sorted(self.client.get_children(paths.build_providers_path(image, build_id)))

    def uploads(self, image: str, build_id: str, provider: str,
                states: Iterable[UploadState] | None = None) -> list[ImageUpload]:
        """Uploads of a build to `provider`, newest `state_time` first."""
        wanted = set(states) if states is not None else None
        out = []
        for upload_id in self.client.get_children(paths.uploads_path(image, build_id, provider)):
            if upload_id == paths.LOCK:
                continue
            try:
                upload = self.get_upload(image, build_id, provider, upload_id)
            except RecordNotFound:
                continue
            if wanted is None or upload.state in wanted:
                out.append(upload)
        return sorted(out, key=lambda u: u.state_time or 0.0, reverse=True)

    def ready_uploads(self, image: str, provider: str, count: int | None = None
                      ) -> list[ImageUpload]:
        """READY uploads of `image` to `provider` over all builds, most recent first
        (cache if started, else direct reads)."""
        if self.cache_started:
            found = [r for r in self.cache.values()
                     if isinstance(r, ImageUpload) and r.image_name == image
                     and r.provider_name == provider and r.state == UploadState.READY]
        else:
            found = []
            for build_id in self.client.get_children(paths.builds_path(image)):
                if build_id != paths.LOCK:
                    found.extend(self.uploads(image, build_id, provider, [UploadState.READY]))
        found.sort(key=lambda u: u.state_time or 0.0, reverse=True)
        return found if count is None else found[:count]

    def latest_ready_upload(self, image: str, provider: str) -> ImageUpload | None:
        """The most recent READY upload of `image` to `provider`, or None."""
        ready = self.ready_uploads(image, provider, 1)
        return ready[0] if ready else None

    def delete_upload(self, upload: ImageUpload) -> None:
        """Remove an upload znode (and its lock dir)."""
        self.client.delete(_with_path(upload).path, recursive=True)

    # -- locks (return kazoo Locks; release with `unlock`) ------------------------------------
    def _lock(self, path: str, what: str, blocking: bool, timeout: float | None) -> locks.ZkLock:
        lock = locks.make_lock(self.client, path)
        locks.acquire(self.client, lock, blocking=blocking, timeout=timeout, what=what)
        return lock

    def lock_image_builds(self, image: str, blocking: bool = False,
                          timeout: float | None = None) -> locks.ZkLock:
        """Image-level build lock: one builder builds `image` at a time. LockError if busy."""
        return self._lock(paths.image_build_lock_path(image), f"image {image} builds",
                          blocking, timeout)

    def lock_build(self, image: str, build_id: str, blocking: bool = False,
                   timeout: float | None = None) -> locks.ZkLock:
        """Per-build lock (taken to mark a build deleting)."""
        return self._lock(paths.build_lock_path(image, build_id), f"build {image}/{build_id}",
                          blocking, timeout)

    def lock_uploads(self, image: str, build_id: str, provider: str, blocking: bool = False,
                     timeout: float | None = None) -> locks.ZkLock:
        """Per build+provider upload lock (one uploader per build and provider)."""
        return self._lock(paths.upload_lock_path(image, build_id, provider),
                          f"uploads of {image}/{build_id} to {provider}", blocking, timeout)

    def lock_upload(self, upload: ImageUpload, blocking: bool = False,
                    timeout: float | None = None) -> locks.ZkLock:
        """Per-upload lock (taken when deleting an upload)."""
        _with_path(upload)
        return self._lock(upload.path + "/" + paths.LOCK, f"upload {upload.path}",
                          blocking, timeout)

    def is_uploading(self, image: str, build_id: str, provider: str) -> bool:
        """True if someone holds the build+provider upload lock."""
        return locks.is_locked(self.client, paths.upload_lock_path(image, build_id, provider))

    @staticmethod
    def unlock(lock: locks.ZkLock | None) -> None:
        """Release a lock returned by one of the lock_* methods, waiting until it is gone:
        the builder's locks are few, and other builders read them right after."""
        locks.release(lock, wait=True)

"""Image stores: builds, uploads, pause flags, build requests and their locks.

Tree: `/nodepool/images/<image>/{pause,request-build,builds/<build>/providers/<p>/images/<u>}`.
Build ids are uuid4 hex; upload ids are 10-digit sequences. The optional cache (one watch-driven
copy of `/nodepool/images`) lets the launcher ask "which upload is ready here" without reads.
`ImageStore` holds that cache and the three stores by noun sharing it (`flags`, `builds`,
`uploads`); hand a caller only the store it uses.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from nodepool_ng.errors import RecordNotFound
from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState
from nodepool_ng.zk import locks, paths
from nodepool_ng.zk.cache import RecordCache
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.records import RecordAccess, RecordKind

log = logging.getLogger("nodepool_ng.zk.images")

R = TypeVar("R", ImageBuild, ImageUpload)


@dataclass(frozen=True)
class ImageFlag:
    """A flag znode in the cache: `pause` or `request-build` of `image`."""

    image: str
    name: str
    ctime: float


CachedImageRecord = ImageBuild | ImageUpload | ImageFlag


BUILDS = RecordKind("build", ImageBuild, paths.build_path, empty_is_record=False)
UPLOADS = RecordKind("upload", ImageUpload, paths.upload_path, empty_is_record=False)


def _parse(path: str) -> tuple[str, str | None] | None:
    # Cache keys are the path below the images root.
    if (paths.parse_image_flag_path(path) or paths.parse_build_path(path)
            or paths.parse_upload_path(path)):
        return path[len(paths.IMAGES_ROOT) + 1 :], None
    return None


def _decode(key: str, raw: bytes | None) -> CachedImageRecord | None:
    parts = key.split("/")
    if len(parts) == 2:
        # ctime is not in the payload; the cache uses the event time.
        return ImageFlag(parts[0], parts[1], time.time())
    if not raw:
        return None  # bare parent created by a lock path
    if len(parts) == 3:
        return BUILDS.decode((parts[0], parts[2]), raw)
    return _with_path(UPLOADS.decode((parts[0], parts[2], parts[4], parts[6]), raw))


def _with_path(upload: ImageUpload) -> ImageUpload:
    """Set `upload.path` from its identity; returns it."""
    upload.path = UPLOADS.path(*UPLOADS.key(upload))
    return upload


def _newest_first(records: list[R], states: Iterable[Any] | None) -> list[R]:
    """`records` in `states` (all if None), newest `state_time` first."""
    wanted = set(states) if states is not None else None
    found = [r for r in records if wanted is None or r.state in wanted]
    return sorted(found, key=lambda r: r.state_time or 0.0, reverse=True)


class _ImageRecords(RecordAccess[CachedImageRecord]):
    """Base of the image stores: the `/nodepool/images` subtree and its one cache (pass
    `cache` to share another store's), and the builder's locks."""

    def __init__(self, client: ZooKeeperClient,
                 cache: RecordCache[CachedImageRecord] | None = None) -> None:
        if cache is None:
            cache = RecordCache(client, paths.IMAGES_ROOT, _parse, _decode)
        super().__init__(client, cache)

    def _take(self, path: str, what: str, blocking: bool, timeout: float | None
              ) -> locks.ZkLock:
        lock = locks.make_lock(self.client, path)
        locks.acquire(self.client, lock, blocking=blocking, timeout=timeout, what=what)
        return lock

    @staticmethod
    def unlock(lock: locks.ZkLock | None) -> None:
        """Release a lock returned by one of the lock_* methods, waiting until it is gone:
        the builder's locks are few, and other builders read them right after."""
        locks.release(lock, wait=True)


class ImageFlagStore(_ImageRecords):
    """Images, their pause flag and their manual build request."""

    def image_names(self) -> list[str]:
        """Images that have a znode (direct read)."""
        return sorted(self.client.get_children(paths.IMAGES_ROOT))

    def is_paused(self, image: str) -> bool:
        """True if `nodepool image-pause` set the pause flag."""
        if self.cache_started:
            return self.cache.get(f"{image}/{paths.PAUSE}") is not None
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


class BuildStore(_ImageRecords):
    """Image builds (`/nodepool/images/<image>/builds/<uuid4hex>`) and their locks."""

    def create_build(self, build: ImageBuild) -> str:
        """Store a new build under a fresh uuid4-hex id; sets and returns `build.id`."""
        build.id = build.id or uuid.uuid4().hex
        image, build_id = BUILDS.key(build)
        self.client.create(paths.build_path(image, build_id), build.to_json(),
                           what=BUILDS.what((image, build_id)))
        return build_id

    def store_build(self, build: ImageBuild) -> None:
        """Write an existing build."""
        self._store(BUILDS, build)

    def get_build(self, image: str, build_id: str) -> ImageBuild:
        """Read one build; RecordNotFound if gone (or a bare parent: upstream skips those)."""
        return self._get(BUILDS, image, build_id)

    def builds(self, image: str, states: Iterable[BuildState] | None = None) -> list[ImageBuild]:
        """Builds of `image`, newest `state_time` first, optionally filtered by state."""
        return _newest_first(self._read_children(BUILDS, paths.builds_path(image), image),
                             states)

    def latest_ready_build(self, image: str) -> ImageBuild | None:
        """The newest READY build of `image`, or None."""
        ready = self.builds(image, [BuildState.READY])
        return ready[0] if ready else None

    def delete_build(self, image: str, build_id: str) -> None:
        """Remove a build and everything under it (uploads, locks)."""
        self.client.delete(paths.build_path(image, build_id), recursive=True)

    def lock_image_builds(self, image: str, blocking: bool = False,
                          timeout: float | None = None) -> locks.ZkLock:
        """Image-level build lock: one builder builds `image` at a time. LockError if busy."""
        return self._take(paths.image_build_lock_path(image), f"image {image} builds",
                          blocking, timeout)

    def lock_build(self, image: str, build_id: str, blocking: bool = False,
                   timeout: float | None = None) -> locks.ZkLock:
        """Per-build lock (taken to mark a build deleting)."""
        return self._take(paths.build_lock_path(image, build_id), f"build {image}/{build_id}",
                          blocking, timeout)


class UploadStore(_ImageRecords):
    """Uploads of builds to providers (`.../builds/<b>/providers/<p>/images/<seq10>`), the
    launcher's "which image is ready here", and the upload locks."""

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
        self._store(UPLOADS, _with_path(upload))

    def get_upload(self, image: str, build_id: str, provider: str, upload_id: str) -> ImageUpload:
        """Read one upload; RecordNotFound if gone."""
        return _with_path(self._get(UPLOADS, image, build_id, provider, upload_id))

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
        found = self._read_children(UPLOADS, paths.uploads_path(image, build_id, provider),
                                    image, build_id, provider)
        return _newest_first([_with_path(u) for u in found], states)

    def ready_uploads(self, image: str, provider: str, count: int | None = None
                      ) -> list[ImageUpload]:
        """READY uploads of `image` to `provider` over all builds, most recent first
        (cache if started, else direct reads)."""
        if self.cache_started:
            found = [r for r in self.cache.values()
                     if isinstance(r, ImageUpload) and r.image_name == image
                     and r.provider_name == provider]
        else:
            found = []
            for build_id in self.client.get_children(paths.builds_path(image)):
                if build_id != paths.LOCK:
                    found.extend(self.uploads(image, build_id, provider))
        ready = _newest_first(found, [UploadState.READY])
        return ready if count is None else ready[:count]

    def latest_ready_upload(self, image: str, provider: str) -> ImageUpload | None:
        """The most recent READY upload of `image` to `provider`, or None."""
        ready = self.ready_uploads(image, provider, 1)
        return ready[0] if ready else None

    def delete_upload(self, upload: ImageUpload) -> None:
        """Remove an upload znode (and its lock dir)."""
        self.client.delete(_with_path(upload).path, recursive=True)

    def lock_uploads(self, image: str, build_id: str, provider: str, blocking: bool = False,
                     timeout: float | None = None) -> locks.ZkLock:
        """Per build+provider upload lock (one uploader per build and provider)."""
        return self._take(paths.upload_lock_path(image, build_id, provider),
                          f"uploads of {image}/{build_id} to {provider}", blocking, timeout)

    def lock_upload(self, upload: ImageUpload, blocking: bool = False,
                    timeout: float | None = None) -> locks.ZkLock:
        """Per-upload lock (taken when deleting an upload)."""
        key = UPLOADS.key(upload)
        return self._take(paths.upload_number_lock_path(*key), UPLOADS.what(key),
                          blocking, timeout)

    def is_uploading(self, image: str, build_id: str, provider: str) -> bool:
        """True if someone holds the build+provider upload lock."""
        return locks.is_locked(self.client, paths.upload_lock_path(image, build_id, provider))


class ImageStore:
    """The `/nodepool/images` subtree: one cache shared by its three stores by noun, `flags`
    (pause, request-build), `builds` and `uploads`. Use the store you need; start and stop
    the shared cache here, so that all three answer from it (`cache_started`)."""

    def __init__(self, client: ZooKeeperClient) -> None:
        self.cache: RecordCache[CachedImageRecord] = RecordCache(
            client, paths.IMAGES_ROOT, _parse, _decode)
        self.flags = ImageFlagStore(client, self.cache)
        self.builds = BuildStore(client, self.cache)
        self.uploads = UploadStore(client, self.cache)

    @property
    def cache_started(self) -> bool:
        """True between `start_cache()` and `stop_cache()`."""
        return self.builds.cache_started

    def start_cache(self, timeout: float | None = None) -> bool:
        """Start the shared watch-driven cache; True once the initial copy is loaded."""
        for store in (self.flags, self.builds, self.uploads):
            store.cache_started = True
        return self.cache.start(timeout)

    def stop_cache(self) -> None:
        """Stop the shared cache."""
        if self.cache_started:
            self.cache.stop()
            for store in (self.flags, self.builds, self.uploads):
                store.cache_started = False

    def add_listener(self, listener: Callable[[str, CachedImageRecord | None], None]) -> None:
        """Call `listener(key, record_or_None)` on every change (cache thread; be quick)."""
        self.cache.add_listener(listener)

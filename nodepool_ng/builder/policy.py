"""Pure decisions of the builder: what to build, what to upload, what to keep.

No I/O here: the workers read records from ZooKeeper, ask these functions, then act.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState

# Rotation: how many READY builds per image and READY uploads per image+provider are kept.
KEEP_BUILDS = 2
KEEP_UPLOADS = 2

# Extra key of a build record: formats whose local file `delete-after-upload` removed.
PRUNED_FORMATS_KEY = "pruned_formats"


def _time(record: ImageBuild | ImageUpload) -> float:
    return record.state_time or 0.0


def ready_builds(builds: Iterable[ImageBuild]) -> list[ImageBuild]:
    """READY builds, newest first."""
    return sorted((b for b in builds if b.state == BuildState.READY), key=_time, reverse=True)


def pruned_formats(build: ImageBuild) -> set[str]:
    """Formats of the build whose local file was deleted after upload."""
    raw = build.extra.get(PRUNED_FORMATS_KEY)
    return {f for f in raw.split(",") if f} if isinstance(raw, str) else set()


def build_reason(
    builds: Sequence[ImageBuild],
    required_formats: Iterable[str],
    rebuild_age: float,
    now: float,
    requested: bool = False,
    pending_formats: Iterable[str] = (),
) -> str | None:
    """Why the image should be built now, or None when it need not be.

    `pending_formats`: formats of providers still waiting for an upload of the newest READY
    build; one whose file was deleted after upload can only come from a new build.
    Paused images and images with no formats are filtered out by the caller.
    """
    if requested:
        return "manual build requested"
    ready = ready_builds(builds)
    if not ready:
        return "no ready build"
    newest = ready[0]
    if now - _time(newest) > rebuild_age:
        return f"newest build {newest.id} is older than rebuild-age {rebuild_age:g}s"
    missing = set(required_formats) - set(newest.formats)
    if missing:
        return f"newest build {newest.id} lacks formats {','.join(sorted(missing))}"
    lost = set(pending_formats) & pruned_formats(newest)
    if lost:
        return (
            f"newest build {newest.id} is needed as {','.join(sorted(lost))} by a provider "
            "without an upload of it, but that file was deleted after upload"
        )
    return None


def build_to_upload(
    builds: Sequence[ImageBuild],
    uploads_by_build: dict[str, list[ImageUpload]],
    image_format: str,
) -> ImageBuild | None:
    """The newest READY build (having `image_format`) when the provider has no READY upload of
    it and none in progress; else None. Older builds are never uploaded (they rotate out)."""
    for build in ready_builds(builds):
        if image_format not in build.formats:
            continue
        uploads = uploads_by_build.get(build.id or "", [])
        if any(u.state in (UploadState.READY, UploadState.UPLOADING) for u in uploads):
            return None
        return build
    return None


def builds_to_keep(builds: Iterable[ImageBuild], keep: int = KEEP_BUILDS) -> set[str]:
    """Ids of the newest `keep` READY builds, plus the newest FAILED build while it is newer
    than every READY one (so `dib-image-list` shows why the image is stale, with its log).
    `building` records are judged by their lock, not here."""
    builds = list(builds)
    ready = ready_builds(builds)
    kept = {b.id for b in ready[:keep] if b.id}
    failed = [b for b in builds if b.state == BuildState.FAILED]
    if failed:
        last = max(failed, key=_time)
        if last.id and (not ready or _time(last) > _time(ready[0])):
            kept.add(last.id)
    return kept


def uploads_to_keep(uploads: Iterable[ImageUpload], keep: int = KEEP_UPLOADS) -> set[str]:
    """For one image and provider (all builds): ids of the newest `keep` READY uploads.

    Keys are `upload_key()`: upload ids repeat across builds and providers.
    """
    ready = sorted((u for u in uploads if u.state == UploadState.READY), key=_time, reverse=True)
    return {upload_key(u) for u in ready[:keep]}


def failed_uploads_to_keep(uploads: Iterable[ImageUpload], builds: Iterable[str]) -> set[str]:
    """For one image and provider: per build in `builds` without a READY upload, the newest
    FAILED upload (its `error` tells `image-list` and `image-build --wait` why; the builder
    is retrying). Keys are `upload_key()`."""
    by_build: dict[str, list[ImageUpload]] = {}
    for upload in uploads:
        by_build.setdefault(upload.build_id or "", []).append(upload)
    kept = set()
    for build_id in builds:
        items = by_build.get(build_id, [])
        if any(u.state == UploadState.READY for u in items):
            continue
        failed = [u for u in items if u.state == UploadState.FAILED]
        if failed:
            kept.add(upload_key(max(failed, key=lambda u: (_time(u), u.id or ""))))
    return kept


def upload_key(upload: ImageUpload) -> str:
    return f"{upload.provider_name}/{upload.build_id}/{upload.id}"


def newest_ready_upload(uploads: Iterable[ImageUpload]) -> ImageUpload | None:
    ready = [u for u in uploads if u.state == UploadState.READY and u.external_id]
    return max(ready, key=_time) if ready else None


def retry_delay(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff for upload retries: base, 2*base, 4*base, ... capped."""
    return float(min(cap, base * (2 ** max(attempt - 1, 0))))

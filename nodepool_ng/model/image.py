"""ImageBuild and ImageUpload records (upstream's JSON)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nodepool_ng.model.record import (
    IDENTITY,
    LOCAL,
    STATE,
    STATE_TIME,
    Record,
    key,
)

# Defaults upstream applies when reading (python2 is its legacy default).
DEFAULT_USERNAME = "zuul"
DEFAULT_PYTHON_PATH = "/usr/bin/python2"


class BuildState(StrEnum):
    """Build states (upstream's strings); a ready build is what the builder uploads."""

    BUILDING = "building"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


class UploadState(StrEnum):
    """Upload states (upstream's strings); launchers boot only from ready uploads."""

    UPLOADING = "uploading"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


def _formats(value: Any) -> list[str]:
    # Upstream stores the formats comma-joined.
    return [f for f in value.split(",") if f] if isinstance(value, str) else []


def _is_none(value: Any) -> bool:
    return value is None


def _is_empty(value: Any) -> bool:
    return not value


def _join_sorted(formats: list[str]) -> str:
    return ",".join(sorted(formats))


@dataclass
class ImageBuild(Record):
    """A diskimage build at `/nodepool/images/<image_name>/builds/<id>`."""

    STATE_TYPE = BuildState

    image_name: str | None = field(default=None, metadata=IDENTITY)
    id: str | None = field(default=None, metadata=IDENTITY)
    state: BuildState | None = field(default=BuildState.BUILDING, metadata=STATE)
    state_time: float | None = field(default_factory=time.time, metadata=STATE_TIME)
    # Upstream omits these when unset, and joins formats sorted with commas.
    builder: str | None = field(default=None, metadata=key(omit=_is_none))
    builder_id: str | None = field(default=None, metadata=key(omit=_is_none))
    formats: list[str] = field(default_factory=list, metadata=key(
        read=_formats, write=_join_sorted, omit=_is_empty))
    username: str | None = DEFAULT_USERNAME
    python_path: str | None = DEFAULT_PYTHON_PATH
    shell_type: str | None = None

    @classmethod
    def from_dict(cls, image_name: str | None, build_id: str | None,
                  data: dict[str, Any]) -> ImageBuild:
        """Build from JSON (formats as the comma-joined string)."""
        return cls(image_name=image_name, id=build_id,
                   **cls._read(data, f"build {image_name}/{build_id}"))


@dataclass
class ImageUpload(Record):
    """An upload at `/nodepool/images/<image>/builds/<build>/providers/<provider>/images/<id>`."""

    STATE_TYPE = UploadState

    image_name: str | None = field(default=None, metadata=IDENTITY)
    build_id: str | None = field(default=None, metadata=IDENTITY)
    provider_name: str | None = field(default=None, metadata=IDENTITY)
    id: str | None = field(default=None, metadata=IDENTITY)
    state: UploadState | None = field(default=UploadState.UPLOADING, metadata=STATE)
    state_time: float | None = field(default_factory=time.time, metadata=STATE_TIME)
    external_id: str | None = None
    external_name: str | None = None
    format: str | None = None
    username: str | None = DEFAULT_USERNAME
    python_path: str | None = DEFAULT_PYTHON_PATH
    shell_type: str | None = None
    # The znode path (what a Node's `image_id` holds for diskimage nodes): set by the
    # UploadStore when it reads or creates the upload; empty before.
    path: str = field(default="", compare=False, repr=False, metadata=LOCAL)

    @classmethod
    def from_dict(cls, image_name: str | None, build_id: str | None, provider_name: str | None,
                  upload_id: str | None, data: dict[str, Any]) -> ImageUpload:
        """Build from JSON; image/build/provider/id come from the path."""
        what = f"upload {image_name}/{build_id}/{provider_name}/{upload_id}"
        return cls(image_name=image_name, build_id=build_id, provider_name=provider_name,
                   id=upload_id, **cls._read(data, what))

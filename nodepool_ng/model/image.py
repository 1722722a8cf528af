"""ImageBuild and ImageUpload records (spec §1.4, §1.5)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nodepool_ng.model.record import Record, decode_json

# Defaults upstream applies when reading (python2 is its legacy default).
DEFAULT_USERNAME = "zuul"
DEFAULT_PYTHON_PATH = "/usr/bin/python2"


class BuildState(StrEnum):
    BUILDING = "building"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


class UploadState(StrEnum):
    UPLOADING = "uploading"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


BUILD_KEYS = ("state", "state_time", "builder", "builder_id", "formats", "username",
              "python_path", "shell_type")
UPLOAD_KEYS = ("state", "state_time", "external_id", "external_name", "format", "username",
               "python_path", "shell_type")


@dataclass
class ImageBuild(Record):
    """A diskimage build at `/nodepool/images/<image_name>/builds/<id>`."""

    STATE_TYPE = BuildState

    image_name: str | None = None
    id: str | None = None
    state: BuildState | None = BuildState.BUILDING
    state_time: float | None = field(default_factory=time.time)
    builder: str | None = None
    builder_id: str | None = None
    formats: list[str] = field(default_factory=list)
    username: str | None = DEFAULT_USERNAME
    python_path: str | None = DEFAULT_PYTHON_PATH
    shell_type: str | None = None
    zk_version: int = field(default=-1, compare=False, repr=False)

    def _known_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "state": self.state.value if self.state is not None else None,
            "state_time": self.state_time,
        }
        # Upstream omits these when unset, and joins formats sorted with commas.
        if self.builder is not None:
            d["builder"] = self.builder
        if self.builder_id is not None:
            d["builder_id"] = self.builder_id
        if self.formats:
            d["formats"] = ",".join(sorted(self.formats))
        d["username"] = self.username
        d["python_path"] = self.python_path
        d["shell_type"] = self.shell_type
        return d

    @classmethod
    def from_dict(cls, image_name: str | None, build_id: str | None,
                  data: dict[str, Any]) -> ImageBuild:
        """Build from JSON (formats as the comma-joined string)."""
        try:
            state = cls._coerce_state(data.get("state"))
        except ValueError as e:
            raise ValueError(f"build {image_name}/{build_id}: {e}") from None
        formats = data.get("formats") or ""
        return cls(
            image_name=image_name,
            id=build_id,
            state=state,
            state_time=data.get("state_time"),
            builder=data.get("builder"),
            builder_id=data.get("builder_id"),
            formats=[f for f in formats.split(",") if f] if isinstance(formats, str) else [],
            username=data.get("username", DEFAULT_USERNAME),
            python_path=data.get("python_path", DEFAULT_PYTHON_PATH),
            shell_type=data.get("shell_type"),
            extra=cls._split(data, set(BUILD_KEYS)),
        )

    @classmethod
    def from_json(cls, image_name: str, build_id: str, raw: bytes | None) -> ImageBuild:
        """Build from znode bytes."""
        return cls.from_dict(image_name, build_id,
                             decode_json(raw, f"build {image_name}/{build_id}"))


@dataclass
class ImageUpload(Record):
    """An upload at `/nodepool/images/<image>/builds/<build>/providers/<provider>/images/<id>`."""

    STATE_TYPE = UploadState

    image_name: str | None = None
    build_id: str | None = None
    provider_name: str | None = None
    id: str | None = None
    state: UploadState | None = UploadState.UPLOADING
    state_time: float | None = field(default_factory=time.time)
    external_id: str | None = None
    external_name: str | None = None
    format: str | None = None
    username: str | None = DEFAULT_USERNAME
    python_path: str | None = DEFAULT_PYTHON_PATH
    shell_type: str | None = None
    zk_version: int = field(default=-1, compare=False, repr=False)

    def _known_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value if self.state is not None else None,
            "state_time": self.state_time,
            "external_id": self.external_id,
            "external_name": self.external_name,
            "format": self.format,
            "username": self.username,
            "python_path": self.python_path,
            "shell_type": self.shell_type,
        }

    @classmethod
    def from_dict(cls, image_name: str | None, build_id: str | None, provider_name: str | None,
                  upload_id: str | None, data: dict[str, Any]) -> ImageUpload:
        """Build from JSON; image/build/provider/id come from the path."""
        try:
            state = cls._coerce_state(data.get("state"))
        except ValueError as e:
            raise ValueError(
                f"upload {image_name}/{build_id}/{provider_name}/{upload_id}: {e}"
            ) from None
        return cls(
            image_name=image_name,
            build_id=build_id,
            provider_name=provider_name,
            id=upload_id,
            state=state,
            state_time=data.get("state_time"),
            external_id=data.get("external_id"),
            external_name=data.get("external_name"),
            format=data.get("format"),
            username=data.get("username", DEFAULT_USERNAME),
            python_path=data.get("python_path", DEFAULT_PYTHON_PATH),
            shell_type=data.get("shell_type"),
            extra=cls._split(data, set(UPLOAD_KEYS)),
        )

    @property
    def path(self) -> str:
        """The upload's znode path: what a Node's `image_id` holds for diskimage nodes."""
        from nodepool_ng.zk import paths

        return paths.upload_path(
            self.image_name or "", self.build_id or "", self.provider_name or "", self.id or ""
        )

"""Helpers for builder tests: config files, waiting on conditions, the stand-in DIB."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.fixtures.zookeeper import ZooKeeperChroot

FAKE_DIB = str(Path(__file__).resolve().parents[1] / "fixtures" / "fake-disk-image-create")

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def diskimage(name: str, **kw: Any) -> dict[str, Any]:
    image: dict[str, Any] = {
        "name": name,
        "elements": ["debian-minimal", "simple-init"],
        "release": "bookworm",
        "dib-cmd": FAKE_DIB,
        "env-vars": {},
    }
    image.update(kw)
    return image


def write_config(
    tmp_path: Path,
    zk: ZooKeeperChroot,
    diskimages: list[dict[str, Any]],
    providers: list[dict[str, Any]] | None = None,
    labels: list[dict[str, Any]] | None = None,
    name: str = "nodepool.yaml",
) -> Path:
    config = {
        "zookeeper-servers": [{"host": zk.host, "port": zk.port, "chroot": zk.chroot}],
        "zookeeper-timeout": 2.0,
        "images-dir": str(tmp_path / "images"),
        "build-log-dir": str(tmp_path / "logs"),
        "labels": labels or [],
        "diskimages": diskimages,
        "providers": providers or [],
    }
    path = tmp_path / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.replace(path)
    return path


# Three clouds, each accepting one disk format; vhd arrives through the task-import flow.
THREE_CLOUDS = {
    "qcow-cloud": {"image_formats": ["qcow2"], "image_upload": "put"},
    "vhd-cloud": {"image_formats": ["vhd"], "image_upload": "task"},
    "raw-cloud": {"image_formats": ["raw"], "image_upload": "put"},
}


def three_cloud_profile() -> dict[str, Any]:
    from tests.fixtures.simcloud import cloud_profile

    return {"clouds": [cloud_profile(name, **kw) for name, kw in THREE_CLOUDS.items()]}


def provider(cloud: str, image: str = "debian", label: str | None = None) -> dict[str, Any]:
    """A provider named after its cloud, uploading `image`, with a pool booting `label`."""
    labels = [{"name": label, "diskimage": image, "flavor-name": "small"}] if label else []
    return {
        "name": cloud,
        "cloud": cloud,
        "rate": 0.001,
        "image-upload-timeout": 60,
        "diskimages": [{"name": image}],
        "pools": [{"name": "main", "max-servers": 4, "labels": labels}],
    }


def cloud_images(admin: Any, build_id: str | None = None) -> list[dict[str, Any]]:
    """Images in a simcloud cloud made by nodepool (optionally of one build)."""
    out = []
    for image in admin.images():
        props = image.get("properties") or {}
        if "nodepool_build_id" not in props:
            continue
        if build_id is None or props["nodepool_build_id"] == build_id:
            out.append(image)
    return out


def _children(kazoo: Any, path: str) -> list[str]:
    from kazoo.exceptions import NoNodeError

    try:
        return [c for c in kazoo.get_children(path) if c != "lock"]
    except NoNodeError:
        return []


def _read(kazoo: Any, path: str) -> dict[str, Any] | None:
    """A record's JSON, or None if it was deleted meanwhile (the builder runs concurrently)."""
    import json

    from kazoo.exceptions import NoNodeError

    try:
        return dict(json.loads(kazoo.get(path)[0]))
    except NoNodeError:
        return None


def read_builds(kazoo: Any, image: str = "debian") -> list[Any]:
    """ImageBuild records of `image` read with plain kazoo, oldest first."""
    from nodepool_ng.model.image import ImageBuild
    from nodepool_ng.zk import paths

    out = []
    for bid in _children(kazoo, paths.builds_path(image)):
        data = _read(kazoo, paths.build_path(image, bid))
        if data is not None:
            out.append(ImageBuild.from_dict(image, bid, data))
    return sorted(out, key=lambda b: b.state_time or 0)


def read_uploads(kazoo: Any, provider: str | None = None, image: str = "debian") -> list[Any]:
    """ImageUpload records of `image` (to `provider`, or to any), oldest first."""
    from nodepool_ng.model.image import ImageUpload
    from nodepool_ng.zk import paths

    out = []
    for bid in _children(kazoo, paths.builds_path(image)):
        providers = _children(kazoo, paths.build_providers_path(image, bid))
        for prov in providers if provider is None else [p for p in providers if p == provider]:
            for uid in _children(kazoo, paths.uploads_path(image, bid, prov)):
                path = paths.upload_path(image, bid, prov, uid)
                data = _read(kazoo, path)
                if data is not None:
                    upload = ImageUpload.from_dict(image, bid, prov, uid, data)
                    upload.path = path  # the store sets it; the model knows no paths
                    out.append(upload)
    return sorted(out, key=lambda u: u.state_time or 0)

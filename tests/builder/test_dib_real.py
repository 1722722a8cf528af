"""Opt-in: build a real image with diskimage-builder and upload it (`pytest -m dib`).

Takes about 3-4 minutes and needs root, diskimage-builder (the `dib` extra) and its host tools;
see doc/builder.md. Never part of CI (tools/test.sh runs `-m "not dib"`); without `-m dib` it
skips, so a plain `pytest` stays fast too.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.builder import formats
from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.model.image import BuildState
from tests.builder.support import cloud_images, provider, wait_for, write_config
from tests.fixtures.simcloud import SimCloudFixture, cloud_profile
from tests.fixtures.zookeeper import ZooKeeperChroot

# A real build takes minutes: far beyond the suite's 300 s per-test limit.
pytestmark = [pytest.mark.dib, pytest.mark.timeout(2400)]

HOST_TOOLS = ("debootstrap", "sudo", "qemu-img", "kpartx", "sgdisk", "mksquashfs", "uuidgen")
APT_SOURCES = "/etc/apt/sources.list.d/debian.sources"


def dib_command() -> str | None:
    found = shutil.which("disk-image-create")
    local = Path(sys.executable).parent / "disk-image-create"
    return found or (str(local) if local.exists() else None)


def apt_mirrors() -> dict[str, str]:
    """DIB_DISTRIBUTION_MIRROR / DIB_DEBIAN_SECURITY_MIRROR from the environment, else apt's."""
    mirrors: dict[str, str] = {}
    try:
        text = Path(APT_SOURCES).read_text()
    except OSError:
        text = ""
    for uri in re.findall(r"^URIs:\s*(\S+)", text, flags=re.M):
        key = "DIB_DEBIAN_SECURITY_MIRROR" if "security" in uri else "DIB_DISTRIBUTION_MIRROR"
        mirrors.setdefault(key, uri)
    for key in ("DIB_DISTRIBUTION_MIRROR", "DIB_DEBIAN_SECURITY_MIRROR"):
        if os.environ.get(key):
            mirrors[key] = os.environ[key]
    return mirrors


def device_mapper_usable() -> bool:
    try:
        with open("/dev/mapper/control", "rb"):
            return True
    except OSError:
        return False


@pytest.fixture
def dib_prerequisites(request: pytest.FixtureRequest) -> str:
    if "dib" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("opt-in slow test: run with `pytest -m dib`")
    dib = dib_command()
    if dib is None:
        pytest.skip("diskimage-builder is not installed (pip install -e '.[dib]')")
    missing = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"host tools missing: {', '.join(missing)} (see doc/builder.md)")
    if os.geteuid() != 0:
        pytest.skip("diskimage-builder needs root (it mounts and chroots)")
    if len(apt_mirrors()) < 2:
        pytest.skip(
            f"no Debian mirror known: set DIB_DISTRIBUTION_MIRROR and "
            f"DIB_DEBIAN_SECURITY_MIRROR (or provide {APT_SOURCES})"
        )
    return dib


@pytest.mark.parametrize(
    "elements", [["debian-minimal"], ["debian-minimal", "vm"]], ids=["filesystem", "vm"]
)
def test_real_dib_build_and_upload(
    dib_prerequisites: str,
    elements: list[str],
    tmp_path: Path,
    zk_chroot: ZooKeeperChroot,
    kazoo_client: KazooClient,
) -> None:
    if "vm" in elements and not device_mapper_usable():
        pytest.skip(
            "the vm element makes a partitioned disk and needs device-mapper; this "
            "kernel has no /dev/mapper/control"
        )
    env = {
        "PATH": f"{Path(dib_prerequisites).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        **apt_mirrors(),
    }
    image = {
        "name": "debian",
        "elements": elements,
        "release": "bookworm",
        "dib-cmd": dib_prerequisites,
        "env-vars": env,
        "build-timeout": 1800,
    }
    with SimCloudFixture({"clouds": [cloud_profile("real-cloud")]}, directory=tmp_path) as sim:
        config = write_config(tmp_path, zk_chroot, [image], [provider("real-cloud")])
        builder = Builder(
            str(config), timing=BuilderTiming(build_interval=1.0), clouds_yaml=str(sim.clouds_yaml)
        )
        builder.start()
        try:
            assert builder.ctx is not None
            store = builder.ctx.images
            build = wait_for(
                lambda: next(
                    iter(store.builds.builds("debian", [BuildState.READY, BuildState.FAILED])), None
                ),
                timeout=1800,
                what="the real build",
            )
            assert build.state == BuildState.READY, build.extra.get("error")
            upload = wait_for(
                lambda: store.uploads.latest_ready_upload("debian", "real-cloud"),
                timeout=600,
                what="the upload",
            )
            path = str(tmp_path / "images" / f"debian-{build.id}.qcow2")
            md5, _ = formats.read_checksums(path)
            (cloud_image,) = cloud_images(sim.admin("real-cloud"), build.id)
            assert cloud_image["id"] == upload.external_id
            assert cloud_image["size"] == os.path.getsize(path)
            assert cloud_image["properties"]["owner_specified.openstack.md5"] == md5
        finally:
            builder.stop()

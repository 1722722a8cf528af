"""create_image by PUT and by task import; each cloud takes only its own disk formats."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import openstack.exceptions
import pytest

from tests.fixtures.simcloud import SimCloudFixture, cloud_profile


def _make_image(tmp_path: Path, fmt: str) -> Path:
    path = tmp_path / f"disk.{fmt}"
    qemu_fmt = {"vhd": "vpc", "qcow2": "qcow2", "raw": "raw"}[fmt]
    opts = ["-o", "subformat=fixed"] if fmt == "vhd" else []
    subprocess.run(["qemu-img", "create", "-f", qemu_fmt, *opts, str(path), "1M"],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def clouds() -> Iterator[SimCloudFixture]:
    profile = {"clouds": [
        cloud_profile("hp", image_formats=["qcow2"]),
        cloud_profile("dreamhost", address_model="floating", image_formats=["raw"]),
        cloud_profile("rax", address_model="access_ip", image_formats=["vhd"],
                      image_upload="task"),
    ]}
    with SimCloudFixture(profile) as cloud:
        yield cloud


@pytest.mark.parametrize(("cloud", "fmt"), [("hp", "qcow2"), ("dreamhost", "raw"),
                                            ("rax", "vhd")])
def test_create_image_ends_active_in_the_cloud_format(
        clouds: SimCloudFixture, tmp_path: Path, cloud: str, fmt: str) -> None:
    conn = clouds.connect(cloud)
    path = _make_image(tmp_path, fmt)
    image = conn.create_image(f"img-{fmt}", filename=str(path), disk_format=fmt,
                              container_format="bare", wait=True, timeout=30,
                              build="7")
    image = conn.get_image(image.id)
    assert image.status == "active"
    assert image.disk_format == fmt
    assert image.size == path.stat().st_size
    listed = {i["name"]: i for i in clouds.admin(cloud).images()}
    assert listed[f"img-{fmt}"]["disk_format"] == fmt
    assert listed[f"img-{fmt}"]["properties"]["build"] == "7"
    conn.delete_image(image.id, wait=True)
    assert f"img-{fmt}" not in {i["name"] for i in clouds.admin(cloud).images()}


def test_put_cloud_rejects_other_format(clouds: SimCloudFixture, tmp_path: Path) -> None:
    conn = clouds.connect("hp")
    with pytest.raises(openstack.exceptions.SDKException, match="disk_format"):
        conn.create_image("bad", filename=str(_make_image(tmp_path, "raw")), disk_format="raw",
                          container_format="bare", wait=True, timeout=30)
    assert "bad" not in {i["name"] for i in clouds.admin("hp").images()}


def test_task_import_rejects_other_format(clouds: SimCloudFixture, tmp_path: Path) -> None:
    conn = clouds.connect("rax")
    with pytest.raises(openstack.exceptions.SDKException, match="failure") as failed:
        conn.create_image("bad", filename=str(_make_image(tmp_path, "qcow2")),
                          disk_format="qcow2", container_format="bare", wait=True, timeout=30)
    assert "disk format qcow2 is not accepted" in failed.value.extra_data.message
    assert "bad" not in {i["name"] for i in clouds.admin("rax").images()}

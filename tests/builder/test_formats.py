"""Format selection and qemu-img conversion (real qemu-img)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from nodepool_ng.builder import formats
from nodepool_ng.errors import ImageBuildError


def qemu_info(path: str) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", path], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def make_qcow2(base: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base + ".qcow2", "3M"], check=True)
    # Some data, so the conversion has content to preserve.
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", base + ".qcow2"],
        capture_output=True,
        check=False,
    )


def test_required_formats_union() -> None:
    assert formats.required_formats(["raw"], ["vhd", "qcow2", "vhd"]) == ("qcow2", "raw", "vhd")
    assert formats.required_formats([], []) == ()


def test_convert_missing_formats_and_checksums(tmp_path: Path) -> None:
    base = str(tmp_path / "img-1")
    make_qcow2(base)
    have = formats.ensure_formats(base, ["qcow2", "vhd", "raw"])
    assert have == ["qcow2", "raw", "vhd"]
    # vhd read back with -f vpc (a fixed VHD probes as raw): same content as the source.
    assert qemu_info(base + ".vhd")["format"] == "vpc"
    assert qemu_info(base + ".raw")["virtual-size"] == 3 * 1024 * 1024
    cmp = subprocess.run(
        ["qemu-img", "compare", "-f", "qcow2", "-F", "vpc", base + ".qcow2", base + ".vhd"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    for fmt in have:
        path = formats.image_path(base, fmt)
        data = Path(path).read_bytes()
        assert Path(path + ".md5").read_text() == (
            f"{hashlib.md5(data).hexdigest()}  {Path(path).name}\n"
        )
        assert formats.read_checksums(path)[1] == hashlib.sha256(data).hexdigest()


def test_stale_checksum_is_rewritten(tmp_path: Path) -> None:
    base = str(tmp_path / "img-2")
    make_qcow2(base)
    Path(base + ".qcow2.md5").write_text("0" * 32 + "  x\n")
    assert not formats.checksums_valid(base + ".qcow2")
    formats.ensure_formats(base, ["qcow2"])
    assert formats.checksums_valid(base + ".qcow2")


def test_nothing_built_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="no image file was produced"):
        formats.ensure_formats(str(tmp_path / "none"), ["qcow2"])


def test_corrupt_source_fails_clearly(tmp_path: Path) -> None:
    base = str(tmp_path / "bad")
    Path(base + ".qcow2").write_bytes(b"not an image")
    with pytest.raises(ImageBuildError, match=r"qemu-img convert .* failed"):
        formats.ensure_formats(base, ["vhd"])
    assert not Path(base + ".vhd").exists() and not Path(base + ".vhd.part").exists()


def test_remove_build_files(tmp_path: Path) -> None:
    base = str(tmp_path / "img-3")
    make_qcow2(base)
    formats.ensure_formats(base, ["qcow2"])
    (tmp_path / "img-3.d").mkdir()
    (tmp_path / "img-33.qcow2").write_text("another build")
    removed = formats.remove_build_files(base)
    assert len(removed) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img-33.qcow2"]

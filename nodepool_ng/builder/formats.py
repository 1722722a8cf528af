"""Which disk formats an image needs, and producing the missing ones with qemu-img.

A diskimage needs its own `formats` plus every format a provider's cloud wants (openstacksdk's
cloud config `image_format`: vendor profiles or clouds.yaml). DIB writes what it can; the rest
is converted with `qemu-img` (vhd always comes from qemu-img unless `vhd-util` is installed).
Every file gets `.md5` and `.sha256` checksum files in `md5sum`/`sha256sum` format.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping

from nodepool_ng.errors import ImageBuildError

log = logging.getLogger("nodepool_ng.builder.formats")

# qemu-img's name for each nodepool format, and extra output options.
QEMU_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "qcow2": ("qcow2", ("-o", "compat=0.10")),
    "raw": ("raw", ()),
    "vhd": ("vpc", ("-o", "force_size")),
}
# When converting, read from the cheapest source first.
SOURCE_PREFERENCE = ("raw", "qcow2", "vhd")
KNOWN_FORMATS = tuple(QEMU_FORMATS)


def native_dib_formats() -> tuple[str, ...]:
    """Formats the real diskimage-builder can write on this host."""
    return ("qcow2", "raw", "vhd") if shutil.which("vhd-util") else ("qcow2", "raw")


def required_formats(
    diskimage_formats: Iterable[str], provider_formats: Iterable[str]
) -> tuple[str, ...]:
    """Union of the diskimage's own formats and those of the providers using it, sorted."""
    return tuple(sorted(set(diskimage_formats) | set(provider_formats)))


def image_path(output_base: str, fmt: str) -> str:
    return f"{output_base}.{fmt}"


def present_formats(output_base: str, formats: Iterable[str] = KNOWN_FORMATS) -> list[str]:
    return [f for f in formats if os.path.isfile(image_path(output_base, f))]


def _digest(path: str) -> tuple[str, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def write_checksums(path: str) -> tuple[str, str]:
    """(Re)write `<path>.md5` and `<path>.sha256`; return (md5, sha256)."""
    md5, sha = _digest(path)
    name = os.path.basename(path)
    for ext, value in (("md5", md5), ("sha256", sha)):
        tmp = f"{path}.{ext}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{value}  {name}\n")
        os.replace(tmp, f"{path}.{ext}")
    return md5, sha


def read_checksums(path: str) -> tuple[str, str]:
    """The checksums of an image file, from its checksum files (computed when absent)."""
    values = []
    for ext in ("md5", "sha256"):
        try:
            with open(f"{path}.{ext}") as f:
                values.append(f.read().split()[0])
        except (OSError, IndexError):
            return write_checksums(path)
    return values[0], values[1]


def checksums_valid(path: str) -> bool:
    """True when both checksum files exist and match the file's content."""
    try:
        recorded = []
        for ext in ("md5", "sha256"):
            with open(f"{path}.{ext}") as f:
                recorded.append(f.read().split()[0])
        return tuple(recorded) == _digest(path)
    except (OSError, IndexError):
        return False


def convert(source: str, source_fmt: str, dest: str, dest_fmt: str, timeout: float = 3600) -> None:
    """`qemu-img convert` one file; the destination appears atomically."""
    try:
        in_fmt = QEMU_FORMATS[source_fmt][0]
        out_fmt, opts = QEMU_FORMATS[dest_fmt]
    except KeyError as e:
        raise ImageBuildError(f"cannot convert {source_fmt} to {dest_fmt}: unknown format") from e
    tmp = dest + ".part"
    cmd = ["qemu-img", "convert", "-f", in_fmt, "-O", out_fmt, *opts, source, tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        _unlink(tmp)
        raise ImageBuildError(f"qemu-img convert {source} -> {dest_fmt} failed: {e}") from e
    if proc.returncode != 0:
        _unlink(tmp)
        raise ImageBuildError(
            f"qemu-img convert {source} -> {dest_fmt} failed (status {proc.returncode}): "
            f"{proc.stderr.strip()}"
        )
    os.replace(tmp, dest)


def ensure_formats(output_base: str, needed: Iterable[str]) -> list[str]:
    """Convert whatever needed format the build did not produce; checksum every file.

    Returns the formats now present (needed or not). Raises ImageBuildError when nothing to
    convert from exists or a conversion fails.
    """
    have = present_formats(output_base)
    if not have:
        raise ImageBuildError(f"no image file was produced at {output_base}.<format>")
    source_fmt = next(f for f in SOURCE_PREFERENCE if f in have)
    for fmt in needed:
        if fmt in have:
            continue
        log.info("Converting %s from %s to %s", output_base, source_fmt, fmt)
        convert(image_path(output_base, source_fmt), source_fmt, image_path(output_base, fmt), fmt)
        have.append(fmt)
    for fmt in have:
        path = image_path(output_base, fmt)
        if not checksums_valid(path):
            write_checksums(path)
    return sorted(have)


def remove_build_files(output_base: str) -> list[str]:
    """Delete every file of one build (images, checksums, `.d` manifest dir)."""
    removed: list[str] = []
    directory, base = os.path.split(output_base)
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        if name != base and not name.startswith(base + "."):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            _unlink(path)
        removed.append(path)
    return removed


def provider_formats(formats_by_provider: Mapping[str, str], providers: Iterable[str]) -> set[str]:
    return {formats_by_provider[p] for p in providers if p in formats_by_provider}


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

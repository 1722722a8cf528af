"""Running diskimage-builder: command line, environment, log file, time limit.

The command is upstream's: `<dib-cmd> -x -t <fmts> --checksum --no-tmpfs
[--qemu-img-options compat=0.10] -o <images-dir>/<image>-<build_id> <elements>`. DIB runs in its
own process group so a timeout or a builder shutdown kills every process it started.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import nodepool_ng
from nodepool_ng.errors import ImageBuildError

log = logging.getLogger("nodepool_ng.builder.dib")

DEFAULT_DIB_CMD = "disk-image-create"
# Formats diskimage-builder writes itself. vhd needs `vhd-util` (absent from Debian 12), so
# without it vhd comes from a qemu-img conversion instead (see formats.py).
DIB_NATIVE_FORMATS = ("qcow2", "raw", "vhd")


@dataclass(frozen=True)
class DibJob:
    """One diskimage-builder run."""

    image_name: str
    build_id: str
    elements: tuple[str, ...]
    formats: tuple[str, ...]  # passed to `-t`, in order
    images_dir: str
    log_dir: str
    dib_cmd: str = DEFAULT_DIB_CMD
    release: str | None = None
    env_vars: Mapping[str, str] = field(default_factory=dict)
    elements_dir: str | None = None
    timeout: float = 28800.0

    @property
    def output_base(self) -> str:
        """`<images-dir>/<image>-<build_id>`: DIB appends `.<ext>` per format."""
        return os.path.join(self.images_dir, f"{self.image_name}-{self.build_id}")

    @property
    def log_path(self) -> str:
        return os.path.join(self.log_dir, f"{self.image_name}-{self.build_id}.log")


def expand_dib_cmd(dib_cmd: str) -> list[str]:
    """Split `dib-cmd` like a shell would; `%p` is the nodepool_ng package directory."""
    package_dir = os.path.dirname(os.path.abspath(nodepool_ng.__file__))
    words = shlex.split(dib_cmd.replace("%p", package_dir))
    if not words:
        raise ImageBuildError("dib-cmd is empty")
    return words


def dib_command(job: DibJob) -> list[str]:
    cmd = expand_dib_cmd(job.dib_cmd)
    cmd += ["-x", "-t", ",".join(job.formats), "--checksum", "--no-tmpfs"]
    if "qcow2" in job.formats:
        # Older qemu (and some clouds' hypervisors) cannot read qcow2 v3.
        cmd += ["--qemu-img-options", "compat=0.10"]
    cmd += ["-o", job.output_base]
    cmd += list(job.elements)
    return cmd


def dib_environment(job: DibJob, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    if job.release is not None:
        env["DIB_RELEASE"] = str(job.release)
    env["DIB_IMAGE_NAME"] = job.image_name
    env["DIB_IMAGE_FILENAME"] = job.output_base
    if job.elements_dir:
        env["ELEMENTS_PATH"] = job.elements_dir
    # The diskimage's env-vars win over everything we set.
    env.update({k: str(v) for k, v in job.env_vars.items()})
    return env


def prune_logs(log_dir: str, image_name: str, retention: int) -> list[str]:
    """Keep the newest `retention - 1` logs of this image so the new one makes `retention`.

    `retention < 0` keeps everything. Returns the paths removed.
    """
    if retention < 0 or not os.path.isdir(log_dir):
        return []
    prefix = f"{image_name}-"
    logs = []
    for name in os.listdir(log_dir):
        # `<image>-<32 hex>.log`: the id check keeps image "foo" from pruning "foo-bar" logs.
        if not (name.startswith(prefix) and name.endswith(".log")):
            continue
        build_id = name[len(prefix) : -len(".log")]
        if "-" in build_id:
            continue
        path = os.path.join(log_dir, name)
        logs.append((os.path.getmtime(path), path))
    logs.sort(reverse=True)
    removed = []
    for _, path in logs[max(retention - 1, 0) :]:
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_dib(
    job: DibJob,
    retention: int = 7,
    stop: threading.Event | None = None,
    base_env: Mapping[str, str] | None = None,
) -> str:
    """Run DIB to completion; return the log path. Raise ImageBuildError naming the log."""
    os.makedirs(job.images_dir, exist_ok=True)
    os.makedirs(job.log_dir, exist_ok=True)
    prune_logs(job.log_dir, job.image_name, retention)
    cmd = dib_command(job)
    env = dib_environment(job, base_env)
    log.info("Building image %s build %s: %s", job.image_name, job.build_id, shlex.join(cmd))
    with open(job.log_path, "wb") as out:
        out.write(f"# {shlex.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=job.images_dir,
                start_new_session=True,  # own process group: killed as a whole
            )
        except OSError as e:
            out.write(f"# cannot start {cmd[0]}: {e}\n".encode())
            raise ImageBuildError(
                f"image {job.image_name} build {job.build_id}: cannot run {cmd[0]!r}: {e}; "
                f"log: {job.log_path}"
            ) from e
        deadline = time.monotonic() + job.timeout
        reason = None
        while True:
            try:
                rc = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() >= deadline:
                reason = f"timed out after {job.timeout:g}s"
            elif stop is not None and stop.is_set():
                reason = "interrupted by builder shutdown"
            if reason:
                _kill_group(proc)
                proc.wait()
                out.write(f"\n# nodepool: build {reason}; process group killed\n".encode())
                raise ImageBuildError(
                    f"image {job.image_name} build {job.build_id} {reason}; log: {job.log_path}"
                )
        if rc != 0:
            out.write(f"\n# nodepool: {cmd[0]} exited with status {rc}\n".encode())
            raise ImageBuildError(
                f"image {job.image_name} build {job.build_id} failed: {os.path.basename(cmd[0])}"
                f" exited with status {rc}; log: {job.log_path}"
            )
    return job.log_path


def dib_formats(needed: Sequence[str], native: Sequence[str]) -> tuple[str, ...]:
    """The `-t` list: the needed formats DIB can write itself; at least one (qcow2)."""
    out = tuple(f for f in needed if f in native)
    return out or ("qcow2",)

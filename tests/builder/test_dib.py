"""diskimage-builder command line, environment, logs and time limit, with the stand-in DIB."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from nodepool_ng.builder import dib, formats
from nodepool_ng.errors import ImageBuildError
from tests.builder.support import wait_for

FAKE_DIB = str(Path(__file__).resolve().parents[1] / "fixtures" / "fake-disk-image-create")


def make_job(tmp_path: Path, **kw: object) -> dib.DibJob:
    args: dict[str, object] = dict(
        image_name="debian",
        build_id="0123456789abcdef0123456789abcdef",
        elements=("debian-minimal", "simple-init"),
        formats=("qcow2", "raw"),
        images_dir=str(tmp_path / "images"),
        log_dir=str(tmp_path / "logs"),
        dib_cmd=FAKE_DIB,
        release="bookworm",
        env_vars={"FAKE_DIB_RECORD": str(tmp_path / "record.jsonl"), "DIB_CUSTOM": "yes"},
        elements_dir="/etc/elements",
    )
    args.update(kw)
    return dib.DibJob(**args)  # type: ignore[arg-type]


def records(tmp_path: Path) -> list[dict[str, object]]:
    lines = (tmp_path / "record.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_command_line_and_environment_are_upstreams(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    log_path = dib.run_dib(job)
    (rec,) = records(tmp_path)
    assert rec["argv"] == [
        "-x",
        "-t",
        "qcow2,raw",
        "--checksum",
        "--no-tmpfs",
        "--qemu-img-options",
        "compat=0.10",
        "-o",
        job.output_base,
        "debian-minimal",
        "simple-init",
    ]
    env = rec["env"]
    assert isinstance(env, dict)
    assert env["DIB_RELEASE"] == "bookworm"
    assert env["DIB_IMAGE_NAME"] == "debian"
    assert env["DIB_IMAGE_FILENAME"] == job.output_base
    assert env["ELEMENTS_PATH"] == "/etc/elements"
    assert env["DIB_CUSTOM"] == "yes"
    assert log_path == os.path.join(job.log_dir, f"debian-{job.build_id}.log")
    assert (
        "fake-disk-image-create: elements debian-minimal simple-init" in Path(log_path).read_text()
    )
    for fmt in ("qcow2", "raw"):
        path = formats.image_path(job.output_base, fmt)
        assert formats.checksums_valid(path)
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", job.output_base + ".qcow2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(info.stdout)["format-specific"]["data"]["compat"] == "0.10"


def test_no_qemu_options_without_qcow2_and_env_vars_win(tmp_path: Path) -> None:
    job = make_job(
        tmp_path,
        formats=("raw",),
        release=None,
        elements_dir=None,
        env_vars={"FAKE_DIB_RECORD": str(tmp_path / "record.jsonl"), "DIB_IMAGE_NAME": "mine"},
    )
    env = dib.dib_environment(job, base={"PATH": "/usr/bin", "DIB_RELEASE": "inherited"})
    assert env["DIB_IMAGE_NAME"] == "mine"
    assert env["DIB_RELEASE"] == "inherited"
    assert "ELEMENTS_PATH" not in env
    dib.run_dib(job)
    (rec,) = records(tmp_path)
    assert "--qemu-img-options" not in rec["argv"]


def test_dib_cmd_with_arguments_and_package_dir(tmp_path: Path) -> None:
    words = dib.expand_dib_cmd("python3 %p/x 'a b'")
    assert words[0] == "python3" and words[2] == "a b"
    assert words[1].endswith("nodepool_ng/x") and os.path.isabs(words[1])
    with pytest.raises(ImageBuildError, match="dib-cmd is empty"):
        dib.expand_dib_cmd("  ")


def test_failure_names_the_log(tmp_path: Path) -> None:
    job = make_job(tmp_path, env_vars={"FAKE_DIB_FAIL": "1"})
    with pytest.raises(ImageBuildError) as err:
        dib.run_dib(job)
    assert job.log_path in str(err.value)
    assert "exited with status 1" in str(err.value)
    assert "failing on demand" in Path(job.log_path).read_text()


def test_missing_command_names_the_log(tmp_path: Path) -> None:
    job = make_job(tmp_path, dib_cmd=str(tmp_path / "no-such-dib"))
    with pytest.raises(ImageBuildError, match="cannot run") as err:
        dib.run_dib(job)
    assert job.log_path in str(err.value)


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    script = tmp_path / "slow-dib"
    pidfile = tmp_path / "child.pid"
    script.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {pidfile}\nwait\n")
    script.chmod(0o755)
    job = make_job(tmp_path, dib_cmd=str(script), timeout=0.5)
    with pytest.raises(ImageBuildError, match="timed out") as err:
        dib.run_dib(job)
    assert job.log_path in str(err.value)
    child = int(pidfile.read_text())
    stat = Path(f"/proc/{child}/stat")

    def gone() -> bool:
        try:
            return stat.read_text().split()[2] == "Z"  # a zombie until init reaps it
        except OSError:
            return True

    # The grandchild was killed with its group (delivery takes a moment).
    wait_for(gone, timeout=10, what=f"process {child} killed")


def test_stop_event_interrupts(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    job = make_job(tmp_path, env_vars={"FAKE_DIB_SLEEP": "30"})
    with pytest.raises(ImageBuildError, match="interrupted"):
        dib.run_dib(job, stop=stop)


def test_log_retention(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(5):
        p = logs / f"debian-{i:032x}.log"
        p.write_text("x")
        os.utime(p, (1000 + i, 1000 + i))
    (logs / "debian-extra-00000000000000000000000000000001.log").write_text("other image")
    removed = dib.prune_logs(str(logs), "debian", 3)
    # Two kept, so the next build's log makes three.
    assert sorted(os.path.basename(p) for p in removed) == [
        f"debian-{i:032x}.log" for i in range(3)
    ]
    assert (logs / "debian-extra-00000000000000000000000000000001.log").exists()
    assert dib.prune_logs(str(logs), "debian", -1) == []


def test_dib_formats() -> None:
    assert dib.dib_formats(["qcow2", "vhd"], ("qcow2", "raw")) == ("qcow2",)
    assert dib.dib_formats(["vhd"], ("qcow2", "raw")) == ("qcow2",)
    assert dib.dib_formats(["raw", "vhd"], ("qcow2", "raw", "vhd")) == ("raw", "vhd")

"""The Dockerfile: a launcher and a builder target, non-root, each with a HEALTHCHECK that
works.

No container engine runs on the test machines (a docker client without a daemon at most), so
the image build itself is a test that skips with that reason. What is checked without one:
the stages and targets, USER and HEALTHCHECK of each image, the builder's diskimage-builder
and host tools (known to this Debian release's apt), and each HEALTHCHECK's own command, run
here against the real daemon it checks.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient

from nodepool_ng.cmd import launcher as cmd_launcher
from nodepool_ng.runtime.loop import Worker
from nodepool_ng.runtime.watchdog import Watchdog
from tests.builder.support import diskimage
from tests.builder.support import write_config as write_builder_config
from tests.cli.test_sdnotify import NotifyingDaemon
from tests.fixtures.ports import free_port
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DIB_HOST_TOOLS = {"qemu-utils", "debootstrap", "kpartx", "gdisk", "parted", "dosfstools",
                  "squashfs-tools", "uuid-runtime", "sudo"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        found = self.all(keyword)
        assert len(found) == 1, (self.name, keyword, found)
        return found[0]


def parse_dockerfile(path: Path = REPO / "Dockerfile") -> list[Stage]:
    """Stages in order, each with its (KEYWORD, arguments) instructions; continuation lines
    joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert m, line
            stages.append(Stage(m.group(2) or str(len(stages)), m.group(1)))
        elif keyword != "ARG" or stages:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def stage(name: str) -> Stage:
    return next(s for s in parse_dockerfile() if s.name == name)


def chain(name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in parse_dockerfile()}
    out = [by_name[name]]
    while out[-1].base in by_name:
        out.append(by_name[out[-1].base])
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value), args
    return value


def healthcheck_command(name: str) -> list[str]:
    args = stage(name).one("HEALTHCHECK")
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", args)
    assert m, args
    return exec_form(m.group(1))


def image_env(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for s in reversed(chain(name)):
        for args in s.all("ENV"):
            for key, val in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[key] = val.strip('"')
    return env


# -- the Dockerfile's shape ---------------------------------------------------------------------


def test_dockerfile_has_a_launcher_and_a_builder_target() -> None:
    names = [s.name for s in parse_dockerfile()]
    assert {"launcher", "builder"} <= set(names)
    # `docker build .` without --target builds the last stage: the launcher, as before.
    assert names[-1] == "launcher"
    # Multi-stage: both images take the wheels from the first stage, not a compiler.
    for target in ("launcher", "builder"):
        runs = " ".join(stage(target).all("RUN"))
        assert "from=wheels" in runs and "--no-index" in runs, runs


@pytest.mark.parametrize("target", ["launcher", "builder"])
def test_image_runs_as_the_nodepool_user_in_the_foreground(target: str) -> None:
    s = stage(target)
    assert s.one("USER") == "nodepool"
    # The last USER is the one the daemon runs as: nothing switches back to root.
    assert s.instructions.index(("USER", "nodepool")) > max(
        i for i, (kw, _) in enumerate(s.instructions) if kw == "RUN")
    cmd = exec_form(s.one("CMD"))
    assert cmd[0] == f"nodepool-{target}" and "-f" in cmd, cmd
    # A stage it is built from creates the user.
    runs = [run for st in chain(target) for run in st.all("RUN")]
    assert any(re.search(r"useradd [^&]*--shell \S+ nodepool\b", run) for run in runs), runs


def test_builder_image_has_diskimage_builder_and_its_host_tools() -> None:
    runs = " ".join(stage("builder").all("RUN"))
    assert '"nodepool-ng[dib]"' in runs
    assert set(apt_packages("builder")) >= DIB_HOST_TOOLS
    assert "NOPASSWD" in runs  # diskimage-builder's root steps go through sudo
    # The dib extra is what brings diskimage-builder.
    setup = (REPO / "setup.cfg").read_text()
    assert re.search(r"^dib =\s*\n\s+diskimage-builder", setup, re.M), "setup.cfg dib extra"


def test_launcher_image_has_no_build_tools() -> None:
    runs = " ".join(stage("launcher").all("RUN"))
    assert "[dib]" not in runs
    assert not DIB_HOST_TOOLS & set(apt_packages("launcher"))


def apt_packages(target: str) -> list[str]:
    out = []
    for run in stage(target).all("RUN"):
        m = re.search(r"apt-get install (.*?)(?:&&|$)", run)
        if m:
            out += [w for w in m.group(1).split() if not w.startswith("-")]
    return out


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="apt-cache is not installed here")
@pytest.mark.parametrize("target", ["launcher", "builder"])
def test_apt_packages_exist_in_this_debian_release(target: str) -> None:
    """The image's base is Debian 12 (bookworm), as this machine: apt must know each name."""
    if "bookworm" not in Path("/etc/os-release").read_text():
        pytest.skip("this machine is not Debian 12 (bookworm), the image's base")
    wanted = apt_packages(target)
    assert wanted
    result = subprocess.run(["apt-cache", "show", "--no-all-versions", *wanted],
                            capture_output=True, text=True, timeout=300, check=False)
    known = set(re.findall(r"^Package: (\S+)$", result.stdout, re.M))
    assert set(wanted) <= known, (sorted(set(wanted) - known), result.stderr)


@pytest.mark.parametrize("target", ["launcher", "builder"])
def test_healthcheck_is_an_exec_form_python_command(target: str) -> None:
    args = stage(target).one("HEALTHCHECK")
    for option in ("--interval=", "--timeout=", "--start-period="):
        assert option in args, args
    command = healthcheck_command(target)
    assert command[:2] == ["python3", "-c"]
    compile(command[2], f"{target} HEALTHCHECK", "exec")


def test_dockerignore_keeps_the_context_to_what_the_wheels_stage_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().split()
    assert "*" in lines and "!nodepool_ng" in lines and "!setup.cfg" in lines
    copies = " ".join(stage("wheels").all("COPY"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "nodepool_ng"):
        assert name in copies and f"!{name}" in lines


# -- each HEALTHCHECK against the daemon it checks -----------------------------------------------


def run_healthcheck(target: str, env: dict[str, str]) -> int:
    command = [sys.executable, *healthcheck_command(target)[1:]]
    return subprocess.run(command, env=env, capture_output=True, timeout=30,
                          check=False).returncode


@pytest.mark.slow
def test_launcher_healthcheck_passes_once_ready_and_fails_once_stopped(
    tmp_path: Path, zk_chroot: ZooKeeperChroot,
) -> None:
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds([{"name": "cloud1"}], clouds_yaml)
    try:
        config = h.write_config(tmp_path / "nodepool.yaml", zk_chroot,
                                [h.provider("p1", "cloud1")])
        port = free_port()
        data = yaml.safe_load(config.read_text())
        data["webapp"] = {"port": port, "listen_address": "127.0.0.1"}
        config.write_text(yaml.safe_dump(data))
        env = {**os.environ, "NODEPOOL_HEALTH_URL": f"http://127.0.0.1:{port}/health/ready"}
        assert run_healthcheck("launcher", env) != 0  # nothing listens yet
        launcher = NotifyingDaemon(
            [str(BIN / "nodepool-launcher"), "-f", "-c", str(config),
             "--clouds-yaml", str(clouds_yaml)], tmp_path / "launcher.log", env=dict(os.environ))
        try:
            launcher.wait_for("healthy", lambda: run_healthcheck("launcher", env) == 0)
        finally:
            assert launcher.stop() == 0
        assert run_healthcheck("launcher", env) != 0
    finally:
        sim.stop()


@pytest.mark.slow
def test_builder_healthcheck_follows_the_watchdog_heartbeat(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, kazoo_client: KazooClient,
) -> None:
    config = write_builder_config(tmp_path, zk_chroot, [diskimage("first", pause=True)])
    image = image_env("builder")
    assert set(image) >= {"NODEPOOL_WATCHDOG_SEC", "NODEPOOL_HEARTBEAT_FILE"}
    heartbeat = tmp_path / "heartbeat"
    # The image's variables, with a short timeout and a heartbeat file of this test's own.
    env = {**os.environ, "NODEPOOL_WATCHDOG_SEC": "2", "NODEPOOL_HEARTBEAT_FILE": str(heartbeat)}
    assert run_healthcheck("builder", env) != 0  # no heartbeat yet
    builder = NotifyingDaemon([str(BIN / "nodepool-builder"), "-f", "-c", str(config)],
                              tmp_path / "builder.log", env=env)
    try:
        builder.wait_for("healthy", lambda: run_healthcheck("builder", env) == 0)
        # Refreshed every second: still healthy three timeouts later.
        time.sleep(6)
        assert run_healthcheck("builder", env) == 0, builder.output()
    finally:
        assert builder.stop() == 0
    # Stopped: the heartbeat ages past the timeout.
    time.sleep(2.5)
    assert run_healthcheck("builder", env) != 0


class FakeLauncher:
    def __init__(self) -> None:
        self.ready = threading.Event()
        self.stopped = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        return self.stopped.wait(timeout)


def test_launcher_readiness_needs_registered_pools_and_no_stuck_loop() -> None:
    """What /health/ready (the launcher image's HEALTHCHECK) answers (cmd.launcher._ready)."""
    launcher = FakeLauncher()
    release = threading.Event()
    stuck = Worker("PoolWorker.p1-main", target=lambda: release.wait(30) and None)
    now = [100.0]
    dog = Watchdog(10.0, workers=lambda: [stuck], clock=lambda: now[0], send=lambda *a: True)
    ready = functools.partial(cmd_launcher._ready, launcher, dog)  # type: ignore[arg-type]
    stuck.start()
    try:
        h.wait_for("in a pass", lambda: stuck.pass_seconds() > 0)
        stuck._pass_started = now[0]
        assert ready() is False  # pools not registered yet
        launcher.ready.set()
        assert ready() is True
        now[0] += 11  # one pass for longer than the watchdog timeout
        assert ready() is False
        release.set()
        h.wait_for("pass ended", lambda: stuck.passes >= 1)
        assert ready() is True
        launcher.stopped.set()
        assert ready() is False
    finally:
        release.set()
        stuck.stop()
        stuck.join(10)


# -- the real build, where an engine exists ------------------------------------------------------


def docker_daemon() -> str | None:
    """Why no image can be built here, or None when `docker info` answers."""
    if shutil.which("docker") is None:
        return "no docker client"
    result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30,
                            check=False)
    return None if result.returncode == 0 else "no docker daemon answers `docker info`"


@pytest.mark.slow
@pytest.mark.parametrize("target", ["launcher", "builder"])
def test_image_builds(target: str) -> None:
    why = docker_daemon()
    if why is not None:
        pytest.skip(f"cannot build images here: {why}")
    result = subprocess.run(["docker", "build", "--target", target, "-t",
                             f"nodepool-ng-test-{target}", str(REPO)],
                            capture_output=True, text=True, timeout=3600, check=False)
    assert result.returncode == 0, result.stderr[-5000:]
    user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id",
                           f"nodepool-ng-test-{target}", "-un"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert user.stdout.strip() == "nodepool", user

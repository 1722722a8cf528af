"""Daemons that cannot work fail at start: exit status 1 and one line naming the field or
file, before detaching (so the operator sees it); never a traceback, never running on
silently."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient

from tests.builder.support import diskimage
from tests.builder.support import write_config as write_builder_config
from tests.fixtures.zookeeper import ZooKeeperChroot

BIN = Path(sys.executable).parent
# Long enough for a loaded machine; a daemon that is still running then runs on silently.
EXIT_WAIT = 60


@pytest.fixture
def pidfiles(tmp_path: Path) -> Iterator[list[Path]]:
    """A daemon the check failed to stop would detach: kill it by its pidfile."""
    files: list[Path] = []
    yield files
    for f in files:
        try:
            os.kill(int(f.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def run(argv: list[str | Path]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                              timeout=EXIT_WAIT, check=False)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"still running after {EXIT_WAIT} s: {argv}\n{e.output!r}") from e


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()
             or line.startswith("nodepool")]
    assert lines, result.stderr
    for word in words:
        assert word in lines[-1], (word, result.stderr)


def zk_config(zk: ZooKeeperChroot, **extra: object) -> dict[str, object]:
    return {
        "zookeeper-servers": [{"host": zk.host, "port": zk.port, "chroot": zk.chroot}],
        "zookeeper-timeout": 2.0,
        **extra,
    }


def write(path: Path, data: object) -> Path:
    path.write_text("" if data is None else yaml.safe_dump(data))
    return path


NO_ZOOKEEPER = {
    "empty file": None,
    "no zookeeper-servers": {"labels": [{"name": "small"}], "images-dir": "/tmp/x"},
    "empty zookeeper-servers": {"zookeeper-servers": [], "images-dir": "/tmp/x"},
}


@pytest.mark.parametrize("content", NO_ZOOKEEPER.values(), ids=NO_ZOOKEEPER.keys())
def test_config_validate_requires_zookeeper_servers(tmp_path: Path, content: object) -> None:
    cfg = write(tmp_path / "nodepool.yaml", content)
    result = run([BIN / "nodepool", "-c", cfg, "config-validate"])
    assert_one_line_error(result, "zookeeper-servers")


@pytest.mark.parametrize("content", NO_ZOOKEEPER.values(), ids=NO_ZOOKEEPER.keys())
@pytest.mark.parametrize("script", ["nodepool-launcher", "nodepool-builder"])
def test_daemon_without_zookeeper_servers_exits_before_detaching(
    tmp_path: Path, content: object, script: str, pidfiles: list[Path]
) -> None:
    cfg = write(tmp_path / "nodepool.yaml", content)
    pidfile = tmp_path / "daemon.pid"
    pidfiles.append(pidfile)
    extra = ["--no-webapp"] if script == "nodepool-launcher" else []
    # No -f: the message must reach the operator's terminal, not the detached child's.
    result = run([BIN / script, "-c", cfg, "-p", pidfile, *extra])
    assert_one_line_error(result, "zookeeper-servers", str(cfg))


def test_nodepool_command_without_zookeeper_servers(tmp_path: Path) -> None:
    cfg = write(tmp_path / "nodepool.yaml", {"labels": [{"name": "small"}]})
    result = run([BIN / "nodepool", "-c", cfg, "list"])
    assert_one_line_error(result, "zookeeper-servers")


def test_config_validate_accepts_zookeeper_servers_from_the_secure_file(
    tmp_path: Path, zk_chroot: ZooKeeperChroot
) -> None:
    cfg = write(tmp_path / "nodepool.yaml", {"labels": [{"name": "small"}]})
    secure = write(tmp_path / "secure.conf", {"zookeeper-servers": [
        {"host": zk_chroot.host, "port": zk_chroot.port, "chroot": zk_chroot.chroot}]})
    result = run([BIN / "nodepool", "-c", cfg, "-s", secure, "config-validate"])
    assert result.returncode == 0, result.stderr


def test_launcher_with_missing_clouds_yaml_exits(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, pidfiles: list[Path]
) -> None:
    cfg = write(tmp_path / "nodepool.yaml", zk_config(zk_chroot))
    missing = tmp_path / "nowhere" / "clouds.yaml"
    pidfile = tmp_path / "launcher.pid"
    pidfiles.append(pidfile)
    result = run([BIN / "nodepool-launcher", "-c", cfg, "-p", pidfile, "--no-webapp",
                  "--clouds-yaml", missing])
    assert_one_line_error(result, "--clouds-yaml", str(missing))


def test_launcher_whose_providers_all_failed_exits(
    tmp_path: Path, zk_chroot: ZooKeeperChroot
) -> None:
    clouds_yaml = write(tmp_path / "clouds.yaml", {"clouds": {"other": {
        "auth": {"auth_url": "http://127.0.0.1:9/identity", "username": "u",
                 "password": "p", "project_name": "p"}}}})
    providers = [
        {"name": name, "cloud": "nosuch", "cloud-images": [{"name": "debian"}],
         "pools": [{"name": "main", "labels": [
             {"name": "small", "cloud-image": "debian", "flavor-name": "small"}]}]}
        for name in ("p1", "p2")
    ]
    cfg = write(tmp_path / "nodepool.yaml",
                zk_config(zk_chroot, labels=[{"name": "small"}], providers=providers))
    # Foreground: the providers start after the config checks, in the running daemon.
    result = run([BIN / "nodepool-launcher", "-f", "-c", cfg, "--no-webapp",
                  "--clouds-yaml", clouds_yaml])
    assert_one_line_error(result, "p1", "p2")
    # Each provider's own error is in the log.
    assert "Provider p1 could not start" in result.stderr


# -- where a detached daemon logs -------------------------------------------------------------

# The console script's main() with the log directory (/var/log/nodepool) moved to argv[1].
WITH_LOG_DIR = (
    "import sys; import nodepool_ng.runtime.daemon as d; d.LOG_DIR = sys.argv[1]; "
    "from nodepool_ng.cmd.{module} import main; sys.exit(main(sys.argv[2:]))"
)


def run_with_log_dir(module: str, log_dir: Path, argv: list[str | Path]
                     ) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", WITH_LOG_DIR.format(module=module), log_dir, *argv])


def wait_until(what: str, check: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_detached_builder_logs_to_its_file(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, kazoo_client: KazooClient, pidfiles: list[Path]
) -> None:
    cfg = write_builder_config(tmp_path, zk_chroot, [diskimage("first", pause=True)])
    pidfile = tmp_path / "builder.pid"
    pidfiles.append(pidfile)
    log_dir = tmp_path / "log"
    result = run_with_log_dir("builder", log_dir, ["-c", cfg, "-p", pidfile])
    # The parent returns at once; the detached grandchild writes the pidfile.
    assert result.returncode == 0, result.stderr
    wait_until("pidfile", lambda: pidfile.exists() and pidfile.read_text().strip())
    pid = int(pidfile.read_text())
    log_file = log_dir / "nodepool-builder.log"
    # Registered: started, its signal handlers in place.
    builders = "/nodepool/components/builder"
    wait_until("builder registered",
               lambda: kazoo_client.exists(builders) and kazoo_client.get_children(builders))
    # Logged by the detached process (its stderr is /dev/null): a SIGHUP's line must be
    # in the file.
    os.kill(pid, signal.SIGHUP)
    wait_until("SIGHUP logged", lambda: "reloading on SIGHUP" in log_file.read_text())
    os.kill(pid, signal.SIGTERM)
    wait_until("pidfile removed", lambda: not pidfile.exists())


@pytest.mark.parametrize("module", ["launcher", "builder"])
def test_detaching_without_a_writable_log_file_exits(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, module: str, pidfiles: list[Path]
) -> None:
    cfg = write_builder_config(tmp_path, zk_chroot, [diskimage("first", pause=True)])
    pidfile = tmp_path / "daemon.pid"
    pidfiles.append(pidfile)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    extra = ["--no-webapp"] if module == "launcher" else []
    result = run_with_log_dir(module, blocker / "log", ["-c", cfg, "-p", pidfile, *extra])
    assert_one_line_error(result, "log file", str(blocker / "log"), "-f", "-l")
    assert not pidfile.exists()


def test_launcher_answers_health_before_it_serves(tmp_path: Path) -> None:
    """The web app starts before the launcher connects: liveness answers at once, readiness
    (ours and upstream's `/ready`) is 503 while ZooKeeper cannot be reached."""
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as s:  # a port nobody listens on, for ZooKeeper and the web app
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        web = s.getsockname()[1]
    config = write(tmp_path / "nodepool.yaml", {
        "zookeeper-servers": [{"host": "127.0.0.1", "port": closed}],
        "webapp": {"port": web, "listen_address": "127.0.0.1"},
        "labels": [], "providers": [],
    })

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web}{path}", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return e.code

    proc = subprocess.Popen([str(BIN / "nodepool-launcher"), "-f", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until("liveness answered", lambda: _answers(status, "/health/live"))
        assert status("/health/live") == 200
        assert status("/health/ready") == 503
        assert status("/ready") == 503
        assert proc.poll() is None  # still trying ZooKeeper, not gone
    finally:
        proc.kill()
        proc.wait()


def _answers(status: Callable[[str], int], path: str) -> bool:
    try:
        return status(path) == 200
    except OSError:
        return False  # not listening yet

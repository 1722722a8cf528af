"""systemd's notification protocol: READY=1 when the daemon really serves, WATCHDOG=1 only
while its loops make progress (`nodepool_ng.runtime.sdnotify`, `runtime.watchdog`).

The daemon tests run the console scripts as processes with `NOTIFY_SOCKET` set to a datagram
socket the test listens on, as systemd would for `Type=notify` and `WatchdogSec=`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.runtime import sdnotify
from nodepool_ng.runtime.loop import Worker, live_workers
from nodepool_ng.runtime.watchdog import Watchdog
from tests.builder.support import diskimage
from tests.builder.support import write_config as write_builder_config
from tests.cli.test_signals import Daemon, pool_providers
from tests.cli.test_systemd import value
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h

BIN = Path(sys.executable).parent


class NotifySocket:
    """What systemd listens on: a Unix datagram socket; every message with its arrival time."""

    def __init__(self, address: str) -> None:
        self.name = address  # as written in $NOTIFY_SOCKET
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)

    def receive(self, until: float) -> list[str]:
        """Messages until the deadline (monotonic), each as received."""
        out = []
        while time.monotonic() < until:
            try:
                out.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return out

    def wait_for(self, line: str, daemon: Daemon, timeout: float = 60) -> list[str]:
        """Messages up to and including the first with `line`; fails if the daemon died."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                rc = daemon.proc.poll()
                if rc is not None:
                    raise AssertionError(f"died with {rc} before {line}, after {seen}:\n"
                                         f"{daemon.output()}") from None
                continue
            seen.append(message)
            if line in message.split("\n"):
                return seen
        raise AssertionError(f"no {line} within {timeout}s; got {seen}:\n{daemon.output()}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    s = NotifySocket(f"@nodepool-test-{uuid.uuid4().hex}")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    try:
        yield daemons
    finally:
        for d in daemons:
            d.stop()


def notify_env(sock: NotifySocket, watchdog_usec: int | None = 2_000_000) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["NOTIFY_SOCKET"] = sock.name
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return env


# -- the protocol --------------------------------------------------------------------------------


def test_notify_reaches_an_abstract_socket(notify_socket: NotifySocket) -> None:
    assert sdnotify.notify("READY=1", "STATUS=up", env={"NOTIFY_SOCKET": notify_socket.name})
    assert notify_socket.receive(time.monotonic() + 0.3) == ["READY=1\nSTATUS=up"]


def test_notify_reaches_a_socket_path() -> None:
    # A short directory: a socket path has at most 107 bytes.
    directory = tempfile.mkdtemp(prefix="np-")
    try:
        sock = NotifySocket(os.path.join(directory, "notify"))
        try:
            assert sdnotify.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": sock.name})
            assert sock.receive(time.monotonic() + 0.3) == ["WATCHDOG=1"]
        finally:
            sock.close()
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize("value", [None, "", "vsock:2:1234", "relative/path"])
def test_notify_without_a_usable_socket_does_nothing(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    assert sdnotify.notify("READY=1", env=env) is False


def test_notify_to_a_socket_nobody_listens_on_is_not_an_error() -> None:
    env = {"NOTIFY_SOCKET": f"@nodepool-nobody-{uuid.uuid4().hex}"}
    assert sdnotify.notify("READY=1", env=env) is False


def test_watchdog_timeout_from_the_environment() -> None:
    me = str(os.getpid())
    assert sdnotify.watchdog_timeout({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert sdnotify.watchdog_timeout({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": me}) == 0.5
    # Another process's watchdog (inherited environment), none, nonsense: no watchdog.
    assert sdnotify.watchdog_timeout({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_timeout({}) is None
    assert sdnotify.watchdog_timeout({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_timeout({"WATCHDOG_USEC": "soon"}) is None


# -- the watchdog: fed only while the loops make progress -----------------------------------------


class Sent(list[str]):
    """A fake `sdnotify.notify`: records the lines, says they were sent."""

    def __call__(self, *lines: str) -> bool:
        self.extend(lines)
        return True


class NotifyingDaemon(Daemon):
    """`Daemon` (a console script in the foreground) with an environment of its own."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BlockingWorker(Worker):
    """A loop whose pass blocks until released: a stuck main loop."""

    def __init__(self, name: str) -> None:
        super().__init__(name, interval=0.01)
        self.release = threading.Event()
        self.entered = threading.Event()

    def run_once(self) -> float | None:
        self.entered.set()
        self.release.wait(30)
        return None


def test_watchdog_stops_feeding_while_a_loop_is_stuck_in_a_pass() -> None:
    clock = Clock()
    sent = Sent()
    worker = BlockingWorker("StuckWorker")
    dog = Watchdog(10.0, workers=lambda: [worker], clock=clock, send=sent)
    worker.start()
    try:
        assert worker.entered.wait(10)
        # In its pass for 0 s (real clock vs. the fake one: give the worker our time).
        worker._pass_started = clock.now
        assert dog.feed() is True
        assert sent == ["WATCHDOG=1"]
        clock.now += 5  # next ping due (timeout / 2), the pass is 5 s old: fine
        assert dog.feed() is True
        clock.now += 6  # the same pass for 11 s > 10 s: stuck
        assert dog.problems() == ["StuckWorker: one pass running for 11s (limit 10s)"]
        assert dog.feed() is False
        clock.now += 60
        assert dog.feed() is False
        assert sent == ["WATCHDOG=1", "WATCHDOG=1"]
        # The pass ends: the loop progresses again, the feeding resumes.
        worker.release.set()
        h.wait_for("pass ended", lambda: worker.passes >= 1)
        worker.stop()
        assert dog.feed() is True
        assert sent == ["WATCHDOG=1"] * 3
    finally:
        worker.release.set()
        worker.stop()
        worker.join(10)


def test_watchdog_uses_a_loops_own_limit_and_exempts_infinite_ones() -> None:
    clock = Clock()
    short, long_job = BlockingWorker("Short"), BlockingWorker("Build")
    short.max_pass = 1.0
    long_job.max_pass = float("inf")
    dog = Watchdog(10.0, workers=lambda: [short, long_job], clock=clock, send=lambda *a: True)
    for w in (short, long_job):
        w.start()
    try:
        assert short.entered.wait(10) and long_job.entered.wait(10)
        short._pass_started = long_job._pass_started = clock.now
        clock.now += 3600
        assert dog.problems() == ["Short: one pass running for 3600s (limit 1s)"]
    finally:
        for w in (short, long_job):
            w.release.set()
            w.stop()
            w.join(10)


def exit_thread() -> float | None:
    raise SystemExit  # not an Exception: it ends the loop's thread (silently)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_watchdog_counts_a_dead_loop_and_failing_checks() -> None:
    worker = Worker("Dead", target=exit_thread)
    worker.start()
    worker.join(10)

    def broken() -> str | None:
        raise RuntimeError("boom")

    dog = Watchdog(1.0, checks=[lambda: "scheduler stopped", lambda: None, broken],
                   workers=lambda: [worker], send=lambda *a: True)
    try:
        assert dog.problems() == ["Dead: thread ended", "check failed: boom",
                                  "scheduler stopped"]
        assert dog.feed() is False
    finally:
        worker.stop()


def test_watchdog_ignores_stopped_loops_and_does_nothing_when_disabled() -> None:
    worker = BlockingWorker("Stopping")
    worker.start()
    try:
        assert worker.entered.wait(10)
        worker._pass_started = 0.0
        worker.stop()  # stopping: its last pass may take a while
        dog = Watchdog(1.0, workers=lambda: [worker], clock=lambda: 100.0, send=lambda *a: True)
        assert dog.problems() == []
        disabled = Watchdog(None, workers=lambda: [worker], send=lambda *a: True)
        assert disabled.feed() is False
        assert disabled.step == 1.0
    finally:
        worker.release.set()
        worker.join(10)


def test_live_workers_lists_running_loops_only() -> None:
    worker = Worker("Listed", interval=0.01, target=lambda: None)
    assert worker not in live_workers()
    worker.start()
    try:
        assert worker in live_workers()
    finally:
        worker.stop()
        worker.join(10)
    assert worker not in live_workers()


def test_watchdog_run_feeds_until_the_daemon_stops() -> None:
    sent = Sent()
    stopped = threading.Event()
    dog = Watchdog(0.2, workers=list, send=sent)
    threading.Timer(1.0, stopped.set).start()
    started = time.monotonic()
    dog.run(stopped.wait)
    assert time.monotonic() - started < 5
    # One ping at once, then one every 0.1 s for about a second.
    assert 5 <= len(sent) <= 12, sent
    assert set(sent) == {"WATCHDOG=1"}


def test_watchdog_from_the_environment() -> None:
    me = str(os.getpid())
    systemd = Watchdog.from_environment(env={"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": me,
                                             "NODEPOOL_WATCHDOG_SEC": "99"})
    assert systemd.timeout == 4.0  # systemd's wins
    own = Watchdog.from_environment(env={"NODEPOOL_WATCHDOG_SEC": "600",
                                         "NODEPOOL_HEARTBEAT_FILE": "/tmp/hb"})
    assert (own.timeout, own.heartbeat_file) == (600.0, "/tmp/hb")
    for bad in ("", "0", "-5", "soon", "inf"):
        assert Watchdog.from_environment(env={"NODEPOOL_WATCHDOG_SEC": bad}).enabled is False
    assert Watchdog.from_environment(env={}).enabled is False


def test_heartbeat_file_is_touched_only_while_fed(tmp_path: Path) -> None:
    """What the builder image's HEALTHCHECK reads: the file's age."""
    clock = Clock()
    heartbeat = tmp_path / "heartbeat"
    worker = BlockingWorker("StuckWorker")
    dog = Watchdog(10.0, workers=lambda: [worker], clock=clock, send=lambda *a: False,
                   heartbeat_file=str(heartbeat))
    worker.start()
    try:
        assert worker.entered.wait(10)
        worker._pass_started = clock.now
        assert dog.feed() is True  # no NOTIFY_SOCKET: not sent, but fed
        assert heartbeat.exists()
        os.utime(heartbeat, (1, 1))
        clock.now += 11  # stuck
        assert dog.feed() is False
        assert heartbeat.stat().st_mtime == 1
        worker.release.set()
        h.wait_for("pass ended", lambda: worker.passes >= 1)
        worker.stop()
        assert dog.feed() is True
        assert time.time() - heartbeat.stat().st_mtime < 60
    finally:
        worker.release.set()
        worker.stop()
        worker.join(10)


def test_heartbeat_file_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dog = Watchdog(1.0, workers=list, send=lambda *a: True,
                   heartbeat_file=str(tmp_path / "missing-dir" / "heartbeat"))
    assert dog.feed() is True
    assert "cannot touch" in caplog.text


# -- the daemons ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_launcher_notifies_ready_after_its_pools_registered_then_feeds_the_watchdog(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, kazoo_client: KazooClient,
    notify_socket: NotifySocket, started: list[Daemon],
) -> None:
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds([{"name": "cloud1"}, {"name": "cloud2"}], clouds_yaml)
    try:
        config = h.write_config(tmp_path / "nodepool.yaml", zk_chroot,
                                [h.provider("p1", "cloud1"), h.provider("p2", "cloud2")])
        launcher = NotifyingDaemon(
            [str(BIN / "nodepool-launcher"), "-f", "-c", str(config), "--no-webapp",
             "--clouds-yaml", str(clouds_yaml)],
            tmp_path / "launcher.log", env=notify_env(notify_socket),
        )
        started.append(launcher)
        messages = notify_socket.wait_for("READY=1", launcher)
        # Read when READY=1 arrived: both providers' pools were registered before it.
        assert pool_providers(kazoo_client) == {"p1", "p2"}
        assert messages[-1].split("\n") == ["READY=1", "STATUS=serving providers p1, p2"]
        # No watchdog ping before the daemon is ready (systemd arms it at READY=1).
        assert all("WATCHDOG=1" not in m for m in messages[:-1]), messages
        ready_at = time.monotonic()
        notify_socket.wait_for("WATCHDOG=1", launcher, timeout=10)
        # Fed every WATCHDOG_USEC / 2 = 1 s.
        pings = notify_socket.receive(time.monotonic() + 3.5)
        assert pings.count("WATCHDOG=1") >= 2, pings
        assert time.monotonic() - ready_at < 30
        assert launcher.stop() == 0
        assert "Watchdog: not telling systemd" not in launcher.output()
    finally:
        sim.stop()


@pytest.mark.slow
def test_launcher_without_a_watchdog_notifies_ready_only(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, notify_socket: NotifySocket,
    started: list[Daemon],
) -> None:
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds([{"name": "cloud1"}], clouds_yaml)
    try:
        config = h.write_config(tmp_path / "nodepool.yaml", zk_chroot,
                                [h.provider("p1", "cloud1")])
        launcher = NotifyingDaemon(
            [str(BIN / "nodepool-launcher"), "-f", "-c", str(config), "--no-webapp",
             "--clouds-yaml", str(clouds_yaml)],
            tmp_path / "launcher.log", env=notify_env(notify_socket, watchdog_usec=None),
        )
        started.append(launcher)
        notify_socket.wait_for("READY=1", launcher)
        assert notify_socket.receive(time.monotonic() + 2.5) == []
        launcher.proc.terminate()
        assert notify_socket.wait_for("STOPPING=1", launcher, timeout=30) == ["STOPPING=1"]
        assert launcher.stop() == 0
    finally:
        sim.stop()


@pytest.mark.slow
def test_builder_notifies_ready_after_its_workers_started_then_feeds_the_watchdog(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, kazoo_client: KazooClient,
    notify_socket: NotifySocket, started: list[Daemon],
) -> None:
    config = write_builder_config(tmp_path, zk_chroot, [diskimage("first", pause=True)])
    builder = NotifyingDaemon(
        [str(BIN / "nodepool-builder"), "-f", "-c", str(config), "--build-workers", "2"],
        tmp_path / "builder.log", env=notify_env(notify_socket),
    )
    started.append(builder)
    messages = notify_socket.wait_for("READY=1", builder)
    # Read when READY=1 arrived: registered as running, its image watched.
    builders = kazoo_client.get_children("/nodepool/components/builder")
    assert len(builders) == 1
    assert b'"running"' in kazoo_client.get(f"/nodepool/components/builder/{builders[0]}")[0]
    assert kazoo_client.exists("/nodepool/images/first")
    assert messages[-1].split("\n") == ["READY=1", "STATUS=2 build, 4 upload workers"]
    assert all("WATCHDOG=1" not in m for m in messages[:-1]), messages
    notify_socket.wait_for("WATCHDOG=1", builder, timeout=10)
    pings = notify_socket.receive(time.monotonic() + 3.5)
    assert pings.count("WATCHDOG=1") >= 2, pings
    # `systemctl reload`: the unit's own ExecReload line, as systemd runs it.
    reload = value("nodepool-builder.service", "ExecReload").replace("$MAINPID",
                                                                     str(builder.proc.pid))
    assert subprocess.run(reload.split(), check=False, timeout=30).returncode == 0
    builder.wait_for("reload logged", lambda: "reloading on SIGHUP" in builder.output())
    notify_socket.wait_for("WATCHDOG=1", builder, timeout=10)  # still alive and fed
    assert builder.stop() == 0
    assert "Watchdog: not telling systemd" not in builder.output()


@pytest.mark.slow
def test_a_watchdog_kill_leaves_every_threads_stack_in_the_log(
    tmp_path: Path, zk_chroot: ZooKeeperChroot, notify_socket: NotifySocket,
    started: list[Daemon],
) -> None:
    """systemd's WatchdogSignal is SIGABRT: the journal must show where the loops were."""
    config = write_builder_config(tmp_path, zk_chroot, [diskimage("first", pause=True)])
    builder = NotifyingDaemon([str(BIN / "nodepool-builder"), "-f", "-c", str(config)],
                              tmp_path / "builder.log", env=notify_env(notify_socket))
    started.append(builder)
    notify_socket.wait_for("WATCHDOG=1", builder)
    builder.proc.send_signal(signal.SIGABRT)
    assert builder.proc.wait(30) == -signal.SIGABRT
    output = builder.output()
    assert "Fatal Python error: Aborted" in output
    # The main thread was feeding the watchdog; the workers' threads are there too.
    assert "nodepool_ng/runtime/watchdog.py" in output
    assert "nodepool_ng/runtime/loop.py" in output

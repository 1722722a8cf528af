"""The launcher process and its ZooKeeper session: signals, daemon mode, suspension, expiry."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.launcher.service import Launcher
from tests.fixtures.zookeeper import ZooKeeperChroot, ZooKeeperServer
from tests.launcher import harness as h
from tests.launcher.env import Env
from tests.zk.util import expire_session


def components(kz: KazooClient, kind: str) -> list[str]:
    path = f"/nodepool/components/{kind}"
    return kz.get_children(path) if kz.exists(path) else []


def launcher_cmd(cfg: Path, clouds_yaml: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nodepool_ng.cmd.launcher",
        "-c",
        str(cfg),
        "--no-webapp",
        "--clouds-yaml",
        str(clouds_yaml),
        *extra,
    ]


def test_foreground_sigusr2_dumps_threads_and_sigterm_stops_cleanly(
    env: Env, kazoo_client: KazooClient
) -> None:
    env.clouds([{"name": "cloud1"}])
    cfg = env.config([h.provider("p1", "cloud1")])
    log_path = env.tmp_path / "launcher.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            launcher_cmd(cfg, env.clouds_yaml, "-f"), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        h.wait_for("pool registered", lambda: components(kazoo_client, "pool"), timeout=30)
        # A served request proves the pool worker thread runs (it starts just after its
        # component is registered), so the dump must show it.
        rid = h.submit_request(kazoo_client, ["small"])
        assert h.wait_request(kazoo_client, rid)["state"] == "fulfilled"
        proc.send_signal(signal.SIGUSR2)
        # One record, but stderr is line-buffered: wait for the lines we check.
        h.wait_for(
            "thread dump logged",
            lambda: all(
                s in log_path.read_text()
                for s in ("Thread dump", "Thread: MainThread", "Thread: PoolWorker.p1-main")
            ),
        )
        # Still serving after the dump.
        rid = h.submit_request(kazoo_client, ["small"])
        assert h.wait_request(kazoo_client, rid)["state"] == "fulfilled"
        assert proc.poll() is None

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not components(kazoo_client, "launcher")
    assert not components(kazoo_client, "pool")
    text = log_path.read_text()
    assert "Traceback" not in text, text
    assert "Launcher stopped" in text


def test_daemon_mode_writes_pidfile_and_detaches(env: Env, kazoo_client: KazooClient) -> None:
    env.clouds([{"name": "cloud1"}])
    cfg = env.config([h.provider("p1", "cloud1")])
    pidfile = env.tmp_path / "launcher.pid"
    parent = subprocess.Popen(
        launcher_cmd(cfg, env.clouds_yaml, "-p", str(pidfile)), stderr=subprocess.PIPE
    )
    # The parent returns at once (the daemon lives on in a grandchild).
    _, err = parent.communicate(timeout=60)
    assert parent.returncode == 0, err.decode()
    pid = int(h.wait_for("pidfile written", lambda: pidfile.exists() and pidfile.read_text()))
    try:
        assert pid != parent.pid
        os.kill(pid, 0)  # alive, detached from us
        # A new session: not our process group any more.
        assert os.getsid(pid) != os.getsid(0)
        h.wait_for("daemon registered", lambda: components(kazoo_client, "pool"), timeout=30)
        rid = h.submit_request(kazoo_client, ["small"])
        assert h.wait_request(kazoo_client, rid)["state"] == "fulfilled"
        os.kill(pid, signal.SIGTERM)
        h.wait_for("components unregistered", lambda: not components(kazoo_client, "launcher"))
        h.wait_for("pidfile removed", lambda: not pidfile.exists(), timeout=30)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_session_expiry_reregisters_components_and_carries_on(
    env: Env, kazoo_client: KazooClient
) -> None:
    sim = env.clouds([{"name": "cloud1", "boot_delay": 0.5}])
    launcher = env.start([h.provider("p1", "cloud1")])
    assert launcher.zk_client is not None
    before = {
        "launcher": components(kazoo_client, "launcher"),
        "pool": components(kazoo_client, "pool"),
    }
    assert before["launcher"] and before["pool"]
    # A request in flight while the session expires.
    inflight = h.submit_request(kazoo_client, ["small"])
    h.wait_for("server being built", lambda: h.servers(sim, "cloud1"))
    expire_session(launcher.zk_client)

    def reregistered() -> bool:
        now = (components(kazoo_client, "launcher"), components(kazoo_client, "pool"))
        return bool(now[0] and now[1] and now[0] != before["launcher"] and now[1] != before["pool"])

    h.wait_for("components re-registered", reregistered)
    req = h.wait_request(kazoo_client, inflight)
    assert req["state"] == "fulfilled"
    rid = h.submit_request(kazoo_client, ["small"])
    assert h.wait_request(kazoo_client, rid)["state"] == "fulfilled"
    for r in (inflight, rid):
        h.accept_and_use(kazoo_client, r)
    h.wait_for(
        "all deleted", lambda: not h.all_nodes(kazoo_client) and not h.servers(sim, "cloud1")
    )


@pytest.fixture
def own_zk() -> Iterator[ZooKeeperServer]:
    """A private ZooKeeper this test may stop and restart."""
    server = ZooKeeperServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_suspended_session_pauses_workers_then_resumes(
    tmp_path: Path, own_zk: ZooKeeperServer, caplog: pytest.LogCaptureFixture
) -> None:
    chroot = ZooKeeperChroot.create(own_zk)
    env = Env(tmp_path, chroot)
    kz = KazooClient(hosts=chroot.hosts)
    try:
        env.clouds([{"name": "cloud1"}])
        launcher: Launcher = env.start(
            [h.provider("p1", "cloud1")], labels=[{"name": "small", "min-ready": 1}]
        )
        kz.start(timeout=10)
        ready = h.wait_for(
            "min-ready node",
            lambda: [n for n, d in h.all_nodes(kz).items() if d["state"] == "ready"],
        )
        kz.stop()
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="nodepool_ng")

        assert own_zk.process is not None
        own_zk.process.terminate()
        own_zk.process.wait(10)
        assert launcher.zk_client is not None
        h.wait_for("suspended", lambda: not launcher.zk_client.is_connected)  # type: ignore[union-attr]
        workers = [launcher.deleter, launcher.min_ready, launcher.cleanup]
        passes = [w.passes for w in workers]
        # The config worker does not need ZooKeeper: let it run several passes meanwhile.
        config_passes = launcher.config_worker.passes
        h.wait_for("time passes", lambda: launcher.config_worker.passes >= config_passes + 8)
        # ZooKeeper workers at most finish the pass they were in.
        assert all(w.passes <= p + 1 for w, p in zip(workers, passes, strict=True))
        assert not [r for r in caplog.records if r.exc_info], "tracebacks while suspended"

        own_zk.start()
        kz.start(timeout=20)
        h.wait_for("launcher reconnected", lambda: launcher.zk_client.is_connected, timeout=30)  # type: ignore[union-attr]
        h.wait_for("workers resumed", lambda: launcher.deleter.passes > passes[0] + 1, timeout=30)
        node = h.node(kz, ready[0])
        assert node is not None and node["state"] == "ready"
        rid = h.submit_request(kz, ["small", "small"])
        req = h.wait_request(kz, rid)
        assert req["state"] == "fulfilled"
        # Every record is whole (parses, has a state).
        assert all(n["state"] for n in h.all_nodes(kz).values())
    finally:
        kz.stop()
        kz.close()
        env.stop()

"""Chaos (issue 8 acceptance): two launcher processes, two faulty clouds, a 3-member ZooKeeper
ensemble, 300+ Zuul-style requests, while launchers are SIGKILLed and ZooKeeper members die.

- clouds: simcloud (in this process), `floating` address model (servers get a port, and a
  floating IP from the launcher), 10% 500s on compute/network/image, 5% ERROR servers;
- launchers: `python -m tests.chaos.launcher_proc` (real processes, both serving both
  providers, the way launchers on two machines share one config), short intervals;
- ZooKeeper: tests/fixtures/zk_ensemble.py, every client given all three members;
- Zuul: tests/chaos/zuul.py (threads with kazoo) submits at a steady rate and checks every
  handover;
- schedule: SIGKILL launcher 1 at 20% of the requests (restarted 2 s later), SIGKILL the ZK
  leader at 40% (restarted), SIGKILL launcher 2 at 60% (restarted), SIGKILL every ZK member
  at once at 75% and start them again (clients see ConnectionLoss);
- then: every request final within DRAIN_TIMEOUT; nodes Zuul returned deleted; and after
  that, no server, floating IP or port without a node record within the leak window.

Asserted: every request fulfilled, or failed with a reason (`declined_by`); none stuck; no
node handed over that was not `ready` (and allocated to it, and unchanged since) in
ZooKeeper at the `fulfilled` write; no node handed to two requests; nothing changed a node
between handover and Zuul's lock; no leaked cloud resource; both launchers alive at the
end. The counts are printed (`pytest -m chaos -s`).
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient

from nodepool_ng.launcher.runner import DELETE_BACKOFF
from tests.chaos import audit
from tests.chaos.zuul import RequestRecord, Zuul
from tests.fixtures.simcloud import cloud_profile
from tests.fixtures.zk_ensemble import ZooKeeperEnsemble
from tests.launcher import harness as h

REPO = Path(__file__).resolve().parents[2]
N_REQUESTS = 320
LOAD_SECONDS = 80.0
CLEANUP_INTERVAL = 2.0
PORT_CLEANUP_INTERVAL = 2
MAX_SERVERS = 12  # per pool: full at times under this load
# The launchers delete a leaked server / unattached floating IP / DOWN port when they have
# seen it in two cleanup passes (a resource being attached right now is spared): so a leak
# made by the very last delete needs two passes. The window is those two passes plus one
# pass of slack for a pass whose listing hit an injected 500. The server of a failed launch
# attempt is not the cleanup's: its runner deletes it, retrying with backoff up to
# DELETE_BACKOFF's cap while the clouds keep failing 10% of calls; the record of its node
# names the next attempt's server, so the audit cannot tell it is being deleted. The window
# covers one such backoff.
LEAK_WINDOW = 3 * CLEANUP_INTERVAL + 2.0 + DELETE_BACKOFF[1]
DRAIN_TIMEOUT = 150.0
RESTART_DELAY = 2.0
PROVIDER_CLOUD = {"pa": "sim-a", "pb": "sim-b"}
LAUNCHER_OPTIONS = {
    "runner_poll": 0.05,
    "adapter_poll": 0.2,
    "deleter_interval": 1.0,
    "min_ready_interval": 1.0,
    "cleanup_interval": CLEANUP_INTERVAL,
    "config_interval": 1.0,
    "stats_interval": 5.0,
    "cloud_quota_ttl": 1.0,
}
FAULTS = {"error_rate": {"compute": 0.1, "network": 0.1, "image": 0.1},
          "server_error_rate": 0.05}


@dataclass
class LauncherProc:
    name: str
    config: Path
    clouds_yaml: Path
    workdir: Path
    runs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        log = self.workdir / f"{self.name}-run{len(self.runs) + 1}.log"
        cmd = [sys.executable, "-m", "tests.chaos.launcher_proc", "-c", str(self.config),
               "--clouds-yaml", str(self.clouds_yaml), "--hostname", self.name]
        cmd += [f"--option={k}={v}" for k, v in LAUNCHER_OPTIONS.items()]
        with open(log, "wb") as out:
            self.runs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                              cwd=REPO))
        self.logs.append(log)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.runs[-1]

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def dump_threads(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR2)
            time.sleep(1)

    def stop(self) -> None:
        for p in self.runs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@dataclass
class Chaos:
    t0: float
    events: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)

    def note(self, what: str) -> None:
        self.events.append(f"t={time.monotonic() - self.t0:6.1f}s {what}")


def _config(path: Path, ensemble: ZooKeeperEnsemble, chroot: str) -> Path:
    def provider(name: str, cloud: str, labels: dict[str, str]) -> dict[str, Any]:
        p = h.provider(name, cloud, **{"max-servers": MAX_SERVERS})
        p["pools"][0]["labels"] = [
            {"name": label, "cloud-image": "debian", "flavor-name": flavor}
            for label, flavor in labels.items()]
        p["clean-floating-ips"] = True
        p["port-cleanup-interval"] = PORT_CLEANUP_INTERVAL
        p["boot-timeout"] = 30
        return p

    ports = [m.port for m in ensemble.members.values()]
    cfg = {
        "zookeeper-servers": [{"host": "127.0.0.1", "port": p, "chroot": chroot} for p in ports],
        "zookeeper-timeout": 10.0,
        "labels": [{"name": "small", "min-ready": 1}, {"name": "big", "min-ready": 0}],
        "providers": [provider("pa", "sim-a", {"small": "small"}),
                      provider("pb", "sim-b", {"small": "small", "big": "medium"})],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _labels(rng: random.Random) -> list[str]:
    x = rng.random()
    return ["small"] if x < 0.7 else ["small", "small"] if x < 0.85 else ["small", "big"]


@pytest.fixture
def ensemble() -> Iterator[ZooKeeperEnsemble]:
    with ZooKeeperEnsemble() as e:
        yield e


def _chroot(ensemble: ZooKeeperEnsemble) -> str:
    chroot = f"/nodepool_chaos/{random.getrandbits(48):012x}"
    kz = KazooClient(hosts=ensemble.hosts)
    kz.start(timeout=30)
    try:
        kz.ensure_path(chroot)
    finally:
        kz.stop()
        kz.close()
    return chroot


def _run_chaos(chaos: Chaos, zuul: Zuul, launchers: list[LauncherProc],
               ensemble: ZooKeeperEnsemble, submitted: list[RequestRecord]) -> None:
    def at(fraction: float) -> None:
        while len(submitted) < fraction * N_REQUESTS:
            time.sleep(0.05)

    try:
        for fraction, action in ((0.20, "launcher-1"), (0.40, "zk-leader"),
                                 (0.60, "launcher-2"), (0.75, "zk-all")):
            at(fraction)
            if action.startswith("launcher"):
                lp = launchers[int(action[-1]) - 1]
                lp.sigkill()
                chaos.kills["launcher SIGKILL"] += 1
                chaos.note(f"SIGKILL {lp.name} (pid {lp.proc.pid})")
                time.sleep(RESTART_DELAY)
                lp.start()
                chaos.note(f"restarted {lp.name} (pid {lp.proc.pid})")
            elif action == "zk-leader":
                leader = ensemble.leader()
                if leader is None:
                    chaos.errors.append("no ZooKeeper leader to kill")
                    continue
                ensemble.kill(leader)
                chaos.kills["ZK leader SIGKILL"] += 1
                chaos.note(f"SIGKILL ZooKeeper leader member {leader}")
                time.sleep(RESTART_DELAY)
                ensemble.start(leader)
                chaos.note(f"restarted member {leader}; leader now {ensemble.leader()}")
            else:
                outage = ensemble.restart_all()
                chaos.kills["ZK restart-all"] += 1
                chaos.note(f"SIGKILLed and restarted every ZooKeeper member ({outage:.1f}s "
                           f"without quorum); leader now {ensemble.leader()}")
    except Exception as e:  # shown in the report and fails the test
        chaos.errors.append(f"chaos schedule: {type(e).__name__}: {e}")


def _latency(values: list[float]) -> str:
    if not values:
        return "  no request was final"
    p50, p95 = values[len(values) // 2], values[int(len(values) * 0.95)]
    return f"  request -> final: p50 {p50:.2f}s p95 {p95:.2f}s max {values[-1]:.2f}s"


def _grep(paths: list[Path], pattern: str, limit: int = 12) -> list[str]:
    rx = re.compile(pattern)
    out = []
    for p in paths:
        try:
            lines = p.read_text(errors="replace").splitlines()
        except OSError:
            continue
        out += [f"{p.name}: {line}" for line in lines if rx.search(line)]
    return out[:limit]


@pytest.mark.chaos
@pytest.mark.timeout(600)
def test_chaos(tmp_path: Path, ensemble: ZooKeeperEnsemble) -> None:
    t0 = time.monotonic()
    chaos = Chaos(t0)
    rng = random.Random(8)
    chroot = _chroot(ensemble)
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds(
        [cloud_profile(name, address_model="floating", boot_delay=0.3, boot_jitter=0.2,
                       faults=FAULTS, seed=seed)
         for name, seed in (("sim-a", 1), ("sim-b", 2))],
        clouds_yaml)
    baseline = set(audit.inventory(sim))
    cfg = _config(tmp_path / "nodepool.yaml", ensemble, chroot)
    launchers = [LauncherProc(f"launcher-{i}", cfg, clouds_yaml, tmp_path) for i in (1, 2)]
    zuul = Zuul(ensemble.hosts + chroot)
    error_servers: set[str] = set()
    all_servers: set[str] = set()
    sampling = threading.Event()

    def sample_servers() -> None:
        while not sampling.wait(0.25):
            for cloud, state in sim.states.items():
                with state.lock:
                    for s in state.servers.values():
                        all_servers.add(f"{cloud}/{s.id}")
                        if s.will_error:
                            error_servers.add(f"{cloud}/{s.id}")

    sampler = threading.Thread(target=sample_servers, daemon=True)
    sampler.start()
    submitted: list[RequestRecord] = []
    try:
        zuul.start()
        for lp in launchers:
            lp.start()
        h.wait_for("both launchers registered their pools", lambda: len(
            zuul.kz.get_children("/nodepool/components/pool")
            if zuul.kz.exists("/nodepool/components/pool") else []) >= 4, timeout=60)
        chaos.note("launchers up")

        # -- load + chaos -------------------------------------------------------------------
        chaos_thread = threading.Thread(
            target=_run_chaos, args=(chaos, zuul, launchers, ensemble, submitted), daemon=True)
        chaos_thread.start()
        load_start = time.monotonic()
        for i in range(N_REQUESTS):
            due = load_start + i * LOAD_SECONDS / N_REQUESTS
            time.sleep(max(0.0, due - time.monotonic()))
            submitted.append(zuul.submit(_labels(rng)))
        chaos.note(f"{len(submitted)} requests submitted")
        chaos_thread.join(120)
        if chaos_thread.is_alive():
            chaos.errors.append("chaos schedule did not finish")

        # -- drain --------------------------------------------------------------------------
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline and not all(r.done for r in submitted):
            time.sleep(0.2)
        chaos.note("drained" if all(r.done for r in submitted) else "drain timed out")
        stuck = [r for r in submitted if not r.done]
        if stuck:
            # Where a live launcher waits (SIGUSR2: every thread's stack into its log).
            for lp in launchers:
                lp.dump_threads()

        # -- nodes returned: deleted by the launchers ---------------------------------------
        def settled() -> dict[str, dict[str, Any]]:
            """Nodes that still have to go (anything but an unallocated READY node)."""
            return {nid: n for nid, n in zuul.all_nodes().items()
                    if not (n.get("state") == "ready" and not n.get("allocated_to"))}

        deadline = time.monotonic() + 60
        while settled() and time.monotonic() < deadline:
            time.sleep(0.5)
        undeleted = settled()
        chaos.note(f"node records settled ({len(undeleted)} left)")

        # -- leaks --------------------------------------------------------------------------
        quiet = time.monotonic()
        leaks: list[audit.Resource] = []
        while True:
            leaks = audit.unclaimed(sim, zuul.all_nodes(), PROVIDER_CLOUD, baseline)
            if not leaks or time.monotonic() - quiet > LEAK_WINDOW:
                break
            time.sleep(0.5)
        chaos.note(f"leak check: {len(leaks)} unclaimed")
        # Diagnosis only: are the leaks ever cleaned, or permanent?
        late: dict[audit.Resource, str] = {}
        if leaks:
            watch_until = time.monotonic() + 20
            remaining = set(leaks)
            while remaining and time.monotonic() < watch_until:
                time.sleep(1.0)
                now_leaks = set(audit.unclaimed(sim, zuul.all_nodes(), PROVIDER_CLOUD,
                                                baseline))
                for r in list(remaining):
                    if r not in now_leaks:
                        late[r] = f"gone {time.monotonic() - quiet:.0f}s after quiescence"
                        remaining.discard(r)
            for r in remaining:
                late[r] = "still there 20 s after the window"

        alive = {lp.name: lp.proc.poll() is None for lp in launchers}
        exited = [f"{lp.name} run {i + 1} exited with {p.returncode}"
                  for lp in launchers for i, p in enumerate(lp.runs)
                  if p.returncode is not None and p.returncode != -signal.SIGKILL]
        stuck_info = []
        for r in stuck:
            data = zuul.read_request(r.rid) if r.rid else None
            lock = zuul.lock_holders(f"/nodepool/requests-lock/{r.rid}") if r.rid else []
            shown = data and {k: data.get(k) for k in ("state", "declined_by", "nodes")}
            stuck_info.append(f"{r.rid} {r.labels}: {json.dumps(shown)} lock {lock}")
        sim_stats = {c: dict(s.injected) for c, s in sim.states.items()}
    finally:
        sampling.set()
        for lp in launchers:
            lp.stop()
        zuul.stop()
        sim.stop()

    # -- report -------------------------------------------------------------------------------
    fulfilled = [r for r in submitted if r.final_state == "fulfilled"]
    failed = [r for r in submitted if r.final_state == "failed"]
    no_reason = [r for r in failed if not r.declined_by]
    not_ready = [(r.rid, x) for r in submitted for x in r.not_ready]
    double = [(r.rid, x) for r in submitted for x in r.double]
    changed = [(r.rid, x) for r in submitted for x in r.changed_before_lock]
    lock_failed = [(r.rid, x) for r in submitted for x in r.lock_failed]
    latencies = sorted(r.latency for r in submitted if r.latency is not None)
    by_kind = Counter(x.kind for x in leaks)
    logs = [p for lp in launchers for p in lp.logs]
    lines = [
        f"chaos: {time.monotonic() - t0:.0f}s, workdir {tmp_path}",
        *(f"  {e}" for e in chaos.events),
        f"requests: {len(submitted)} submitted, {len(fulfilled)} fulfilled, "
        f"{len(failed)} failed ({len(no_reason)} without a reason), {len(stuck)} stuck",
        _latency(latencies),
        f"  failed, declined_by: {Counter(tuple(sorted(r.declined_by)) for r in failed)}",
        f"handovers: {len(not_ready)} not ready, {len(double)} double, {len(changed)} node "
        f"changed before Zuul's lock, {len(lock_failed)} node locks not obtained",
        f"leaks: {by_kind['server']} servers, {by_kind['floating_ip']} floating IPs, "
        f"{by_kind['port']} ports unclaimed {LEAK_WINDOW:.0f}s after quiescence; "
        f"{len(undeleted)} node records not deleted",
        f"kills: {dict(chaos.kills)}; launchers alive at the end {alive}; unexpected exits "
        f"{exited}",
        f"clouds: {len(all_servers)} servers seen, {len(error_servers)} ERROR; injected 500s "
        f"{sim_stats}",
        f"zuul-side ZooKeeper errors (not launcher failures): {len(zuul.zuul_errors)} "
        f"{Counter(e.split(':')[0] for e in zuul.zuul_errors)}",
    ]
    lines += [f"  STUCK {s}" for s in stuck_info[:20]]
    lines += [f"  NOT READY {rid}: {x}" for rid, x in not_ready[:20]]
    lines += [f"  DOUBLE {rid}: {x}" for rid, x in double[:20]]
    lines += [f"  CHANGED {rid}: {x}" for rid, x in changed[:20]]
    lines += [f"  LOCK {rid}: {x}" for rid, x in lock_failed[:20]]
    lines += [f"  FAILED WITHOUT REASON {r.rid}" for r in no_reason[:20]]
    lines += [f"  LEAK {x.cloud} {x.kind} {x.id}: {x.detail}; {late.get(x, '')}"
              for x in leaks[:30]]
    lines += [f"  UNDELETED node {nid}: {n.get('state')} allocated_to "
              f"{n.get('allocated_to')} provider {n.get('provider')}"
              for nid, n in list(undeleted.items())[:20]]
    lines += [f"  CHAOS ERROR {e}" for e in chaos.errors]
    lines += [f"  LOG {x}" for x in _grep(logs, r"Traceback|CRITICAL| ERROR ")]
    if stuck:
        lines += [f"  THREADS {p}:\n{_thread_dump(p)}" for p in logs if _thread_dump(p)]
    report = "\n".join(lines)
    print("\n" + report)
    (tmp_path / "report.txt").write_text(report + "\n")
    with open(tmp_path / "requests.jsonl", "w") as out:  # per request, for the timeline
        for r in submitted:
            out.write(json.dumps({
                "rid": r.rid, "labels": r.labels, "submitted": r.submitted - t0,
                "final": r.final_time and r.final_time - t0, "state": r.final_state,
                "declined_by": r.declined_by, "nodes": [s.__dict__ for s in r.seen],
                "problems": r.not_ready + r.double + r.changed_before_lock + r.lock_failed,
                "zuul_errors": r.zuul_errors}) + "\n")

    problems = []
    if chaos.errors:
        problems.append("the chaos schedule did not run as planned")
    if dict(chaos.kills) != {"launcher SIGKILL": 2, "ZK leader SIGKILL": 1, "ZK restart-all": 1}:
        problems.append(f"kills done {dict(chaos.kills)}")
    if len(submitted) < 300:
        problems.append("fewer than 300 requests")
    if stuck:
        problems.append(f"{len(stuck)} requests stuck")
    if no_reason:
        problems.append(f"{len(no_reason)} requests failed without a reason")
    for what, items in (("not-ready handovers", not_ready), ("double handovers", double),
                        ("nodes changed before Zuul's lock", changed),
                        ("node locks not obtained", lock_failed)):
        if items:
            problems.append(f"{len(items)} {what}")
    if leaks:
        problems.append(f"leaked {dict(by_kind)}")
    if undeleted:
        problems.append(f"{len(undeleted)} node records never deleted")
    if not all(alive.values()) or exited:
        problems.append(f"launchers died: {alive} {exited}")
    # The faults must have happened, or this test proves nothing.
    if not error_servers or not all(sum(s.values()) for s in sim_stats.values()):
        problems.append("the clouds injected no faults")
    if not fulfilled:
        problems.append("nothing was fulfilled")
    if problems:
        pytest.fail("; ".join(problems) + "\n" + report, pytrace=False)


def _thread_dump(log: Path) -> str:
    """The stacks of the last SIGUSR2 dump in `log` (threads of our code only), or ''."""
    text = log.read_text(errors="replace")
    start = text.rfind("Thread dump:")
    if start < 0:
        return ""
    threads = text[start:].split("\nThread: ")[1:]
    ours = [t for t in threads if "nodepool_ng" in t]
    return "\n".join("    Thread: " + t.strip() for t in ours)

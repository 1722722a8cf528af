#!/usr/bin/env python3
"""Fleet benchmark (issue 13): what a launcher costs as the fleet grows from 0 to 2,000 nodes.

Starts a ZooKeeper (the test fixture's server, loopback), one `nodepool-simcloud` process
serving 10 clouds (0.1 s boot delay, no quota) and three `nodepool-launcher` processes on one
config and one ZooKeeper, each running a third of the 10 providers (`--provider`, as
`etc/systemd/nodepool-launcher@.service` does; launcher i runs providers p<j> with j % 3 == i).
Every provider has one pool with labels `fill`, `busy` and `job` and a max-servers that is
never the limit (the largest size + 100). The bench client is plain kazoo, as Zuul.

For each fleet size S of `--sizes` (ascending; default 0,200,1000,2000), with
`--in-use` (default 50%) and `--held` (10%) of S:

1. **Fill** to S live nodes, through the launchers: the config's `min-ready` of label `fill`
   is raised to the READY part (S - in-use - held; the launcher re-reads its config every
   5 s), and at the same moment the new in-use and held nodes are asked for as Zuul does, one
   one-node request of label `busy` each, accepted at once: nodes locked, request deleted,
   state `in-use`; the in-use ones stay locked (a running job), the held ones are set `hold`
   and unlocked (an autohold). Printed: launcher CPU per new node (the three launchers' CPU
   from the config write until the fleet is complete, divided by the nodes launched), and the
   seconds the fill took. The fleet is then counted (every node record read) and its make-up
   printed.
2. **Idle**: nothing is written for `--idle` seconds (default 60) after a 3 s settle;
   printed: each launcher's CPU as % of one core (the table shows the largest of the three),
   and ZooKeeper requests/s. The window is one interval of the cleanup worker (60 s), so it
   holds one cleanup pass per launcher: at 2,000 nodes that pass is most of a launcher's
   idle CPU (the leak check lists every port and server of its providers; the request
   lock-dir cleanup calls `exists` on every lock dir younger than 8 h, i.e. one per request
   since start), and a shorter window reads either about 0 or several times the average,
   depending on whether a pass falls in it. The other periodic workers (deleter, min-ready,
   stats, config) run every 5 s.
3. **Steady load**: one-node requests of label `job` written at `--rate` per second (default
   5) for `--steady` seconds (default 20), open loop (each at its due time, whatever the
   launchers do). `job` has min-ready 0 and never has a READY node, so **every request is
   served by a launch** (none from a ready node). Each fulfilled request is accepted as Zuul
   does and returned at once (lock, delete the request, in-use, used, unlock); the launcher
   deletes the server and the node. Measured until the last node of the load is deleted (the
   fleet is back to S records): launcher CPU per request (the three launchers together; a
   launch, a hand-over and a delete each), request -> `fulfilled` p50/p95, and ZooKeeper
   requests per node request (the server's `zk_packets_received` from `mntr`: all clients,
   the bench client's accepts included, as launcher_bench.py counts them).
4. **Burst**: `--burst` (default 50) such requests written at once; the same figures.
5. RSS of each launcher (the table shows the largest).

Then one table (a row per size), the ratios to the smallest size, and the issue's acceptance
figures with their goals (figures only, PASS/FAIL as a reading aid; nothing is asserted and
the exit status does not depend on them). `--json FILE` writes every figure. The default run
took 11 minutes on a 2-core machine busy with other work (load 10-15; most of it filling to
1,000 and 2,000 nodes), less on a quiet one; `--quick` is a 1-2 minute smoke run (sizes
0,200, idle 8 s, steady 10 s, burst 20: its idle figure misses the cleanup, see 2.).

    .venv/bin/python tools/bench/fleet_bench.py [--sizes 0,200,1000,2000] [--quick]
        [--rate 5] [--steady 20] [--burst 50] [--idle 60] [--json out.json] [--workdir DIR]
        [--profile DIR [--py-spy PATH]] [--upstream]

`--profile DIR` records each launcher with py-spy (`--gil`: where the CPU goes) during every
fill, idle and steady phase, keeps the raw stacks in DIR (`<size>-<phase>-launcher<i>.txt`)
and prints, per size and phase, the innermost nodepool_ng function of the sampled stacks and
the library of the leaf frame. py-spy is not a dependency (`pip install py-spy` anywhere and
pass `--py-spy`); sampling costs CPU, so take figures from a run without it.

At a rate of 5/s the CPU per request includes what the launchers spend per second while any
launch is in flight (the runners' 50 ms polls and the server-list reads of each provider
with a launch in flight), divided by the rate: not only per-request work.

`--workdir DIR` keeps the configs and the logs (launcher-<i>.log, simcloud.log). The machine
the figures are taken on matters: on 2 cores, ZooKeeper, simcloud, the bench client and the
three launchers share them, so latency includes waiting for a core.

What the first runs showed (2026-12-03, a 2-core machine busy with other test runs, so
only the shape counts): launcher CPU per request grew 3.0-3.4x from 0 to 2,000 nodes, CPU per
node filled 2.0-2.4x from the fill to 200 to the fill to 2,000, idle CPU per launcher reached
1.7-2.8% at 2,000 (one cleanup pass a minute), RSS 102-146 MB. py-spy (`--profile`) at 2,000
nodes, steady load: ~60% of launcher CPU in passes that walk every node record
(`PoolQuota._usage` 32%, `handler._claim_ready` 13% even for a label with no READY node,
`DeletedNodeWorker.run_once` 11%, min-ready 4%), ~19% in server-list reads (JSON of every
server of the provider, each poll); while filling, also `PoolWorker._assign` sorting every
open request each pass (18%). Upstream Nodepool 11 the same day (`--upstream`, sizes 0,200
and 200,1000; it could not be run to 2,000 in the time): CPU per node filled 65 ms to 200 and
64 ms to 1,000 (flat; ours 88 and 117), CPU per request 110-133 ms at 0-200 and 159 ms at
1,000 (ours 101-124 and 261), idle 0.7-1.4% per launcher, steady p50 4.3-7.3 s, RSS 160-173 MB.

Upstream Nodepool 11 (`--upstream`): see `UPSTREAM_NOTE` below for how it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import yaml
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]

import launcher_bench as lb  # noqa: E402

from tests.fixtures.zookeeper import ZooKeeperServer  # noqa: E402

UPSTREAM = Path(os.environ.get("NODEPOOL_COMPAT_DIR", "/opt/compat")) / "nodepool11"
UPSTREAM_NOTE = """\
--upstream: the same scenario with upstream Nodepool 11's `nodepool-launcher` (compat venv,
tools/compat/setup-venvs.sh), with these differences, all forced by upstream:
- upstream has no providers-subset option (every launcher process runs every provider of its
  config), so each of the three launchers gets a config of its own with its providers (the
  same split as ours, the same labels and pools). Only the first one's config has the
  min-ready of `fill`: upstream launchers each keep the min-ready of their labels and would
  fill the same gap;
- ZooKeeper over TLS (upstream requires it) and simcloud's `external` address model
  (upstream needs a public address), as tests/compat does;
- cost: about 75-90 ms of launcher CPU per new node and p50 of 4-5 s under the 5/s load
  (1 s pool loops), so filling 2,000 nodes takes it minutes of CPU: start with --sizes 0,200.
"""

LABELS = ("fill", "busy", "job")


# -- processes -------------------------------------------------------------------------------
def start_simcloud(providers: int, boot_delay: float, work: Path,
                   upstream: bool = False) -> tuple[subprocess.Popen, Path]:
    cloud: dict[str, Any] = {"boot_delay": boot_delay,
                             "images": [{"name": "debian", "disk_format": "qcow2"}]}
    if upstream:  # upstream needs a public address: the compat tests' address model
        cloud["address_model"] = "external"
    profile = {"clouds": [{"name": f"cloud{i}", **cloud} for i in range(providers)]}
    profile_path = work / "simcloud.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    clouds_yaml = work / "clouds.yaml"
    log_path = work / "simcloud.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nodepool_ng.cmd.simcloud", "--config", str(profile_path),
             "--clouds-yaml", str(clouds_yaml)],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    deadline = time.monotonic() + 60
    while not (clouds_yaml.exists() and "written" in log_path.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            lb._stop(proc)
            raise RuntimeError("simcloud did not start: " + log_path.read_text()[-3000:])
        time.sleep(0.05)
    return proc, clouds_yaml


def cpu_of(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


class Fleet:
    """The processes, the bench client, and the fleet's in-use and held nodes."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.max_size = max(args.sizes)
        self.zk = ZooKeeperServer(tls=args.upstream)
        self.sim: subprocess.Popen | None = None
        self.procs: list[subprocess.Popen] = []
        self.launchers: list[psutil.Process] = []
        self.logs: list[Any] = []
        self.kz: KazooClient | None = None
        self.held_locks: list[Lock] = []  # in-use nodes: locked for as long as their "job" runs
        self.in_use = 0
        self.held = 0
        self.min_ready = 0
        self.cfg: dict[str, Any] = {}
        self.clouds_yaml: Path | None = None
        self.client = ThreadPoolExecutor(8, thread_name_prefix="zuul")

    # -- set-up ---------------------------------------------------------------------------
    def kazoo(self, chroot: str = "") -> KazooClient:
        if self.args.upstream:
            certs = Path(self.zk.certs_dir)
            kz = KazooClient(hosts=f"127.0.0.1:{self.zk.secure_port}{chroot}", use_ssl=True,
                             certfile=str(certs / "client.crt"),
                             keyfile=str(certs / "client.key"), ca=str(certs / "ca.pem"))
        else:
            kz = KazooClient(hosts=f"127.0.0.1:{self.zk.port}{chroot}")
        kz.start(timeout=15)
        return kz

    def providers_of(self, i: int) -> list[str]:
        return [f"p{j}" for j in range(self.args.providers) if j % self.args.launchers == i]

    def config(self, providers: list[str] | None = None,
               min_ready: bool = True) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "zookeeper-servers": [{"host": "127.0.0.1",
                                   "port": self.zk.secure_port if self.args.upstream
                                   else self.zk.port, "chroot": self.chroot}],
            "labels": [{"name": label,
                        "min-ready": self.min_ready if label == "fill" and min_ready else 0}
                       for label in LABELS],
            "providers": [
                {"name": f"p{j}", "cloud": f"cloud{j}", "rate": 0.001,
                 "cloud-images": [{"name": "debian"}],
                 "pools": [{"name": "main", "max-servers": self.max_size + 100,
                            "host-key-checking": False,
                            "labels": [{"name": label, "cloud-image": "debian",
                                        "flavor-name": "small"} for label in LABELS]}]}
                for j in range(self.args.providers)
                if providers is None or f"p{j}" in providers
            ],
        }
        if self.args.upstream:
            certs = Path(self.zk.certs_dir)
            cfg["zookeeper-tls"] = {"cert": str(certs / "client.crt"),
                                    "key": str(certs / "client.key"),
                                    "ca": str(certs / "ca.pem")}
        return cfg

    def write_configs(self) -> None:
        """One shared config (ours), or one per launcher with its providers (upstream)."""
        for i in range(self.args.launchers):
            path = self.config_path(i)
            # Upstream: each launcher keeps the min-ready of its labels (all three would fill
            # the same gap), so only the first one's config has it.
            text = yaml.safe_dump(self.config(self.providers_of(i), min_ready=i == 0)
                                  if self.args.upstream else self.config())
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)  # atomic: the config watcher never reads half a file
            if not self.args.upstream:
                break

    def config_path(self, i: int) -> Path:
        return self.work / (f"nodepool-{i}.yaml" if self.args.upstream else "nodepool.yaml")

    def start(self) -> None:
        self.zk.start()
        self.chroot = f"/fleet_{int(time.time())}"
        root = self.kazoo()
        root.ensure_path(self.chroot)
        root.stop()
        root.close()
        self.kz = self.kazoo(self.chroot)
        self.kz.ensure_path("/nodepool/requests")
        self.kz.ensure_path("/nodepool/nodes")
        self.sim, self.clouds_yaml = start_simcloud(self.args.providers, self.args.boot_delay,
                                                    self.work, self.args.upstream)
        self.write_configs()
        env = {k: v for k, v in os.environ.items() if k != "STATSD_HOST"}
        for i in range(self.args.launchers):
            log = open(self.work / f"launcher-{i}.log", "wb")  # noqa: SIM115 - closed in stop
            self.logs.append(log)
            if self.args.upstream:
                env["OS_CLIENT_CONFIG_FILE"] = str(self.clouds_yaml)
                command = [str(UPSTREAM / "bin" / "nodepool-launcher"), "-c",
                           str(self.config_path(i)), "-f", "--no-webapp"]
            else:
                command = [sys.executable, "-m", "nodepool_ng.cmd.launcher", "-c",
                           str(self.config_path(i)), "-f", "--no-webapp",
                           "--clouds-yaml", str(self.clouds_yaml)]
                for name in self.providers_of(i):
                    command += ["--provider", name]
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=str(self.work), env=env)
            self.procs.append(proc)
            self.launchers.append(psutil.Process(proc.pid))
        deadline = time.monotonic() + 90
        while not (self.kz.exists("/nodepool/components/pool") and len(
                self.kz.get_children("/nodepool/components/pool")) >= self.args.providers):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    raise RuntimeError(f"launcher {i} exited; see {self.work}/launcher-{i}.log")
            if time.monotonic() > deadline:
                raise RuntimeError("the launchers did not register their pools")
            time.sleep(0.1)

    def stop(self) -> None:
        self.client.shutdown(wait=False, cancel_futures=True)
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()
        if self.kz is not None:
            try:
                self.kz.stop()
                self.kz.close()
            except Exception:
                pass
        if self.sim is not None:
            lb._stop(self.sim)
        self.zk.stop()

    # -- measurements ---------------------------------------------------------------------
    # -- py-spy (--profile) -----------------------------------------------------------------
    def spy_start(self, tag: str) -> list[subprocess.Popen]:
        if not self.args.profile:
            return []
        out = Path(self.args.profile)
        out.mkdir(parents=True, exist_ok=True)
        return [subprocess.Popen(
            [self.args.py_spy, "record", "--pid", str(p.pid), "-f", "raw",
             "-o", str(out / f"{tag}-launcher{i}.txt"),
             # --gil: samples of the thread holding the GIL, i.e. where CPU goes
             "--nonblocking", "--gil", "-r", "100"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, p in enumerate(self.launchers)]

    @staticmethod
    def spy_stop(spies: list[subprocess.Popen]) -> None:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()

    def cpus(self) -> list[float]:
        return [cpu_of(p) for p in self.launchers]

    def packets(self) -> int:
        return lb.zk_packets_received(self.zk)

    def rss_mb(self) -> list[float]:
        return [p.memory_info().rss / 2**20 for p in self.launchers]

    def other_cpu(self) -> dict[str, float]:
        out = {"bench": cpu_of(psutil.Process())}
        if self.sim is not None:
            out["simcloud"] = cpu_of(psutil.Process(self.sim.pid))
        if self.zk.process is not None:
            out["zookeeper"] = cpu_of(psutil.Process(self.zk.process.pid))
        return out

    def census(self) -> Counter[str]:
        """Every node record read (async, in one go): counts by `<label>:<state>`, with READY
        unallocated ones as `<label>:ready` and allocated ones as `<label>:allocated`."""
        assert self.kz is not None
        kz = self.kz
        names = kz.get_children("/nodepool/nodes")
        asyncs = [kz.get_async(f"/nodepool/nodes/{n}") for n in names]
        counts: Counter[str] = Counter()
        for a in asyncs:
            try:
                data = json.loads(a.get(timeout=30)[0] or b"{}")
            except Exception:
                continue
            labels = data.get("type") or ["?"]
            label = labels[0] if isinstance(labels, list) else labels
            state = data.get("state", "?")
            if state == "ready" and data.get("allocated_to"):
                state = "allocated"
            counts[f"{label}:{state}"] += 1
        return counts

    # -- Zuul's side ----------------------------------------------------------------------
    def load(self, label: str, count: int, interval: float,
             on_fulfilled: Callable[[str, dict[str, Any]], Any]) -> dict[str, Any]:
        """`count` one-node requests of `label`, one each `interval` seconds (0: at once),
        each handed to `on_fulfilled` (on the client pool) when fulfilled. Latencies are
        request written -> `fulfilled` (or `failed`, counted)."""
        assert self.kz is not None
        kz = self.kz
        done: queue.Queue[tuple[str, float, dict[str, Any]]] = queue.Queue()
        submitted: dict[str, float] = {}
        finished: set[str] = set()
        lock = threading.Lock()

        def watch(rid: str) -> None:
            def cb(data: bytes | None, stat: Any) -> bool:
                if data is None:
                    return False
                req = json.loads(data)
                if req["state"] in ("fulfilled", "failed"):
                    with lock:
                        if rid in finished:
                            return False
                        finished.add(rid)
                    done.put((rid, time.monotonic(), req))
                    return False
                return True
            kz.DataWatch(f"/nodepool/requests/{rid}", cb)

        def writer() -> None:
            start = time.monotonic()
            for i in range(count):
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                t = time.monotonic()
                path = kz.create("/nodepool/requests/200-", lb.zuul_request([label]),
                                 sequence=True)
                rid = path.rsplit("/", 1)[-1]
                with lock:
                    submitted[rid] = t
                watch(rid)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        latencies: list[float] = []
        failed = 0
        futures: list[Future] = []
        timeout = max(120.0, count * interval + 120.0)
        for _ in range(count):
            rid, t, req = done.get(timeout=timeout)
            with lock:
                latencies.append(t - submitted[rid])
            if req["state"] == "failed":
                failed += 1
                kz.delete(f"/nodepool/requests/{rid}")
            else:
                futures.append(self.client.submit(on_fulfilled, rid, req))
        thread.join()
        for fut in futures:
            fut.result()
        latencies.sort()
        return {"requests": count, "failed": failed,
                "p50": statistics.median(latencies) if latencies else math.nan,
                "p95": latencies[max(0, math.ceil(len(latencies) * 0.95) - 1)]
                if latencies else math.nan}

    def take_busy(self, rid: str, req: dict[str, Any], hold: bool) -> None:
        """Zuul's accept of a fulfilled request whose job keeps its node: lock, delete the
        request, `in-use` (lock kept), or `hold` and unlocked (an autohold)."""
        assert self.kz is not None
        kz = self.kz
        locks = []
        for nid in req["nodes"]:
            lk = Lock(kz, f"/nodepool/nodes/{nid}/lock")
            if not lk.acquire(timeout=30):
                raise RuntimeError(f"node {nid}: lock not acquired")
            locks.append((nid, lk))
        kz.delete(f"/nodepool/requests/{rid}")
        for nid, lk in locks:
            path = f"/nodepool/nodes/{nid}"
            data = json.loads(kz.get(path)[0])
            data["state"] = "in-use"
            kz.set(path, json.dumps(data).encode())
            if hold:
                data.update(state="hold", hold_job="fleet-bench", comment="fleet bench",
                            hold_expiration=None)
                kz.set(path, json.dumps(data).encode())
                lk.release()
            else:
                self.held_locks.append(lk)

    def return_job(self, rid: str, req: dict[str, Any]) -> None:
        lb.accept(self.kz, rid, req, time.time())

    def wait_records(self, total: int, timeout: float) -> None:
        """Until /nodepool/nodes has `total` records (the used nodes deleted)."""
        assert self.kz is not None
        deadline = time.monotonic() + timeout
        while len(self.kz.get_children("/nodepool/nodes")) > total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes not back to {total} in {timeout:.0f} s")
            time.sleep(0.1)

    # -- one fleet size -------------------------------------------------------------------
    def grow(self, size: int) -> dict[str, Any]:
        """Fill to `size` live nodes: min-ready for the READY part, busy requests for the new
        in-use and held ones. Returns the launchers' CPU per new node."""
        assert self.kz is not None
        kz = self.kz
        in_use = round(size * self.args.in_use)
        held = round(size * self.args.held)
        ready = size - in_use - held
        new_busy = [False] * (in_use - self.in_use) + [True] * (held - self.held)
        live_before = self.in_use + self.held + self.min_ready
        new_nodes = size - live_before
        if new_nodes <= 0:
            return {"new_nodes": 0}
        cpu0, pk0, t0 = sum(self.cpus()), self.packets(), time.monotonic()
        self.min_ready = ready
        self.write_configs()
        holds = iter(new_busy)
        busy = self.load("busy", len(new_busy), 0.0,
                         lambda rid, req: self.take_busy(rid, req, next(holds)))
        self.in_use, self.held = in_use, held
        # min-ready: the launcher sees the new config within 5 s; its requests are 900-*.
        # The full census (every record read) only once the record count says it may be done.
        deadline = time.monotonic() + 300 + new_nodes * 0.5
        while True:
            open_min_ready = [r for r in kz.get_children("/nodepool/requests")
                              if r.startswith("900-")]
            if not open_min_ready and len(kz.get_children("/nodepool/nodes")) >= size:
                counts = self.census()
                if counts["fill:ready"] >= ready and not any(
                        k.endswith((":building", ":init")) for k in counts):
                    break
                time.sleep(1.5)
            if time.monotonic() > deadline:
                raise RuntimeError(f"fill to {size} not done: {dict(self.census())}")
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        cpu = sum(self.cpus()) - cpu0
        return {"new_nodes": new_nodes, "fill_s": elapsed,
                "fill_cpu_ms_per_node": 1000 * cpu / new_nodes,
                "fill_zk_per_node": (self.packets() - pk0) / new_nodes,
                "busy_failed": busy["failed"]}

    def idle(self, window: float) -> dict[str, Any]:
        time.sleep(3.0)
        cpu0, pk0 = self.cpus(), self.packets()
        time.sleep(window)
        cpu1, pk1 = self.cpus(), self.packets()
        pct = [100.0 * (b - a) / window for a, b in zip(cpu0, cpu1, strict=True)]
        return {"idle_pct": pct, "idle_pct_max": max(pct), "idle_zk_per_s": (pk1 - pk0) / window}

    def jobs(self, kind: str, count: int, interval: float, total: int) -> dict[str, Any]:
        cpu0, pk0, other0 = sum(self.cpus()), self.packets(), self.other_cpu()
        t0 = time.monotonic()
        res = self.load("job", count, interval, self.return_job)
        self.wait_records(total, 120.0)
        elapsed = time.monotonic() - t0
        cpu, pk, other = sum(self.cpus()) - cpu0, self.packets() - pk0, self.other_cpu()
        out = {f"{kind}_{k}": v for k, v in res.items()}
        out.update({
            f"{kind}_cpu_ms_per_req": 1000 * cpu / count,
            f"{kind}_zk_per_req": pk / count,
            f"{kind}_s": elapsed,
            **{f"{kind}_{k}_cpu_ms_per_req": 1000 * (other[k] - other0[k]) / count
               for k in other},
        })
        return out

    def measure(self, size: int) -> dict[str, Any]:
        row: dict[str, Any] = {"size": size}
        spies = self.spy_start(f"{size}-fill")
        try:
            row.update(self.grow(size))
        finally:
            self.spy_stop(spies)
        counts = self.census()
        row["census"] = dict(sorted(counts.items()))
        total = sum(counts.values())
        row["live"] = total
        print(f"  [{size}] fleet: {total} records "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + (f"; fill {row['new_nodes']} nodes in {row['fill_s']:.1f} s, "
                 f"{row['fill_cpu_ms_per_node']:.1f} ms launcher CPU/node"
                 if row.get("new_nodes") else ""), flush=True)
        spies = self.spy_start(f"{size}-idle")
        try:
            row.update(self.idle(self.args.idle))
        finally:
            self.spy_stop(spies)
        print(f"  [{size}] idle: launcher CPU "
              + " / ".join(f"{p:.2f}%" for p in row["idle_pct"])
              + f" of a core, ZooKeeper {row['idle_zk_per_s']:.1f} req/s", flush=True)
        steady_n = round(self.args.rate * self.args.steady)
        spies = self.spy_start(f"{size}-steady")
        try:
            row.update(self.jobs("steady", steady_n, 1.0 / self.args.rate, total))
        finally:
            self.spy_stop(spies)
        print(f"  [{size}] steady {steady_n} at {self.args.rate}/s: p50 "
              f"{row['steady_p50']:.3f} s p95 {row['steady_p95']:.3f} s, launcher CPU "
              f"{row['steady_cpu_ms_per_req']:.1f} ms/req, ZooKeeper "
              f"{row['steady_zk_per_req']:.0f}/req, failed {row['steady_failed']}", flush=True)
        if self.args.burst:
            row.update(self.jobs("burst", self.args.burst, 0.0, total))
            print(f"  [{size}] burst {self.args.burst}: p50 {row['burst_p50']:.3f} s p95 "
                  f"{row['burst_p95']:.3f} s, launcher CPU "
                  f"{row['burst_cpu_ms_per_req']:.1f} ms/req, ZooKeeper "
                  f"{row['burst_zk_per_req']:.0f}/req, failed {row['burst_failed']}",
                  flush=True)
        row["rss_mb"] = self.rss_mb()
        row["rss_mb_max"] = max(row["rss_mb"])
        return row


# -- report ----------------------------------------------------------------------------------
def fmt(v: Any, spec: str = ".1f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def ratio(a: Any, b: Any) -> float | None:
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return float(a) / float(b)


COLUMNS = [  # key, header, format
    ("live", "live nodes", "d"),
    ("fill_cpu_ms_per_node", "fill CPU ms/node", ".1f"),
    ("idle_pct_max", "idle CPU %/launcher (max)", ".2f"),
    ("steady_cpu_ms_per_req", "CPU ms/req", ".1f"),
    ("steady_zk_per_req", "ZK req/req", ".0f"),
    ("steady_p50", "p50 s", ".3f"),
    ("steady_p95", "p95 s", ".3f"),
    ("burst_cpu_ms_per_req", "burst CPU ms/req", ".1f"),
    ("burst_p50", "burst p50 s", ".3f"),
    ("burst_p95", "burst p95 s", ".3f"),
    ("rss_mb_max", "RSS MB (max)", ".0f"),
]


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
              for r in rows]
    return "\n".join(lines)


def report(args: argparse.Namespace, rows: list[dict[str, Any]], elapsed: float) -> dict:
    print()
    print(f"Parameters: sizes {','.join(map(str, args.sizes))}; {args.launchers} launcher "
          f"processes ({'upstream Nodepool 11' if args.upstream else 'nodepool_ng'}) x "
          f"{args.providers} providers; fleet {args.in_use:.0%} in-use, {args.held:.0%} held, "
          f"rest ready; idle window {args.idle:.0f} s; steady {args.rate}/s for "
          f"{args.steady:.0f} s; burst {args.burst}; simcloud boot delay {args.boot_delay} s; "
          f"run time {elapsed / 60:.1f} min")
    print("Every steady/burst request is served by a launch (label `job`, no ready node); "
          "CPU = the launchers together; ZK = ZooKeeper requests, all clients.")
    print()
    print(table(["size"] + [c[1] for c in COLUMNS],
                [[str(r["size"])] + [fmt(r.get(k), f) for k, _, f in COLUMNS] for r in rows]))
    base = rows[0]
    fill_base = next((r for r in rows if r.get("fill_cpu_ms_per_node")), None)
    print()
    fill_size = fill_base["size"] if fill_base else "-"
    print(f"Ratios to size {base['size']} (fill CPU: to the fill to size {fill_size}):")
    ratio_rows = []
    for row in rows[1:]:
        cells = [str(row["size"])]
        for k, _, _ in COLUMNS[1:]:
            if k.startswith("idle"):  # an absolute goal; near-zero bases make ratios noise
                cells.append("-")
                continue
            b = fill_base if k.startswith("fill") else base
            x = ratio(row.get(k), b.get(k) if b else None)
            cells.append("-" if x is None else f"{x:.2f}x")
        ratio_rows.append(cells)
    if ratio_rows:
        print(table(["size"] + [c[1] for c in COLUMNS[1:]], ratio_rows))
    top = rows[-1]
    print()
    print("Acceptance figures (issue 13):")
    acc: dict[str, Any] = {}

    def line(name: str, value: float | None, goal: str, ok: bool | None, text: str) -> None:
        acc[name] = {"value": value, "goal": goal, "met": ok}
        verdict = "-" if ok is None else ("PASS" if ok else "FAIL")
        print(f"  {verdict:4}  {text} (goal {goal})")

    r = ratio(top.get("steady_cpu_ms_per_req"), base.get("steady_cpu_ms_per_req"))
    line("cpu_per_request_ratio", r, "<= 1.2x", None if r is None else r <= 1.2,
         f"launcher CPU per request at {top['size']} nodes vs {base['size']}: "
         f"{fmt(top.get('steady_cpu_ms_per_req'))} / {fmt(base.get('steady_cpu_ms_per_req'))} "
         f"ms = {fmt(r, '.2f')}x")
    idle = top.get("idle_pct_max")
    line("idle_cpu_pct", idle, "< 2% of a core", None if idle is None else idle < 2.0,
         f"idle CPU per launcher at {top['size']} nodes: "
         + " / ".join(f"{p:.2f}%" for p in top.get("idle_pct", [])) + " of a core")
    r = ratio(top.get("fill_cpu_ms_per_node"), fill_base.get("fill_cpu_ms_per_node")
              if fill_base else None)
    line("fill_cpu_per_node_ratio", r, "<= 1.2x", None if r is None else r <= 1.2,
         f"launcher CPU per node filling to {top['size']} vs to "
         f"{fill_base['size'] if fill_base else '-'}: "
         f"{fmt(top.get('fill_cpu_ms_per_node'))} / "
         f"{fmt(fill_base.get('fill_cpu_ms_per_node') if fill_base else None)} ms = "
         f"{fmt(r, '.2f')}x")
    acc["rss_mb"] = top.get("rss_mb")
    print(f"  info  RSS per launcher at {top['size']} nodes: "
          + " / ".join(f"{m:.0f}" for m in top.get("rss_mb", [])) + " MB")
    print("  info  ZooKeeper requests per node request: " + ", ".join(
        f"{r['size']}: {fmt(r.get('steady_zk_per_req'), '.0f')}" for r in rows))
    print("  info  p50/p95 (steady): " + ", ".join(
        f"{r['size']}: {fmt(r.get('steady_p50'), '.2f')}/{fmt(r.get('steady_p95'), '.2f')} s"
        for r in rows))
    return acc


def profile_summary(directory: Path, sizes: list[int], top: int = 8) -> None:
    """Per size and phase, the share of GIL-holding samples (all launchers) by the
    innermost nodepool_ng function on the stack, and by the library of the leaf frame."""
    for phase in ("fill", "idle", "steady"):
        for size in sizes:
            ours: Counter[str] = Counter()
            libs: Counter[str] = Counter()
            for path in sorted(directory.glob(f"{size}-{phase}-launcher*.txt")):
                for line in path.read_text().splitlines():
                    stack, _, count = line.rpartition(" ")
                    if not count.isdigit():
                        continue
                    frames = stack.split(";")
                    mine = [f for f in frames if "nodepool_ng/" in f]
                    ours[(mine[-1].split(" (")[0] + " (" + mine[-1].split("nodepool_ng/")[1])
                         if mine else "(no nodepool_ng frame)"] += int(count)
                    leaf = frames[-1]
                    where = leaf.partition("(")[2].rstrip(")")
                    lib = where.split("site-packages/")[-1].split("/")[0] if \
                        "site-packages/" in where else where.split(":")[0].split("/")[-1]
                    libs[lib] += int(count)
            total = sum(ours.values())
            if not total:
                continue
            print(f"\nprofile {phase} @ {size}: {total} samples (py-spy --gil, 100/s, "
                  f"launchers together)")
            for name, n in ours.most_common(top):
                print(f"  {100 * n / total:5.1f}%  {name}")
            print("  leaf frames by library: " + ", ".join(
                f"{lib} {100 * n / total:.0f}%" for lib, n in libs.most_common(top)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=None, help="fleet sizes, ascending (default "
                        "0,200,1000,2000; --quick 0,200)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: sizes 0,200, idle 8 s, steady 10 s, burst 20")
    parser.add_argument("--launchers", type=int, default=3)
    parser.add_argument("--providers", type=int, default=10)
    parser.add_argument("--in-use", type=float, default=0.5, help="fraction of each size")
    parser.add_argument("--held", type=float, default=0.1, help="fraction of each size")
    parser.add_argument("--idle", type=float, default=None,
                        help="idle window, s (60: one cleanup interval)")
    parser.add_argument("--rate", type=float, default=5.0, help="steady requests per second")
    parser.add_argument("--steady", type=float, default=None, help="steady load, s (20)")
    parser.add_argument("--burst", type=int, default=None, help="burst size (50; 0: none)")
    parser.add_argument("--boot-delay", type=float, default=0.1, help="simcloud boot delay, s")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--workdir", metavar="DIR", help="keep configs and logs in DIR")
    parser.add_argument("--profile", metavar="DIR",
                        help="record the launchers with py-spy (raw) during each fill, idle "
                        "and steady phase into DIR, and print where their CPU goes (py-spy's "
                        "sampling costs CPU: figures of such a run are not comparable)")
    parser.add_argument("--py-spy", default=None, help="py-spy binary (default: PATH, "
                        "then .venv/bin/py-spy)")
    parser.add_argument("--upstream", action="store_true",
                        help="upstream Nodepool 11's launcher from the compat venv "
                        "(see the module docstring)")
    args = parser.parse_args()
    args.sizes = sorted({int(s) for s in (args.sizes or ("0,200" if args.quick
                                                         else "0,200,1000,2000")).split(",")})
    args.idle = args.idle if args.idle is not None else (8.0 if args.quick else 60.0)
    args.steady = args.steady if args.steady is not None else (10.0 if args.quick else 20.0)
    args.burst = args.burst if args.burst is not None else (20 if args.quick else 50)
    if args.profile:
        args.py_spy = args.py_spy or shutil.which("py-spy") or str(
            Path(sys.executable).parent / "py-spy")
        if not Path(args.py_spy).exists():
            print(f"py-spy not found ({args.py_spy}): pip install py-spy, or --py-spy PATH")
            return 1
    if args.upstream:
        print(UPSTREAM_NOTE)
        if not (UPSTREAM / "bin" / "nodepool-launcher").exists():
            print(f"upstream venv missing at {UPSTREAM}: run tools/compat/setup-venvs.sh")
            return 1

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    start = time.monotonic()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="np-fleet-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        fleet = Fleet(args, work)
        try:
            fleet.start()
            print(f"{args.launchers} launchers up ({time.monotonic() - start:.1f} s); "
                  f"sizes {args.sizes}", flush=True)
            for size in args.sizes:
                rows.append(fleet.measure(size))
        except KeyboardInterrupt:
            print("interrupted; stopping the processes", file=sys.stderr)
            return 130
        except Exception:
            traceback.print_exc()
            print(f"failed; logs in {work}" + ("" if args.workdir else " (removed: use "
                                                "--workdir to keep them)"), file=sys.stderr)
            if rows:
                report(args, rows, time.monotonic() - start)
            return 1
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            fleet.stop()
    elapsed = time.monotonic() - start
    acceptance = report(args, rows, elapsed)
    if args.profile:
        profile_summary(Path(args.profile), args.sizes)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"parameters": {k: v for k, v in vars(args).items() if k != "json"},
             "rows": rows, "acceptance": acceptance, "run_s": elapsed}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

#!/usr/bin/env python3
"""Launcher benchmark: requests written the way Zuul writes them, against simcloud.

Starts a ZooKeeper (Debian package, loopback), `nodepool-simcloud` (clouds with a 0.1 s boot
delay) and `nodepool-launcher`, each in its own process, then per scenario submits a burst
of requests with plain kazoo. Each fulfilled request is accepted at once, as Zuul does (lock
the nodes, delete the request, in-use, used, unlock), by a small thread pool so the bench
client is not the bottleneck. Prints p50/p95/max request->fulfilled latency, the p50 of
requests served by a node that was already READY when the request was written ("ready p50",
scenario b's goal), the p50 of request->`pending` ("accepted"), requests/s, CPU seconds of
the launcher, simcloud and the bench client, and the launcher's RSS.

    .venv/bin/python tools/bench/launcher_bench.py [--scenarios a,b,c,d,r,s,sr,w] [--cloud aws]

`--cloud aws` runs a cloud scenario (any but s and sr; measured for a) against a real
`moto_server` (tests/fixtures/moto.py) instead of simcloud: the same number of providers and
max-servers, as `driver: aws` providers booting one of moto's stock AMIs (by image-id) as
t3.small; the "simcloud" CPU figure is then moto_server's.

Scenario w is different: pools full, requests waiting; it prints the launcher's CPU while
nothing changes (it should sleep).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import yaml
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.fixtures.moto import REGION, MotoServer  # noqa: E402
from tests.fixtures.sshd import SshdServer  # noqa: E402
from tests.fixtures.zookeeper import ZooKeeperServer  # noqa: E402

SCENARIOS: dict[str, dict[str, Any]] = {
    "a": {"desc": "100 one-node requests, 2 providers x max-servers 50", "providers": 2,
          "max_servers": 50, "count": 100, "labels": ["a"], "min_ready": 0},
    "b": {"desc": "same with min-ready 10", "providers": 2, "max_servers": 50, "count": 100,
          "labels": ["a"], "min_ready": 10},
    "c": {"desc": "50 three-node requests [a, b, a]", "providers": 2, "max_servers": 50,
          "count": 50, "labels": ["a", "b", "a"], "min_ready": 0},
    "d": {"desc": "burst of 300 one-node requests, 1 provider x max-servers 50",
          "providers": 1, "max_servers": 50, "count": 300, "labels": ["a"], "min_ready": 0},
    # Not a burst: one request at a time, each written once a ready node waits (goal (b)).
    "r": {"desc": "30 one-node requests one at a time, min-ready 2", "providers": 1,
          "max_servers": 50, "count": 30, "labels": ["a"], "min_ready": 2, "serial": True},
    # The static driver: one real sshd host with 10 slots (host-key checking on: a TCP check
    # before each hand-out, a key scan at each re-registration after a job).
    "s": {"desc": "burst of 100 one-node requests, static host x 10 slots", "providers": 1,
          "max_servers": 0, "count": 100, "labels": ["a"], "min_ready": 0, "static_slots": 10},
    "sr": {"desc": "30 one-node requests one at a time, static host x 2 slots", "providers": 1,
           "max_servers": 0, "count": 30, "labels": ["a"], "min_ready": 0, "static_slots": 2,
           "serial": True},
    # Full pools: `count` nodes held in use, then `waiting` requests that cannot be served.
    # Nothing changes, so the launcher should sleep: its CPU over `window` seconds.
    "w": {"desc": "pools full (2 providers x max-servers 5 in use), 50 requests waiting",
          "providers": 2, "max_servers": 5, "count": 10, "labels": ["a"], "min_ready": 0,
          "waiting": 50, "window": 10.0},
}


def zk_packets_received(zk: ZooKeeperServer) -> int:
    """The server's count of requests received (4lw `mntr`), all clients together."""
    with socket.create_connection(("127.0.0.1", zk.port), timeout=5) as sock:
        sock.sendall(b"mntr")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    for line in data.decode().splitlines():
        key, _, value = line.partition("\t")
        if key == "zk_packets_received":
            return int(value)
    raise RuntimeError("mntr has no zk_packets_received")


def wait_ready_node(kz: KazooClient, deadline: float) -> None:
    while time.monotonic() < deadline:
        for nid in kz.get_children("/nodepool/nodes"):
            try:
                d = json.loads(kz.get(f"/nodepool/nodes/{nid}")[0])
            except Exception:
                continue
            if d.get("state") == "ready" and not d.get("allocated_to"):
                return
        time.sleep(0.05)
    raise RuntimeError("no ready node")


def zuul_request(labels: list[str]) -> bytes:
    now = time.time()
    return json.dumps({
        "requestor_data": {"build_set_uuid": "b", "tenant_name": "t", "pipeline_name": "check",
                           "job_uuid": "j", "job_name": "bench", "span_info": None},
        "node_types": labels, "requestor": "zuul-bench", "created_time": now,
        "provider": None, "state": "requested", "state_time": now, "relative_priority": 0,
        "event_id": None, "tenant_name": "t",
    }).encode()


def accept(kz: KazooClient, rid: str, req: dict[str, Any], written: float) -> bool:
    """Zuul's accept; True when every node was READY before the request was written."""
    locks = []
    for nid in req["nodes"]:
        lock = Lock(kz, f"/nodepool/nodes/{nid}/lock")
        lock.acquire(timeout=30)
        locks.append((nid, lock))
    kz.delete(f"/nodepool/requests/{rid}")
    from_ready = True
    for state in ("in-use", "used"):
        for nid, _ in locks:
            data = json.loads(kz.get(f"/nodepool/nodes/{nid}")[0])
            if state == "in-use":
                # A reused node keeps its READY state_time; a new one became READY later.
                from_ready = from_ready and (data.get("state_time") or written) < written
            data["state"] = state
            kz.set(f"/nodepool/nodes/{nid}", json.dumps(data).encode())
    for _, lock in locks:
        lock.release()
    return from_ready


def start_simcloud(sc: dict[str, Any], work: Path, name: str,
                   debug: bool = False) -> tuple[subprocess.Popen, Path]:
    profile = {"clouds": [
        {"name": f"cloud{i}", "boot_delay": 0.1,
         "images": [{"name": "debian", "disk_format": "qcow2"}]}
        for i in range(sc["providers"])]}
    profile_path = work / f"simcloud-{name}.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    clouds_yaml = work / f"clouds-{name}.yaml"
    log = open(work / f"simcloud-{name}.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodepool_ng.cmd.simcloud", "--config", str(profile_path),
         "--clouds-yaml", str(clouds_yaml)] + (["--debug"] if debug else []),
        stdout=log, stderr=subprocess.STDOUT,
        cwd=str(ROOT))
    log.close()
    deadline = time.monotonic() + 30
    while not (clouds_yaml.exists() and "written" in (work / f"simcloud-{name}.log").read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("simcloud did not start: "
                               + (work / f"simcloud-{name}.log").read_text())
        time.sleep(0.05)
    return proc, clouds_yaml


MOTO_AMI = "ami-785db401"  # one of moto's stock AMIs (Ubuntu xenial)


def start_moto() -> tuple[MotoServer, dict[str, str]]:
    """A moto_server process, a key pair in it, and the environment pointing AWS at it."""
    moto = MotoServer().start()
    env = {
        "AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    import boto3

    ec2 = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                region_name=REGION).client("ec2", endpoint_url=moto.url)
    ec2.create_key_pair(KeyName="bench")
    return moto, env


def aws_providers(sc: dict[str, Any], labels: list[str]) -> list[dict[str, Any]]:
    """Scenario `sc`'s providers as `driver: aws` ones (same count and max-servers)."""
    return [
        {"name": f"p{i}", "driver": "aws", "region-name": REGION,
         "rate": 1000,  # calls per second (AWS meaning): as little limiting as simcloud's
         "cloud-images": [{"name": "debian", "image-id": MOTO_AMI, "username": "ubuntu"}],
         "pools": [{"name": "main", "max-servers": sc["max_servers"],
                    "host-key-checking": False,
                    "labels": [{"name": label, "cloud-image": "debian",
                                "instance-type": "t3.small", "key-name": "bench"}
                               for label in labels]}]}
        for i in range(sc["providers"])
    ]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)


def measure_waiting(name: str, sc: dict[str, Any], kz: KazooClient, zk: ZooKeeperServer,
                    samplers: list[Sampler]) -> dict:
    """Fill the pools with nodes held in use, write requests that must wait, let the
    launcher settle, then measure its CPU and ZooKeeper traffic while nothing changes."""
    held: list[Lock] = []
    rids = [kz.create("/nodepool/requests/200-", zuul_request(sc["labels"]),
                      sequence=True).rsplit("/", 1)[-1] for _ in range(sc["count"])]
    deadline = time.monotonic() + 120
    for rid in rids:
        while (req := json.loads(kz.get(f"/nodepool/requests/{rid}")[0]))["state"] not in (
                "fulfilled", "failed"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"request {rid} not served")
            time.sleep(0.05)
        for nid in req["nodes"]:  # held in use, as by a long job
            lock = Lock(kz, f"/nodepool/nodes/{nid}/lock")
            lock.acquire(timeout=10)
            held.append(lock)
            data = json.loads(kz.get(f"/nodepool/nodes/{nid}")[0])
            data["state"] = "in-use"
            kz.set(f"/nodepool/nodes/{nid}", json.dumps(data).encode())
        kz.delete(f"/nodepool/requests/{rid}")
    for _ in range(sc["waiting"]):
        kz.create("/nodepool/requests/200-", zuul_request(sc["labels"]), sequence=True)
    time.sleep(3.0)  # accepts, pauses, yields settle
    cpu0, packets0 = sum(sm.cpu() for sm in samplers), zk_packets_received(zk)
    time.sleep(sc["window"])
    cpu = sum(sm.cpu() for sm in samplers) - cpu0
    packets = zk_packets_received(zk) - packets0
    for lock in held:
        lock.release()
    return {"scenario": name, "desc": sc["desc"], "waiting": sc["waiting"],
            "cpu_pct": 100.0 * cpu / sc["window"], "zk_per_s": packets / sc["window"],
            "rss_mb": max(sm.proc.memory_info().rss for sm in samplers) / 2**20}


def run_scenario(
    name: str, sc: dict[str, Any], zk: ZooKeeperServer, work: Path, profile_dir: str | None,
    debug: bool = False, split: bool = False, cloud: str = "simcloud",
) -> dict:
    chroot = f"/bench_{name}_{int(time.time())}"
    sim: subprocess.Popen | None = None
    clouds_yaml: Path | None
    moto: MotoServer | None = None
    launcher_env = dict(os.environ)
    if cloud == "aws":
        if sc.get("static_slots"):
            raise SystemExit(f"scenario {name} uses the static driver, not a cloud")
        moto, aws_env = start_moto()
        launcher_env.update(aws_env)
        assert moto.proc is not None
        sim_ps = psutil.Process(moto.proc.pid)
        clouds_yaml = None  # no OpenStack provider
    else:
        sim, clouds_yaml = start_simcloud(sc, work, name, debug)
        sim_ps = psutil.Process(sim.pid)
    assert zk.process is not None
    zk_ps = psutil.Process(zk.process.pid)
    me = psutil.Process()
    labels = sorted(set(sc["labels"]))
    cfg = {
        "zookeeper-servers": [{"host": "127.0.0.1", "port": zk.port, "chroot": chroot}],
        "labels": [{"name": label, "min-ready": sc["min_ready"] if label == "a" else 0}
                   for label in labels],
        "providers": [
            {"name": f"p{i}", "cloud": f"cloud{i}", "rate": 0.001,
             "cloud-images": [{"name": "debian"}],
             "pools": [{"name": "main", "max-servers": sc["max_servers"],
                        "host-key-checking": False,
                        "labels": [{"name": label, "cloud-image": "debian",
                                    "flavor-name": "small"} for label in labels]}]}
            for i in range(sc["providers"])
        ],
    }
    if moto is not None:
        cfg["providers"] = aws_providers(sc, labels)
    sshd = None
    if sc.get("static_slots"):
        sshd = SshdServer(work / f"sshd-{name}")
        sshd.start()
        cfg["providers"] = [{"name": "static", "driver": "static", "pools": [{
            "name": "main", "nodes": [{"name": sshd.host, "connection-port": sshd.port,
                                       "labels": labels,
                                       "max-parallel-jobs": sc["static_slots"]}]}]}]
    cfg_path = work / f"nodepool-{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    kz = KazooClient(hosts=f"127.0.0.1:{zk.port}")
    kz.start()
    kz.ensure_path(chroot)
    kz.stop()
    kz = KazooClient(hosts=f"127.0.0.1:{zk.port}{chroot}")
    kz.start()
    kz.ensure_path("/nodepool/requests")
    # One launcher process, or with `split` one per provider (`--provider`), on one config.
    selections = ([["--provider", p["name"]] for p in cfg["providers"]]
                  if split else [[]])
    procs: list[subprocess.Popen] = []
    samplers: list[Sampler] = []
    logs = []
    for i, selection in enumerate(selections):
        suffix = f"-{i}" if split else ""
        log = open(work / f"launcher-{name}{suffix}.log", "wb")  # noqa: SIM115 - closed below
        logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "nodepool_ng.cmd.launcher", "-c", str(cfg_path), "-f",
             "--no-webapp", *(["--clouds-yaml", str(clouds_yaml)] if clouds_yaml else []),
             *selection]
            + (["-d"] if debug else []),
            stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=launcher_env)
        procs.append(proc)
        samplers.append(Sampler(proc.pid))
        samplers[-1].start()
    spy = None
    try:
        deadline = time.monotonic() + 60
        while not (kz.exists("/nodepool/components/pool")
                   and len(kz.get_children("/nodepool/components/pool")) == sc["providers"]):
            if time.monotonic() > deadline:
                raise RuntimeError("launcher did not register")
            time.sleep(0.05)
        if sc["min_ready"] or sc.get("static_slots"):
            deadline = time.monotonic() + 60
            while True:
                ready = 0
                for nid in kz.get_children("/nodepool/nodes") if kz.exists(
                        "/nodepool/nodes") else []:
                    try:
                        d = json.loads(kz.get(f"/nodepool/nodes/{nid}")[0])
                    except Exception:
                        continue
                    ready += d.get("state") == "ready" and not d.get("allocated_to")
                if ready >= (sc["min_ready"] or sc.get("static_slots", 0)):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("min-ready not reached")
                time.sleep(0.1)
        time.sleep(0.5)
        idle_rss = max(sm.proc.memory_info().rss for sm in samplers)  # per process
        if profile_dir:
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(procs[0].pid),
                 "-f", "raw", "-o", str(Path(profile_dir) / f"launcher-{name}.txt"),
                 # --gil: samples of the thread holding the GIL, i.e. where CPU goes
                 "--nonblocking", "--gil", "-r", "200"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if sc.get("waiting"):
            return measure_waiting(name, sc, kz, zk, samplers)
        cpu0 = sum(sm.cpu() for sm in samplers)
        sim_cpu0 = sum(sim_ps.cpu_times()[:2])
        me_cpu0 = sum(me.cpu_times()[:2])
        zk_cpu0 = sum(zk_ps.cpu_times()[:2])
        zk_packets0 = zk_packets_received(zk)
        done: queue.Queue[tuple[str, float, dict[str, Any]]] = queue.Queue()
        submitted: dict[str, float] = {}
        written: dict[str, float] = {}  # wall clock, compared with nodes' state_time
        finished: set[str] = set()
        pending: dict[str, float] = {}  # first seen no longer `requested` (accepted)
        lock = threading.Lock()

        def watch(rid: str) -> None:
            def cb(data: bytes | None, stat: Any) -> bool:
                if data is None:
                    return False
                req = json.loads(data)
                if req["state"] != "requested":
                    pending.setdefault(rid, time.monotonic())
                if req["state"] in ("fulfilled", "failed"):
                    with lock:
                        if rid in finished:
                            return False
                        finished.add(rid)
                    done.put((rid, time.monotonic(), req))
                    return False
                return True
            kz.DataWatch(f"/nodepool/requests/{rid}", cb)

        start = time.monotonic()
        for _ in range(0 if sc.get("serial") else sc["count"]):
            t = time.monotonic()
            written_at = time.time()
            path = kz.create("/nodepool/requests/200-", zuul_request(sc["labels"]),
                             sequence=True)
            rid = path.rsplit("/", 1)[-1]
            submitted[rid] = t
            written[rid] = written_at
            watch(rid)
        latencies = []
        ready_latencies = []
        failed = 0
        with ThreadPoolExecutor(8) as acceptors:
            accepts = []
            for _ in range(sc["count"]):
                if sc.get("serial"):
                    wait_ready_node(kz, time.monotonic() + 60)
                    time.sleep(0.2)  # let the launcher settle: measure an idle launcher
                    submitted_at, written_at = time.monotonic(), time.time()
                    path = kz.create("/nodepool/requests/200-", zuul_request(sc["labels"]),
                                     sequence=True)
                    rid = path.rsplit("/", 1)[-1]
                    submitted[rid], written[rid] = submitted_at, written_at
                    watch(rid)
                rid, t, req = done.get(timeout=600)
                latencies.append(t - submitted[rid])
                if req["state"] == "failed":
                    failed += 1
                    kz.delete(f"/nodepool/requests/{rid}")
                else:
                    accepts.append((t - submitted[rid], acceptors.submit(
                        accept, kz, rid, req, written[rid])))
            for latency, fut in accepts:
                if fut.result():
                    ready_latencies.append(latency)
        elapsed = time.monotonic() - start
        cpu = sum(sm.cpu() for sm in samplers) - cpu0
        sim_cpu = sum(sim_ps.cpu_times()[:2]) - sim_cpu0
        me_cpu = sum(me.cpu_times()[:2]) - me_cpu0
        zk_cpu = sum(zk_ps.cpu_times()[:2]) - zk_cpu0
        zk_packets = zk_packets_received(zk) - zk_packets0
        latencies.sort()
        accepted = sorted(pending[r] - submitted[r] for r in pending)
        return {
            "scenario": name, "desc": sc["desc"], "requests": sc["count"], "failed": failed,
            "p50": statistics.median(latencies),
            "p95": latencies[max(0, int(len(latencies) * 0.95) - 1)],
            "max": latencies[-1],
            "accept_p50": statistics.median(accepted) if accepted else float("nan"),
            "ready_p50": statistics.median(ready_latencies) if ready_latencies else None,
            "from_ready": len(ready_latencies),
            "req_per_s": sc["count"] / elapsed, "cpu_s": cpu, "sim_cpu_s": sim_cpu,
            "bench_cpu_s": me_cpu, "zk_cpu_s": zk_cpu,
            "zk_per_request": zk_packets / sc["count"],
            "idle_rss_mb": idle_rss / 2**20,
            "peak_rss_mb": max(sm.peak for sm in samplers) / 2**20,
            "launchers": len(procs),
        }
    finally:
        for sm in samplers:
            sm.stop_event.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        for proc in procs:
            _stop(proc)
        for log in logs:
            log.close()
        kz.stop()
        kz.close()
        if sim is not None:
            _stop(sim)
        if moto is not None:
            moto.stop()
        if sshd is not None:
            sshd.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="a,b,c,d")
    parser.add_argument("--profile", metavar="DIR",
                        help="record the launcher with py-spy (raw format) into DIR")
    parser.add_argument("--debug", action="store_true",
                        help="launcher debug log (a timeline; costs launcher CPU)")
    parser.add_argument("--split", action="store_true",
                        help="one launcher process per provider (--provider), not one in all")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep configs and logs (launcher-<scenario>.log) in DIR")
    parser.add_argument("--cloud", choices=("simcloud", "aws"), default="simcloud",
                        help="aws: moto_server and `driver: aws` providers instead of simcloud")
    args = parser.parse_args()
    cloud_name = "moto_server" if args.cloud == "aws" else "simcloud"
    zk = ZooKeeperServer()
    zk.start()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="np-bench-") as tmp:
            work = Path(args.workdir or tmp)
            work.mkdir(parents=True, exist_ok=True)
            for name in args.scenarios.split(","):
                res = run_scenario(name, SCENARIOS[name], zk, work, args.profile, args.debug,
                                   args.split, args.cloud)
                results.append(res)
                if "waiting" in res:
                    print(f"({res['scenario']}) {res['desc']}: launcher CPU "
                          f"{res['cpu_pct']:.2f}% of a core, ZooKeeper requests "
                          f"{res['zk_per_s']:.1f}/s (all clients), RSS {res['rss_mb']:.0f} MB",
                          flush=True)
                    continue
                ready = (f"ready p50 {res['ready_p50'] * 1000:.0f} ms "
                         f"({res['from_ready']} from a ready node), "
                         if res["ready_p50"] is not None else "")
                where = " [aws, moto_server]" if args.cloud == "aws" else ""
                print(f"({res['scenario']}) {res['desc']}{where}: p50 {res['p50']:.3f}s "
                      f"p95 {res['p95']:.3f}s max {res['max']:.3f}s, {ready}"
                      f"accepted p50 {res['accept_p50']:.3f}s, "
                      f"{res['req_per_s']:.1f} req/s, failed {res['failed']}, "
                      f"CPU s launcher {res['cpu_s']:.1f} {cloud_name} {res['sim_cpu_s']:.1f} "
                      f"bench {res['bench_cpu_s']:.1f} zookeeper {res['zk_cpu_s']:.1f}, "
                      f"ZooKeeper requests per request {res['zk_per_request']:.0f}, "
                      f"idle RSS {res['idle_rss_mb']:.0f} MB, "
                      f"peak RSS {res['peak_rss_mb']:.0f} MB"
                      + (f" (each of {res['launchers']} launcher processes)"
                         if res["launchers"] > 1 else ""), flush=True)
    finally:
        zk.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

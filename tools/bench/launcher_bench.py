#!/usr/bin/env python3
"""Launcher benchmark: requests written the way Zuul writes them, against simcloud.

Starts a ZooKeeper (Debian package, loopback), simcloud clouds with a 0.1 s boot delay and
`nodepool-launcher` as a separate process, then per scenario submits a burst of requests
with plain kazoo. Each fulfilled request is accepted at once, as Zuul does: lock the nodes,
delete the request, in-use, used, unlock. Prints p50/p95/max request->fulfilled latency,
requests/s, launcher CPU seconds and peak RSS.

    .venv/bin/python tools/bench/launcher_bench.py [--scenarios a,b,c,d]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nodepool_ng.simcloud.profile import build_profiles  # noqa: E402
from nodepool_ng.simcloud.service import SimCloudService  # noqa: E402
from nodepool_ng.simcloud.state import Image  # noqa: E402
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
}


def zuul_request(labels: list[str]) -> bytes:
    now = time.time()
    return json.dumps({
        "requestor_data": {"build_set_uuid": "b", "tenant_name": "t", "pipeline_name": "check",
                           "job_uuid": "j", "job_name": "bench", "span_info": None},
        "node_types": labels, "requestor": "zuul-bench", "created_time": now,
        "provider": None, "state": "requested", "state_time": now, "relative_priority": 0,
        "event_id": None, "tenant_name": "t",
    }).encode()


def accept(kz: KazooClient, rid: str, req: dict[str, Any]) -> None:
    locks = []
    for nid in req["nodes"]:
        lock = Lock(kz, f"/nodepool/nodes/{nid}/lock")
        lock.acquire(timeout=30)
        locks.append((nid, lock))
    kz.delete(f"/nodepool/requests/{rid}")
    for state in ("in-use", "used"):
        for nid, _ in locks:
            data = json.loads(kz.get(f"/nodepool/nodes/{nid}")[0])
            data["state"] = state
            kz.set(f"/nodepool/nodes/{nid}", json.dumps(data).encode())
    for _, lock in locks:
        lock.release()


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


def run_scenario(
    name: str, sc: dict[str, Any], zk: ZooKeeperServer, work: Path, profile_dir: str | None
) -> dict:
    chroot = f"/bench_{name}_{int(time.time())}"
    clouds = [{"name": f"cloud{i}", "boot_delay": 0.1} for i in range(sc["providers"])]
    sim = SimCloudService(build_profiles({"clouds": clouds}))
    sim.start()
    for state in sim.states.values():
        img = Image("img-debian", "debian", time.time(), status="active", disk_format="qcow2",
                    container_format="bare", size=1)
        state.images[img.id] = img
    clouds_yaml = sim.write_clouds_yaml(work / f"clouds-{name}.yaml")
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
    cfg_path = work / f"nodepool-{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    kz = KazooClient(hosts=f"127.0.0.1:{zk.port}")
    kz.start()
    kz.ensure_path(chroot)
    kz.stop()
    kz = KazooClient(hosts=f"127.0.0.1:{zk.port}{chroot}")
    kz.start()
    kz.ensure_path("/nodepool/requests")
    log = open(work / f"launcher-{name}.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodepool_ng.cmd.launcher", "-c", str(cfg_path), "-f",
         "--no-webapp", "--clouds-yaml", str(clouds_yaml)],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    sampler = Sampler(proc.pid)
    sampler.start()
    spy = None
    try:
        deadline = time.monotonic() + 60
        while not (kz.exists("/nodepool/components/pool")
                   and len(kz.get_children("/nodepool/components/pool")) == sc["providers"]):
            if time.monotonic() > deadline:
                raise RuntimeError("launcher did not register")
            time.sleep(0.05)
        if sc["min_ready"]:
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
                if ready >= sc["min_ready"]:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("min-ready not reached")
                time.sleep(0.1)
        time.sleep(0.5)
        idle_rss = sampler.proc.memory_info().rss
        if profile_dir:
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(proc.pid),
                 "-f", "raw", "-o", str(Path(profile_dir) / f"launcher-{name}.txt"),
                 "--nonblocking", "-r", "50"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0 = sampler.cpu()
        done: queue.Queue[tuple[str, float, dict[str, Any]]] = queue.Queue()
        submitted: dict[str, float] = {}
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
        for _ in range(sc["count"]):
            t = time.monotonic()
            path = kz.create("/nodepool/requests/200-", zuul_request(sc["labels"]),
                             sequence=True)
            rid = path.rsplit("/", 1)[-1]
            submitted[rid] = t
            watch(rid)
        latencies = []
        failed = 0
        for _ in range(sc["count"]):
            rid, t, req = done.get(timeout=600)
            latencies.append(t - submitted[rid])
            if req["state"] == "failed":
                failed += 1
                kz.delete(f"/nodepool/requests/{rid}")
            else:
                accept(kz, rid, req)
        elapsed = time.monotonic() - start
        cpu = sampler.cpu() - cpu0
        latencies.sort()
        accepted = sorted(pending[r] - submitted[r] for r in pending)
        return {
            "scenario": name, "desc": sc["desc"], "requests": sc["count"], "failed": failed,
            "p50": statistics.median(latencies),
            "p95": latencies[max(0, int(len(latencies) * 0.95) - 1)],
            "max": latencies[-1],
            "accept_p50": statistics.median(accepted) if accepted else float("nan"),
            "req_per_s": sc["count"] / elapsed, "cpu_s": cpu,
            "idle_rss_mb": idle_rss / 2**20, "peak_rss_mb": sampler.peak / 2**20,
        }
    finally:
        sampler.stop_event.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        kz.stop()
        kz.close()
        sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="a,b,c,d")
    parser.add_argument("--profile", metavar="DIR",
                        help="record the launcher with py-spy (raw format) into DIR")
    args = parser.parse_args()
    zk = ZooKeeperServer()
    zk.start()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="np-bench-") as tmp:
            for name in args.scenarios.split(","):
                res = run_scenario(name, SCENARIOS[name], zk, Path(tmp), args.profile)
                results.append(res)
                print(f"({res['scenario']}) {res['desc']}: p50 {res['p50']:.3f}s "
                      f"p95 {res['p95']:.3f}s max {res['max']:.3f}s "
                      f"(accepted p50 {res['accept_p50']:.3f}s) "
                      f"{res['req_per_s']:.1f} req/s, failed {res['failed']}, "
                      f"launcher CPU {res['cpu_s']:.1f}s, idle RSS {res['idle_rss_mb']:.0f} MB, "
                      f"peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    finally:
        zk.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

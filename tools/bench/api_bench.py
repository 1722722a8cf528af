#!/usr/bin/env python3
"""REST request API benchmark: request -> fulfilled through `/api/v1`, beside the same figure
for the ZooKeeper path (requests written the way Zuul writes them), in one run against one
launcher.

Starts a ZooKeeper (Debian package, loopback), `nodepool-simcloud` (one cloud, 0.1 s boot
delay) and `nodepool-launcher` (its web app on a free loopback port with one API token),
each in its own process. Requests go one at a time, alternating between the two paths:

- from a ready node: label `r` (min-ready 2); each request is written once a ready node
  waits and the launcher had 0.2 s to settle;
- from a boot: label `b` (min-ready 0): every request boots its node.

ZooKeeper path: written with plain kazoo; "fulfilled" is when a data watch sees the
launcher's `fulfilled`; "accepted" is when Zuul's accept is done (nodes locked, request
deleted, nodes `in-use`), as the API's `fulfilled` is. API path: `POST /requests`, then
`GET /requests/<id>?wait=30&since=<state seen>` until `fulfilled` (over one keep-alive
connection); then `DELETE`. Prints p50/p95 of each, the API's minus the ZooKeeper path's,
how many requests were served by a node that existed before the request was written, and
the long-poll GETs an API request took (one per state change seen: `requested` ->
`pending` -> `fulfilled`).

    .venv/bin/python tools/bench/api_bench.py [--count 30] [--boot-count 15] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import yaml
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import launcher_bench as lb  # noqa: E402

from tests.fixtures.ports import free_port  # noqa: E402
from tests.fixtures.zookeeper import ZooKeeperServer  # noqa: E402

SECRET = "bench-api-token-0123456789"
READY_LABEL, BOOT_LABEL = "r", "b"
MIN_READY = 2
SETTLE = 0.2  # seconds the launcher idles before each request


class Sample:
    """One request: seconds from the write to fulfilled (and, ZooKeeper path, accepted; API
    path, the POST's answer), and whether every node existed before the request was
    written."""

    def __init__(self, fulfilled: float, accepted: float, existing: bool,
                 created: float = 0.0, gets: int = 0) -> None:
        self.fulfilled, self.accepted, self.existing = fulfilled, accepted, existing
        self.created, self.gets = created, gets


def zk_request(kz: KazooClient, label: str) -> Sample:
    """Zuul's path: write, watch until fulfilled, accept (lock, delete, in-use), then used."""
    seen = threading.Event()
    fulfilled: dict[str, Any] = {}
    written = time.time()
    start = time.monotonic()
    path = kz.create("/nodepool/requests/200-", lb.zuul_request([label]), sequence=True)

    def watch(data: bytes | None, stat: Any) -> bool:
        if data is None or seen.is_set():
            return False
        req = json.loads(data)
        if req["state"] in ("fulfilled", "failed"):
            fulfilled.update(req, at=time.monotonic())
            seen.set()
            return False
        return True

    kz.DataWatch(path, watch)
    if not seen.wait(120) or fulfilled["state"] != "fulfilled":
        raise RuntimeError(f"{path}: not fulfilled: {fulfilled}")
    locks, records = [], []
    for nid in fulfilled["nodes"]:
        lock = Lock(kz, f"/nodepool/nodes/{nid}/lock")
        lock.acquire(timeout=30)
        locks.append(lock)
    kz.delete(path)
    for nid in fulfilled["nodes"]:
        data = json.loads(kz.get(f"/nodepool/nodes/{nid}")[0])
        data["state"] = "in-use"
        kz.set(f"/nodepool/nodes/{nid}", json.dumps(data).encode())
        records.append((nid, data))
    accepted = time.monotonic()
    for nid, data in records:
        data["state"] = "used"
        kz.set(f"/nodepool/nodes/{nid}", json.dumps(data).encode())
    for lock in locks:
        lock.release()
    existing = all((d.get("created_time") or written) < written for _nid, d in records)
    return Sample(fulfilled["at"] - start, accepted - start, existing)


def api_request(session: requests.Session, base: str, kz: KazooClient, label: str) -> Sample:
    """The API's path: POST, long-poll GETs until fulfilled, then DELETE (return)."""
    written = time.time()
    start = time.monotonic()
    response = session.post(f"{base}/requests", json={"labels": [label], "lease_seconds": 600},
                            timeout=30)
    response.raise_for_status()
    created_at = time.monotonic()
    lease = response.json()
    gets = 0
    while lease["state"] in ("requested", "pending"):
        gets += 1
        # `since`: answered at once if the state moved on after the previous answer
        response = session.get(f"{base}/requests/{lease['id']}",
                               params={"wait": 30, "since": lease["state"]}, timeout=60)
        response.raise_for_status()
        lease = response.json()
    done = time.monotonic()
    if lease["state"] != "fulfilled":
        raise RuntimeError(f"request {lease['id']}: {lease['state']}: {lease}")
    created = [json.loads(kz.get(f"/nodepool/nodes/{n['id']}")[0]).get("created_time")
               for n in lease["nodes"]]
    session.delete(f"{base}/requests/{lease['id']}", timeout=30).raise_for_status()
    existing = all((c or written) < written for c in created)
    return Sample(done - start, done - start, existing, created_at - start, gets)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def node_records(kz: KazooClient) -> Iterator[dict[str, Any]]:
    """Every node record that can be read now."""
    for nid in kz.get_children("/nodepool/nodes") if kz.exists("/nodepool/nodes") else []:
        try:
            yield json.loads(kz.get(f"/nodepool/nodes/{nid}")[0])
        except Exception:
            continue


def ready_nodes(kz: KazooClient, label: str) -> int:
    return sum(d.get("state") == "ready" and not d.get("allocated_to") and d.get("type") == [label]
               for d in node_records(kz))


def busy_nodes(kz: KazooClient) -> int:
    """Nodes not yet deleted that are neither ready nor building for min-ready."""
    return sum(d.get("state") in ("in-use", "used", "deleting") for d in node_records(kz))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * fraction + 0.5) - 1)]


def config(zk: ZooKeeperServer, chroot: str, clouds_yaml: Path, port: int) -> dict[str, Any]:
    labels = [READY_LABEL, BOOT_LABEL]
    return {
        "zookeeper-servers": [{"host": "127.0.0.1", "port": zk.port, "chroot": chroot}],
        "webapp": {"port": port, "listen_address": "127.0.0.1",
                   "api-tokens": [{"name": "bench", "secret": SECRET}]},
        "labels": [{"name": READY_LABEL, "min-ready": MIN_READY}, {"name": BOOT_LABEL}],
        "providers": [{
            "name": "p0", "cloud": "cloud0", "rate": 0.001,
            "cloud-images": [{"name": "debian"}],
            "pools": [{"name": "main", "max-servers": 10, "host-key-checking": False,
                       "labels": [{"name": label, "cloud-image": "debian",
                                   "flavor-name": "small"} for label in labels]}],
        }],
    }


def run(count: int, boot_count: int, work: Path) -> dict[str, dict[str, list[Sample]]]:
    zk = ZooKeeperServer()
    zk.start()
    procs: list[subprocess.Popen] = []
    kz: KazooClient | None = None
    try:
        sim, clouds_yaml = lb.start_simcloud({"providers": 1}, work, "api")
        procs.append(sim)
        chroot = f"/api_bench_{int(time.time())}"
        root = KazooClient(hosts=f"127.0.0.1:{zk.port}")
        root.start()
        root.ensure_path(chroot)
        root.stop()
        port = free_port()
        cfg_path = work / "nodepool-api.yaml"
        cfg_path.write_text(yaml.safe_dump(config(zk, chroot, clouds_yaml, port)))
        with open(work / "launcher-api.log", "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "nodepool_ng.cmd.launcher", "-c", str(cfg_path), "-f",
                 "--clouds-yaml", str(clouds_yaml)],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT)))
        kz = KazooClient(hosts=f"127.0.0.1:{zk.port}{chroot}")
        kz.start()
        kz.ensure_path("/nodepool/requests")
        base = f"http://127.0.0.1:{port}/api/v1"
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {SECRET}"

        def api_up() -> bool:
            try:
                return session.get(f"{base}/requests", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for("the API", api_up)
        wait_for("min-ready nodes", lambda: ready_nodes(kz, READY_LABEL) >= MIN_READY)
        paths: dict[str, Callable[[str], Sample]] = {
            "zookeeper": lambda label: zk_request(kz, label),
            "api": lambda label: api_request(session, base, kz, label),
        }
        results: dict[str, dict[str, list[Sample]]] = {
            "ready": {name: [] for name in paths}, "boot": {name: [] for name in paths}}
        for kind, label, n in (("ready", READY_LABEL, count), ("boot", BOOT_LABEL, boot_count)):
            for _ in range(n):
                for name, call in paths.items():
                    if kind == "ready":
                        wait_for("a ready node", lambda: ready_nodes(kz, READY_LABEL) >= 1)
                    wait_for("used nodes deleted", lambda: busy_nodes(kz) == 0)
                    time.sleep(SETTLE)
                    results[kind][name].append(call(label))
        return results
    finally:
        if kz is not None:
            kz.stop()
            kz.close()
        for proc in reversed(procs):
            lb._stop(proc)
        zk.stop()


def report(results: dict[str, dict[str, list[Sample]]]) -> None:
    for kind, by_path in results.items():
        zk, api = by_path["zookeeper"], by_path["api"]
        if not zk:
            continue
        figures = {
            "zookeeper fulfilled": [s.fulfilled for s in zk],
            "zookeeper accepted": [s.accepted for s in zk],
            "api POST answered": [s.created for s in api],
            "api fulfilled": [s.fulfilled for s in api],
        }
        print(f"from {'a ready node' if kind == 'ready' else 'a boot'} "
              f"({len(zk)} requests per path, one at a time):")
        for name, values in figures.items():
            print(f"  {name:<27} p50 {statistics.median(values) * 1000:7.1f} ms  "
                  f"p95 {percentile(values, 0.95) * 1000:7.1f} ms")
        for against in ("zookeeper fulfilled", "zookeeper accepted"):
            p50 = statistics.median(figures["api fulfilled"]) - statistics.median(
                figures[against])
            p95 = percentile(figures["api fulfilled"], 0.95) - percentile(figures[against],
                                                                           0.95)
            print(f"  api - {against:<21} p50 {p50 * 1000:+7.1f} ms  p95 {p95 * 1000:+7.1f} ms")
        print(f"  served by an existing node: zookeeper {sum(s.existing for s in zk)}, "
              f"api {sum(s.existing for s in api)}; long-poll GETs per API request "
              f"{statistics.mean(s.gets for s in api):.1f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--count", type=int, default=30,
                        help="requests per path from a ready node")
    parser.add_argument("--boot-count", type=int, default=15,
                        help="requests per path that boot their node")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep the config and logs (launcher-api.log) in DIR")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="np-api-bench-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        report(run(args.count, args.boot_count, work))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

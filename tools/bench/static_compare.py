#!/usr/bin/env python3
"""Static driver, ours next to upstream Nodepool 11's: request -> fulfilled from a ready node.

One real sshd host with 2 slots (host-key checking on), one TLS ZooKeeper (upstream requires
TLS), the same nodepool.yaml for both launchers, each in its own chroot and process. Requests
are written one at a time, each once a READY node waits, and accepted as Zuul does (lock,
delete the request, in-use, used, unlock), so every figure is the hand-out of a ready node.
Upstream runs from the compat venv (tools/compat/setup-venvs.sh).

    .venv/bin/python tools/bench/static_compare.py [--count 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from kazoo.client import KazooClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]

import launcher_bench as lb  # noqa: E402

from tests.fixtures.sshd import SshdServer  # noqa: E402
from tests.fixtures.zookeeper import ZooKeeperServer  # noqa: E402

UPSTREAM = Path(os.environ.get("NODEPOOL_COMPAT_DIR", "/opt/compat")) / "nodepool11"


def tls_kazoo(zk: ZooKeeperServer, chroot: str = "") -> KazooClient:
    certs = Path(zk.certs_dir)
    client = KazooClient(hosts=f"127.0.0.1:{zk.secure_port}{chroot}", use_ssl=True,
                         certfile=str(certs / "client.crt"), keyfile=str(certs / "client.key"),
                         ca=str(certs / "ca.pem"))
    client.start(timeout=15)
    return client


def write_config(path: Path, zk: ZooKeeperServer, chroot: str, sshd: SshdServer) -> None:
    certs = Path(zk.certs_dir)
    path.write_text(yaml.safe_dump({
        "zookeeper-servers": [{"host": "127.0.0.1", "port": zk.secure_port, "chroot": chroot}],
        "zookeeper-tls": {"cert": str(certs / "client.crt"), "key": str(certs / "client.key"),
                          "ca": str(certs / "ca.pem")},
        "labels": [{"name": "a"}],
        "providers": [{"name": "static", "driver": "static", "pools": [{
            "name": "main", "nodes": [{"name": sshd.host, "connection-port": sshd.port,
                                       "labels": ["a"], "max-parallel-jobs": 2}]}]}],
    }))


def fulfilled_after_write(kz: KazooClient) -> tuple[float, str, dict[str, Any]]:
    """Write one request; the seconds until it is fulfilled, its id and its data."""
    done = threading.Event()
    result: dict[str, Any] = {}

    def watch(data: bytes | None, stat: Any) -> bool:
        if data is None:
            return False
        req = yaml.safe_load(data)
        if req["state"] in ("fulfilled", "failed"):
            result.update(req)
            done.set()
            return False
        return True

    start = time.monotonic()
    path = kz.create("/nodepool/requests/200-", lb.zuul_request(["a"]), sequence=True)
    kz.DataWatch(path, watch)
    if not done.wait(60):
        raise RuntimeError("request not fulfilled in 60 s")
    elapsed = time.monotonic() - start
    if result["state"] != "fulfilled":
        raise RuntimeError(f"request failed: {result}")
    return elapsed, path.rsplit("/", 1)[-1], result


def run(kind: str, command: list[str], zk: ZooKeeperServer, sshd: SshdServer, work: Path,
        count: int) -> list[float]:
    chroot = f"/bench_static_{kind}_{uuid.uuid4().hex[:8]}"
    root = tls_kazoo(zk)
    root.ensure_path(chroot)
    root.stop()
    kz = tls_kazoo(zk, chroot)
    kz.ensure_path("/nodepool/requests")
    kz.ensure_path("/nodepool/nodes")
    config = work / f"nodepool-{kind}.yaml"
    write_config(config, zk, chroot, sshd)
    env = {k: v for k, v in os.environ.items() if k != "STATSD_HOST"}
    with open(work / f"launcher-{kind}.log", "wb") as log:
        proc = subprocess.Popen([*command, "-c", str(config), "-f", "--no-webapp"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(work))
    latencies = []
    try:
        for _ in range(count):
            lb.wait_ready_node(kz, time.monotonic() + 60)
            time.sleep(0.2)  # an idle launcher, as in scenario (r)
            latency, rid, req = fulfilled_after_write(kz)
            latencies.append(latency)
            lb.accept(kz, rid, req, time.time())
    finally:
        lb._stop(proc)
        kz.stop()
    return sorted(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=30)
    args = parser.parse_args()
    if not (UPSTREAM / "bin" / "nodepool-launcher").exists():
        print(f"upstream venv missing at {UPSTREAM}: run tools/compat/setup-venvs.sh")
        return 1
    zk = ZooKeeperServer(tls=True)
    zk.start()
    with tempfile.TemporaryDirectory(prefix="np-static-bench-") as tmp:
        work = Path(tmp)
        sshd = SshdServer(work / "sshd")
        sshd.start()
        try:
            figures = {}
            for kind, command in (
                ("nodepool_ng", [sys.executable, "-m", "nodepool_ng.cmd.launcher"]),
                ("upstream", [str(UPSTREAM / "bin" / "nodepool-launcher")]),
            ):
                lat = run(kind, command, zk, sshd, work, args.count)
                p50, p95 = statistics.median(lat), lat[max(0, int(len(lat) * 0.95) - 1)]
                figures[kind] = p50
                print(f"{kind}: {args.count} requests from a ready static node: "
                      f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
                      f"max {lat[-1] * 1000:.0f} ms", flush=True)
            print(f"upstream p50 / nodepool_ng p50: "
                  f"{figures['upstream'] / figures['nodepool_ng']:.0f}x")
        finally:
            sshd.stop()
            zk.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

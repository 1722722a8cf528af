#!/usr/bin/env python3
"""Benchmark simcloud: server creates per second and `GET /servers/detail` latency.

    .venv/bin/python tools/bench/simcloud_bench.py [--servers 1000] [--threads 4]

Creates go through openstacksdk's compute proxy (one POST each, real HTTP) from several
threads; the listing is timed with a plain keep-alive HTTP session. Targets on a 2-core
machine: >= 200 creates/s, listing 1,000 servers in < 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=1000)
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    with SimCloudFixture(simcloud_profile(1)) as cloud:
        conn = cloud.connect("sim-a")
        image_id = conn.image.find_image("cirros").id
        per_thread = args.servers // args.threads

        base = cloud.url("sim-a")
        token = conn.session.get_token()

        def worker() -> None:
            # Plain keep-alive HTTP: measures the cloud, not openstacksdk's client-side CPU
            # (which shares this process and its GIL).
            session = requests.Session()
            session.headers["X-Auth-Token"] = token
            for i in range(per_thread):
                resp = session.post(f"{base}/compute/v2.1/servers", json={"server": {
                    "name": f"bench-{i}", "flavorRef": "1", "imageRef": image_id}})
                resp.raise_for_status()

        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        total = per_thread * args.threads
        print(f"server creates (HTTP): {total} in {elapsed:.2f} s = "
              f"{total / elapsed:.0f} creates/s")
        t0 = time.perf_counter()
        for i in range(100):
            conn.compute.create_server(name=f"sdk-{i}", flavor_id="1", image_id=image_id,
                                       networks="auto")
        sdk_rate = 100 / (time.perf_counter() - t0)
        print(f"server creates (openstacksdk compute proxy, 1 thread): {sdk_rate:.0f} creates/s")
        for server in list(conn.compute.servers(name="^sdk-")):
            conn.compute.delete_server(server)

        session = requests.Session()
        session.headers["X-Auth-Token"] = conn.session.get_token()
        session.headers["OpenStack-API-Version"] = "compute 2.79"
        url = f"{cloud.url('sim-a')}/compute/v2.1/servers/detail"
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            resp = session.get(url)
            resp.raise_for_status()
            count = len(resp.json()["servers"])
            times.append((time.perf_counter() - t0) * 1000)
        print(f"list {count} servers (GET /servers/detail): min {min(times):.1f} ms, "
              f"median {statistics.median(times):.1f}"
              f" ms, max {max(times):.1f} ms")
        t0 = time.perf_counter()
        n = len(list(conn.compute.servers()))
        print(f"openstacksdk conn.compute.servers() of {n}: "
              f"{(time.perf_counter() - t0) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Screenshot of the launcher's status page into doc/status-page.png.

    .venv/bin/python tools/screenshot_status_page.py [--out doc/status-page.png]

Starts what the tests use (tests/fixtures, tests/launcher/harness.py): a private ZooKeeper
server, simcloud with two clouds, and an in-process launcher that keeps min-ready nodes on
them. Once every node is ready it plays a little of Zuul's and an operator's part (one
request taken and its node in use, one node held with `nodepool hold`, an image build with
its uploads), serves the page on a free port, and
has headless Chromium (`chromium --headless --screenshot`) take the picture. Everything is
stopped afterwards. Needs ZooKeeper and Chromium installed (tools/setup-env.sh).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodepool_ng.cmd.admin import main as nodepool  # noqa: E402
from nodepool_ng.web.server import WebApp  # noqa: E402
from tests.fixtures.zookeeper import ZooKeeperChroot, ZooKeeperServer  # noqa: E402
from tests.launcher import harness as h  # noqa: E402

WINDOW = "1280,1280"  # tall enough for every section of this fleet


def take_in_use(kz: KazooClient, label: str) -> Lock:
    """Zuul's part: a request for `label`, its node locked and in use (lock returned)."""
    rid = h.submit_request(kz, [label])
    request = h.wait_request(kz, rid, ("fulfilled",))
    node_id = request["nodes"][0]
    lock = Lock(kz, f"/nodepool/nodes/{node_id}/lock")
    lock.acquire(timeout=10)
    kz.delete(f"/nodepool/requests/{rid}")
    data = h.node(kz, node_id)
    assert data is not None
    data["state"] = "in-use"
    data["user_data"] = "job: tox-py311"
    kz.set(f"/nodepool/nodes/{node_id}", json.dumps(data).encode())
    return lock


def write_images(kz: KazooClient, providers: list[str]) -> None:
    """The builder's part: one ready build of `debian` and its uploads, written as upstream
    records."""
    now = time.time()
    build = {"state": "ready", "state_time": now - 5400, "builder": "builder01",
             "formats": "qcow2,raw", "username": "zuul"}
    base = "/nodepool/images/debian/builds/0000000001"
    kz.create(base, json.dumps(build).encode(), makepath=True)
    for i, provider in enumerate(providers):
        upload = {"state": "ready", "state_time": now - 4800 + i * 60,
                  "external_id": f"img-{i + 1:04d}", "external_name": "debian-1700000000",
                  "format": "qcow2", "username": "zuul"}
        kz.create(f"{base}/providers/{provider}/images/0000000001",
                  json.dumps(upload).encode(), makepath=True)


def screenshot(url: str, out: Path, profile: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (tools/setup-env.sh installs it)")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
                    f"--window-size={WINDOW}", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "doc" / "status-page.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="np-screenshot-"))
    zk = ZooKeeperServer()
    zk.start()
    sim = launcher = app = None
    kz = None
    try:
        chroot = ZooKeeperChroot.create(zk)
        sim = h.start_clouds([{"name": "cloud-east"}, {"name": "cloud-west"}],
                             work / "clouds.yaml")
        config = h.write_config(
            work / "nodepool.yaml", chroot,
            [h.provider("sim-east", "cloud-east", labels=("small", "big"), **{"max-servers": 8}),
             h.provider("sim-west", "cloud-west", labels=("small",), **{"max-servers": 4})],
            [{"name": "small", "min-ready": 3}, {"name": "big", "min-ready": 1}],
        )
        launcher = h.start_launcher(config, work / "clouds.yaml")
        kz = KazooClient(hosts=chroot.hosts)
        kz.start(timeout=10)

        def settled() -> bool:
            """min-ready met (4 ready nodes) and no launch under way."""
            states = [n["state"] for n in h.all_nodes(kz).values()]
            return states.count("ready") >= 4 and set(states) <= {"ready", "in-use"}

        h.wait_for("the min-ready nodes", settled, timeout=120)
        lock = take_in_use(kz, "small")
        h.wait_for("min-ready refilled", settled, timeout=120)
        held = sorted(n for n, d in h.all_nodes(kz).items() if d["type"] == ["small"])[0]
        nodepool(["-c", str(config), "hold", held, "--reason", "debugging a flaky job"])
        write_images(kz, ["sim-east", "sim-west"])
        app = WebApp(lambda: launcher.zk_client, lambda: launcher.config, host="127.0.0.1",
                     port=0, launcher_status=launcher.provider_status)
        app.start()
        screenshot(f"http://127.0.0.1:{app.port}/", args.out.resolve(), work / "chromium")
        lock.release()
        print(f"wrote {args.out}")
    finally:
        if app is not None:
            app.stop()
        if kz is not None:
            kz.stop()
        if launcher is not None:
            launcher.stop()
        if sim is not None:
            sim.stop()
        zk.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The chaos test's detectors fail when they should: a launcher played by hand hands over a
node that is not ready and a node twice; a cloud holds a server, port and floating IP no
node claims. (Fast; runs in the normal suite.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kazoo.client import KazooClient

from tests.chaos import audit
from tests.chaos.zuul import Zuul
from tests.fixtures.simcloud import SimCloudFixture, simcloud_profile
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h


def _node(kz: KazooClient, nid: str, state: str, rid: str) -> None:
    data = json.dumps({"state": state, "allocated_to": rid, "provider": "pa",
                       "type": ["small"]}).encode()
    path = f"/nodepool/nodes/{nid}"
    if kz.exists(path):
        kz.set(path, data)
    else:
        kz.create(path, data, makepath=True)


def _fulfil(kz: KazooClient, rid: str, nodes: list[str]) -> None:
    path = f"/nodepool/requests/{rid}"
    req = json.loads(kz.get(path)[0])
    req.update(state="fulfilled", nodes=nodes)
    kz.set(path, json.dumps(req).encode())


def test_not_ready_and_double_handovers_are_recorded(
    zk_chroot: ZooKeeperChroot, kazoo_client: KazooClient
) -> None:
    zuul = Zuul(zk_chroot.hosts, hold=(0.0, 0.01), workers=2)
    zuul.start()
    try:
        kz = kazoo_client
        a = zuul.submit(["small"])
        assert a.rid is not None
        _node(kz, "0000000001", "building", a.rid)  # the write that "failed": not ready
        _node(kz, "0000000002", "ready", a.rid)
        _fulfil(kz, a.rid, ["0000000001", "0000000002"])
        h.wait_for("request a handled", lambda: a.done)
        assert a.final_state == "fulfilled"
        assert a.not_ready == ["node 0000000001 at handover: state building, allocated_to "
                               f"{a.rid}"]
        assert a.double == []
        assert kz.exists(f"/nodepool/requests/{a.rid}") is None  # Zuul deleted it
        assert json.loads(kz.get("/nodepool/nodes/0000000002")[0])["state"] == "used"

        b = zuul.submit(["small"])
        assert b.rid is not None
        _node(kz, "0000000002", "ready", b.rid)  # the same node again
        _fulfil(kz, b.rid, ["0000000002"])
        h.wait_for("request b handled", lambda: b.done)
        assert b.not_ready == []
        assert b.double == [f"node 0000000002 also handed to {a.rid}"]

        c = zuul.submit(["small"])
        assert c.rid is not None
        path = f"/nodepool/requests/{c.rid}"
        req = json.loads(kz.get(path)[0])
        req.update(state="failed", declined_by=["pool-x"])
        kz.set(path, json.dumps(req).encode())
        h.wait_for("request c handled", lambda: c.done)
        assert (c.final_state, c.declined_by) == ("failed", ["pool-x"])
        assert zuul.zuul_errors == []
    finally:
        zuul.stop()


def test_unclaimed_cloud_resources_are_found(tmp_path: Path) -> None:
    profile = simcloud_profile(1, address_model="floating")
    with SimCloudFixture(profile, directory=tmp_path) as cloud:
        baseline = set(audit.inventory(cloud.service))
        conn = cloud.connect("sim-a")
        server = conn.create_server("np1", image="cirros", flavor="small", wait=False,
                                    meta={"nodepool_node_id": "0000000007"})
        fip = conn.create_floating_ip()
        deadline = time.monotonic() + 10
        while not audit.unclaimed(cloud.service, {}, {"pa": "sim-a"}, baseline):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        found = {(r.kind, r.id) for r in audit.unclaimed(
            cloud.service, {}, {"pa": "sim-a"}, baseline)}
        assert ("server", server.id) in found
        assert ("floating_ip", fip.id) in found
        assert any(kind == "port" for kind, _ in found)
        # A node whose external_id is the server claims it and its port; the free IP stays.
        nodes = {"0000000007": {"provider": "pa", "external_id": server.id}}
        left = {(r.kind, r.id) for r in audit.unclaimed(
            cloud.service, nodes, {"pa": "sim-a"}, baseline)}
        assert left == {("floating_ip", fip.id)}

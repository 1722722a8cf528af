"""Test harness: simcloud clouds + nodepool.yaml + an in-process Launcher, and Zuul's moves."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

from nodepool_ng.launcher.service import Launcher, LauncherOptions
from nodepool_ng.simcloud.profile import build_profiles
from nodepool_ng.simcloud.service import SimCloudService
from nodepool_ng.simcloud.state import Image
from tests.fixtures.zookeeper import ZooKeeperChroot

FAST = dict(
    runner_poll=0.02,
    adapter_poll=0.05,
    deleter_interval=1.0,
    min_ready_interval=1.0,
    cleanup_interval=1.0,
    config_interval=0.2,
    stats_interval=5.0,
    cloud_quota_ttl=0.2,
)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_clouds(clouds: Iterable[dict[str, Any]], clouds_yaml: Path) -> SimCloudService:
    service = SimCloudService(build_profiles({"clouds": list(clouds)}))
    service.start()
    for state in service.states.values():
        image = Image(
            uuid.uuid4().hex,
            "debian",
            time.time(),
            status="active",
            disk_format="qcow2",
            container_format="bare",
            size=1,
        )
        state.images[image.id] = image
    service.write_clouds_yaml(clouds_yaml)
    return service


def provider(name: str, cloud: str, labels: Iterable[str] = ("small",), **pool: Any) -> dict:
    pool_cfg: dict[str, Any] = {
        "name": "main",
        "host-key-checking": False,
        "labels": [{"name": n, "cloud-image": "debian", "flavor-name": "small"} for n in labels],
    }
    extra = {
        k: pool.pop(k)
        for k in list(pool)
        if k in ("launch-retries", "launch-timeout", "boot-timeout", "priority")
    }
    pool_cfg.update(pool)
    return {
        "name": name,
        "cloud": cloud,
        "rate": 0.001,
        "cloud-images": [{"name": "debian"}],
        "pools": [pool_cfg],
        **extra,
    }


def write_config(
    path: Path, zk: ZooKeeperChroot, providers: list[dict], labels: Iterable[dict] | None = None
) -> Path:
    cfg = {
        "zookeeper-servers": [{"host": zk.host, "port": zk.port, "chroot": zk.chroot}],
        "zookeeper-timeout": 2.0,
        "labels": list(labels or [{"name": "small"}, {"name": "big"}]),
        "providers": providers,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_launcher(config: Path, clouds_yaml: Path, **options: Any) -> Launcher:
    opts = LauncherOptions(
        hostname=f"test-{uuid.uuid4().hex[:6]}", clouds_yaml=str(clouds_yaml), **{**FAST, **options}
    )
    launcher = Launcher(str(config), options=opts)
    launcher.start()
    return launcher


# -- Zuul's side, with plain kazoo, as Zuul 14 writes and accepts requests -----------------
def submit_request(
    kz: KazooClient, labels: list[str], priority: str = "200", provider: str | None = None
) -> str:
    now = time.time()
    data = {
        "requestor_data": {
            "build_set_uuid": "abc",
            "tenant_name": "t",
            "pipeline_name": "check",
            "job_uuid": "j1",
            "job_name": "job",
            "span_info": None,
        },
        "node_types": labels,
        "requestor": "zuul-scheduler-1",
        "created_time": now,
        "provider": provider,
        "state": "requested",
        "state_time": now,
        "relative_priority": 0,
        "event_id": None,
        "tenant_name": "t",
    }
    path = kz.create(
        f"/nodepool/requests/{priority}-", json.dumps(data).encode(), makepath=True, sequence=True
    )
    return path.rsplit("/", 1)[-1]


def read(kz: KazooClient, path: str) -> dict[str, Any] | None:
    stat = kz.exists(path)
    if stat is None:
        return None
    try:
        data, _ = kz.get(path)
    except Exception:
        return None
    return json.loads(data) if data else {}


def request(kz: KazooClient, rid: str) -> dict[str, Any] | None:
    return read(kz, f"/nodepool/requests/{rid}")


def node(kz: KazooClient, nid: str) -> dict[str, Any] | None:
    return read(kz, f"/nodepool/nodes/{nid}")


def all_nodes(kz: KazooClient) -> dict[str, dict[str, Any]]:
    out = {}
    for nid in kz.get_children("/nodepool/nodes") if kz.exists("/nodepool/nodes") else []:
        data = node(kz, nid)
        if data is not None:
            out[nid] = data
    return out


def wait_request(
    kz: KazooClient,
    rid: str,
    states: tuple[str, ...] = ("fulfilled", "failed"),
    timeout: float = 30.0,
) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        f"request {rid} in {states}",
        lambda: (r := request(kz, rid)) is not None and r["state"] in states and r,
        timeout,
    )


def node_locked(kz: KazooClient, nid: str) -> bool:
    path = f"/nodepool/nodes/{nid}/lock"
    return bool(kz.exists(path) and kz.get_children(path))


def accept_and_use(kz: KazooClient, rid: str) -> list[str]:
    """Zuul's acceptNodes then job done: lock, delete request, in-use, used, unlock."""
    req = request(kz, rid)
    assert req is not None
    locks = []
    for nid in req["nodes"]:
        lock = Lock(kz, f"/nodepool/nodes/{nid}/lock")
        assert lock.acquire(timeout=10)
        locks.append((nid, lock))
    kz.delete(f"/nodepool/requests/{rid}")
    for nid, _ in locks:
        data = node(kz, nid)
        assert data is not None and data["allocated_to"] == rid
        data["state"] = "in-use"
        kz.set(f"/nodepool/nodes/{nid}", json.dumps(data).encode())
    for nid, lock in locks:
        data = node(kz, nid)
        assert data is not None
        data["state"] = "used"
        kz.set(f"/nodepool/nodes/{nid}", json.dumps(data).encode())
        lock.release()
    return [nid for nid, _ in locks]


def servers(sim: SimCloudService, cloud: str) -> list[Any]:
    state = sim.states[cloud]
    with state.lock:
        return list(state.servers.values())

"""`Launcher.provider_status`, the launcher's own view the status page shows: cloud health,
launches under way, and per pool its servers and whether it is at quota. A real launcher on
simcloud keeps min-ready nodes; one pool is full with them, the other is not."""

from __future__ import annotations

from nodepool_ng.status import PoolStatus, ProviderStatus
from tests.launcher import harness as h
from tests.launcher.env import Env


def test_provider_status_reports_quota_and_health(env: Env) -> None:
    env.clouds([{"name": "cloud1"}, {"name": "cloud2"}])
    launcher = env.start(
        [h.provider("full", "cloud1", labels=("big",), **{"max-servers": 1}),
         h.provider("roomy", "cloud2", labels=("small",), **{"max-servers": 5})],
        labels=[{"name": "small", "min-ready": 2}, {"name": "big", "min-ready": 1}],
    )

    def settled() -> bool:
        states = [str(n.state) for n in launcher.zk.nodes()]
        return len(states) == 3 and all(s == "ready" for s in states)

    h.wait_for("the min-ready nodes, all ready", settled, timeout=60)
    assert launcher.provider_status() == [
        ProviderStatus("full", "healthy", 0, (PoolStatus("main", True, 1, 1),)),
        ProviderStatus("roomy", "healthy", 0, (PoolStatus("main", False, 2, 5),)),
    ]

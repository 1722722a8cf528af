"""A cloud outage under load (issue 8, defect 6): one of two clouds answers every API call
with 500 for OUTAGE seconds while requests keep arriving.

Expected: the failing provider's circuit breaker opens, its requests are served by the other
cloud, the failing cloud hears only a few calls a second (probes, backed-off listings and
deletes), and once it answers again launches there ramp back up.

The outage lasts a minute, as in the issue, so the probes' backoff reaches its longer steps
and the recovery after them is exercised too.
"""

from __future__ import annotations

import time
from collections import Counter

from kazoo.client import KazooClient

from nodepool_ng.simcloud.profile import SERVICES
from nodepool_ng.simcloud.service import SimCloudService
from tests.launcher import harness as h
from tests.launcher.env import Env

OUTAGE = 60.0
REQUEST_EVERY = 0.25  # seconds between new requests, during and after the outage
MAX_CALLS_PER_SECOND = 3.0  # to the failing cloud, on average over the outage


def _calls(sim: SimCloudService, cloud: str) -> int:
    state = sim.states[cloud]
    with state.lock:
        return sum(n for service, n in state.requests.items() if service != "admin")


def _set_outage(sim: SimCloudService, cloud: str, rate: float) -> None:
    state = sim.states[cloud]
    with state.lock:
        for service in SERVICES:
            state.faults["error_rate"][service] = rate


class Zuul:
    """Submits requests and uses every fulfilled one at once; remembers where nodes ran."""

    def __init__(self, kz: KazooClient) -> None:
        self.kz = kz
        self.open: list[str] = []
        self.failed: list[str] = []
        self.served_by: Counter[str] = Counter()

    def submit(self) -> None:
        self.open.append(h.submit_request(self.kz, ["small"]))

    def collect(self) -> None:
        still = []
        for rid in self.open:
            req = h.request(self.kz, rid)
            if req is None or req["state"] not in ("fulfilled", "failed"):
                still.append(rid)
            elif req["state"] == "failed":
                self.failed.append(rid)
                self.kz.delete(f"/nodepool/requests/{rid}")
            else:
                for nid in req["nodes"]:
                    node = h.node(self.kz, nid)
                    assert node is not None
                    self.served_by[node["provider"]] += 1
                h.accept_and_use(self.kz, rid)
        self.open = still

    def run_for(self, seconds: float, until: object = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.submit()
            self.collect()
            if callable(until) and until():
                return
            time.sleep(REQUEST_EVERY)


def test_a_dead_cloud_is_left_alone_and_ramped_up_again(
    env: Env, kazoo_client: KazooClient
) -> None:
    sim = env.clouds([{"name": "cloud0"}, {"name": "cloud1"}])
    env.start([h.provider("p0", "cloud0", **{"max-servers": 10}),
                          h.provider("p1", "cloud1", **{"max-servers": 10})])
    zuul = Zuul(kazoo_client)
    # Both clouds serve before the outage.
    zuul.run_for(60, until=lambda: zuul.served_by["p0"] and zuul.served_by["p1"])
    assert zuul.served_by["p0"] and zuul.served_by["p1"]

    _set_outage(sim, "cloud0", 1.0)
    calls_before = _calls(sim, "cloud0")
    served_before = Counter(zuul.served_by)
    started = time.monotonic()
    zuul.run_for(OUTAGE)
    duration = time.monotonic() - started
    outage_calls = _calls(sim, "cloud0") - calls_before
    _set_outage(sim, "cloud0", 0.0)

    served_in_outage = zuul.served_by["p1"] - served_before["p1"]
    print(f"outage {duration:.1f}s: {outage_calls} calls to the failing cloud "
          f"({outage_calls / duration:.2f}/s); {served_in_outage} requests served by p1")
    assert outage_calls / duration < MAX_CALLS_PER_SECOND, outage_calls
    # The other cloud carried the load: most requests of the outage were served there.
    assert served_in_outage >= OUTAGE / REQUEST_EVERY / 4
    assert not zuul.failed

    # Recovered: the probe lets launches ramp up, and p0 launches nodes again.
    served_p0 = zuul.served_by["p0"]
    zuul.run_for(120, until=lambda: zuul.served_by["p0"] >= served_p0 + 3)
    assert zuul.served_by["p0"] >= served_p0 + 3
    h.wait_for("every request answered", lambda: (zuul.collect(), not zuul.open)[1],
               timeout=60)
    assert not zuul.failed

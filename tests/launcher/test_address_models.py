"""Floating-IP address models at the launcher level: the node carries the floating address,
and after use nothing is left in the cloud (no server, port or floating IP)."""

from __future__ import annotations

import ipaddress

import pytest
from kazoo.client import KazooClient

from tests.launcher import harness as h
from tests.launcher.env import Env, random_cidr


def within(address: str | None, cidr: str) -> bool:
    return address is not None and ipaddress.ip_address(address) in ipaddress.ip_network(cidr)


@pytest.mark.parametrize("model", ["floating", "nova_floating"])
def test_floating_models_serve_public_address_and_leave_nothing(
    env: Env, kazoo_client: KazooClient, model: str
) -> None:
    public, private = random_cidr(), random_cidr()
    while ipaddress.ip_network(public).overlaps(ipaddress.ip_network(private)):
        private = random_cidr()
    sim = env.clouds(
        [{"name": "cloud1", "address_model": model, "public_cidr": public, "private_cidr": private}]
    )
    env.start([h.provider("p1", "cloud1")])
    rid = h.submit_request(kazoo_client, ["small"])
    req = h.wait_request(kazoo_client, rid)
    assert req["state"] == "fulfilled"
    nid = req["nodes"][0]
    node = h.node(kazoo_client, nid)
    assert node is not None and node["state"] == "ready"
    assert within(node["public_ipv4"], public), node
    assert node["interface_ip"] == node["public_ipv4"]
    assert within(node["private_ipv4"], private), node
    state = sim.states["cloud1"]
    with state.lock:
        fips = [f for f in state.floating_ips.values() if f.address == node["public_ipv4"]]
    # Attached to the node's server (neutron: through its port; nova: directly).
    assert len(fips) == 1 and fips[0].fixed_ip == node["private_ipv4"]
    assert fips[0].nova is (model == "nova_floating")

    h.accept_and_use(kazoo_client, rid)
    h.wait_for("node deleted", lambda: h.node(kazoo_client, nid) is None)

    def empty() -> bool:
        with state.lock:
            return not (state.servers or state.ports or state.floating_ips)

    h.wait_for("no server, port or floating ip left", empty)

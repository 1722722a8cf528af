"""The five address models: openstacksdk's create_server(auto_ip=True) finds the public IPv4."""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Iterator

import pytest

from tests.fixtures.simcloud import SimCloudFixture, cloud_profile

MODELS = ["external", "external_private", "floating", "nova_floating", "access_ip"]


@pytest.fixture(scope="module")
def five_clouds() -> Iterator[SimCloudFixture]:
    profile = {"clouds": [
        cloud_profile(model, address_model=model, public_cidr=f"127.{110 + i}.0.0/16",
                      private_cidr=f"127.{210 + i}.0.0/16")
        for i, model in enumerate(MODELS)]}
    with SimCloudFixture(profile) as cloud:
        yield cloud


@pytest.mark.parametrize("model", MODELS)
def test_auto_ip_yields_public_ipv4_and_delete_leaves_nothing(
        five_clouds: SimCloudFixture, model: str) -> None:
    conn = five_clouds.connect(model)
    admin = five_clouds.admin(model)
    public_net = ipaddress.ip_network(f"127.{110 + MODELS.index(model)}.0.0/16")
    kwargs = {"network": ["public", "private"]} if model == "external_private" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nova-network deprecation warnings
        server = conn.create_server(f"node-{model}", image="cirros", flavor="small",
                                    auto_ip=True, wait=True, timeout=30, **kwargs)
        assert server.status == "ACTIVE"
        server = conn.get_server(server.id)
    assert ipaddress.ip_address(server.public_v4) in public_net
    assert server.interface_ip == server.public_v4
    if model != "external":
        assert server.private_v4 and ipaddress.ip_address(server.private_v4) not in public_net
    if model in ("floating", "nova_floating"):
        fips = admin.floating_ips()
        assert [f["address"] for f in fips] == [server.public_v4]
        assert fips[0]["api"] == ("compute" if model == "nova_floating" else "network")
    listed = admin.servers()[0]
    for addrs in listed["addresses"].values():
        assert all(ipaddress.ip_address(a) in ipaddress.ip_network("127.0.0.0/8")
                   for a in addrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert conn.delete_server(server.id, wait=True, delete_ips=True, timeout=30)
    assert admin.servers() == []
    assert admin.ports() == []
    assert admin.floating_ips() == []


def test_multiple_networks_need_a_choice(five_clouds: SimCloudFixture) -> None:
    conn = five_clouds.connect("external_private")
    with pytest.raises(Exception, match="Multiple possible networks"):
        conn.compute.create_server(name="x", flavor_id="1",
                                   image_id=five_clouds.admin("external_private").images()[0]["id"])


def test_compute_floating_ip_api_is_gone_after_2_36(five_clouds: SimCloudFixture) -> None:
    """Today's nova removed os-floating-ips at 2.36: only pre-2.36 requests see it."""
    conn = five_clouds.connect("nova_floating")
    old = conn.compute.get("/os-floating-ips")
    assert old.status_code == 200
    new = conn.compute.get("/os-floating-ips", microversion="2.36")
    assert new.status_code == 404

"""The command (bad profile -> exit 2, two clouds in one process) and real-cloud error bodies."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import openstack.config
import openstack.connection
import pytest
import requests
import yaml

from tests.fixtures.ports import free_port
from tests.fixtures.simcloud import SimCloudFixture, cloud_profile

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nodepool_ng.cmd.simcloud", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize(("cloud", "field"), [
    ({"name": "x", "quota": {"cores": "many"}}, "clouds[0].quota.cores"),
    ({"name": "x", "address_model": "magic"}, "clouds[0].address_model"),
    ({"name": "x", "public_cidr": "10.0.0.0/16"}, "clouds[0].public_cidr"),
    ({"name": "x", "image_formats": ["qcow3"]}, "clouds[0].image_formats[0]"),
])
def test_bad_profile_is_one_line_naming_the_field(tmp_path: Path, cloud: dict[str, object],
                                                  field: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"clouds": [cloud]}))
    result = _run("--config", str(config), "--clouds-yaml", str(tmp_path / "c.yaml"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert field in result.stderr


def test_one_process_serves_two_clouds_and_its_clouds_yaml_works(tmp_path: Path) -> None:
    profile = {"clouds": [cloud_profile("one", port=free_port(), images=[{"name": "cirros"}]),
                          cloud_profile("two", port=free_port(), address_model="floating",
                                        image_formats=["raw"], images=[{"name": "cirros"}])]}
    config = tmp_path / "simcloud.yaml"
    config.write_text(yaml.safe_dump(profile))
    clouds_yaml = tmp_path / "clouds.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodepool_ng.cmd.simcloud", "--config", str(config),
         "--clouds-yaml", str(clouds_yaml)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not clouds_yaml.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        config_ = openstack.config.OpenStackConfig(
            config_files=[str(clouds_yaml)], vendor_files=[], load_envvars=False)
        for name, fmt in (("one", "qcow2"), ("two", "raw")):
            conn = openstack.connection.Connection(config=config_.get_one(cloud=name))
            server = conn.create_server(f"n-{name}", image="cirros", flavor="small",
                                        auto_ip=True, wait=True, timeout=30)
            assert conn.get_server(server.id).public_v4.startswith("127.")
            assert conn.config.config["image_format"] == fmt
            conn.close()
        listing = _run("inspect", "--url", f"http://127.0.0.1:{profile['clouds'][1]['port']}",
                       "floating-ips")
        assert listing.returncode == 0 and '"address": "127.' in listing.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_error_bodies_look_like_openstack(tmp_path: Path) -> None:
    with SimCloudFixture({"clouds": [cloud_profile("c", address_model="floating")]},
                         directory=tmp_path) as cloud:
        base = cloud.url("c")
        bad = requests.post(f"{base}/identity/v3/auth/tokens", json={"auth": {"identity": {
            "methods": ["password"], "password": {"user": {
                "name": "demo", "password": "wrong", "domain": {"name": "Default"}}}}}})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == 401
        assert requests.get(f"{base}/compute/v2.1/servers").status_code == 401
        conn = cloud.connect("c")
        token = conn.session.get_token()
        h = {"X-Auth-Token": token}
        r = requests.post(f"{base}/compute/v2.1/servers", data=b"{not json", headers=h)
        assert r.status_code == 400 and "badRequest" in r.json()
        r = requests.post(f"{base}/compute/v2.1/servers", json={"server": {
            "name": "x", "flavorRef": "99", "imageRef": "nope"}}, headers=h)
        assert r.json() == {"badRequest": {"message": "Flavor 99 could not be found.",
                                           "code": 400}}
        r = requests.get(f"{base}/compute/v2.1/servers/nope", headers=h)
        assert r.status_code == 404 and "itemNotFound" in r.json()
        r = requests.get(f"{base}/network/v2.0/networks/nope", headers=h)
        assert r.status_code == 404 and r.json()["NeutronError"]["type"] == "NetworkNotFound"
        r = requests.post(f"{base}/network/v2.0/floatingips", json={"floatingip": {}},
                          headers=h)
        assert r.status_code == 404 and "NeutronError" in r.json()
        r = requests.post(f"{base}/image/v2/images", json={"disk_format": "vhd"}, headers=h)
        assert r.status_code == 400 and "disk_format" in r.text

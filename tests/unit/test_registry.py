"""The driver registry: every `driver:` value resolves to one entry; validating a config does
not import the cloud client libraries; unknown drivers are config errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nodepool_ng.config.loader import config_from_dicts
from nodepool_ng.drivers import registry
from nodepool_ng.errors import ConfigError


def test_every_listed_driver_has_its_entry() -> None:
    assert set(registry.names()) == {"openstack", "static", "aws"}
    for name in registry.names():
        entry = registry.get(name)
        assert entry.name == name
    assert registry.get("static").launches_servers is False
    assert registry.get("static").make_image_adapter is None
    assert registry.get("aws").upload_diskimage_arg is True
    assert registry.find("gce") is None and registry.find(None) is None
    with pytest.raises(KeyError):
        registry.get("gce")


def test_validating_the_aws_example_imports_no_cloud_sdk() -> None:
    code = (
        "import sys\n"
        "from nodepool_ng.config.loader import load_config\n"
        "c = load_config('etc/nodepool-aws-example.yaml')\n"
        "assert {p.driver for p in c.providers.values()} == {'openstack', 'aws'}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('boto3', 'botocore', 'openstack'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def _config(provider: dict) -> dict:
    return {"labels": [{"name": "small"}], "providers": [provider]}


def test_aws_provider_builds_through_the_registry() -> None:
    config = config_from_dicts(_config({
        "name": "ec2", "driver": "aws", "region-name": "us-east-1",
        "cloud-images": [{"name": "u", "image-id": "ami-1", "username": "ubuntu"}],
        "pools": [{"name": "main", "labels": [
            {"name": "small", "cloud-image": "u", "instance-type": "t3.small",
             "key-name": "k"}]}],
    }))
    provider = config.providers["ec2"]
    assert type(provider).__name__ == "AwsProviderConfig"
    assert provider.launches_servers and provider.label_names == {"small"}


@pytest.mark.parametrize(("pool_label", "path"), [
    ({"name": "nope", "cloud-image": "u"}, "providers[0].pools[0].labels[0].name"),
    ({"name": "small", "cloud-image": "missing"}, "providers[0].pools[0].labels[0].cloud-image"),
])
def test_aws_reference_errors_carry_the_full_path(pool_label: dict, path: str) -> None:
    raw = _config({
        "name": "ec2", "driver": "aws", "region-name": "us-east-1",
        "cloud-images": [{"name": "u", "image-id": "ami-1", "username": "ubuntu"}],
        "pools": [{"name": "main", "labels": [
            {**pool_label, "instance-type": "t3.small", "key-name": "k"}]}],
    })
    with pytest.raises(ConfigError) as exc:
        config_from_dicts(raw)
    assert str(exc.value).startswith(path + ":"), str(exc.value)


def test_unknown_driver_lists_the_registry() -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dicts(_config({"name": "x", "driver": "gce"}))
    assert str(exc.value) == (
        "providers[0].driver: unknown driver 'gce' (supported: aws, openstack, static)")

"""The aws provider schema and models: an upstream-style config builds with upstream's
defaults; bad keys are errors naming the path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nodepool_ng.config.schema import check, provider_errors
from nodepool_ng.drivers.aws.config import (
    PROVIDER_SCHEMA,
    AwsIamInstanceProfile,
    AwsImageFilter,
    build_provider,
    check_references,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "etc" / "nodepool-aws-example.yaml"


def example() -> dict[str, Any]:
    return dict(yaml.safe_load(EXAMPLE.read_text()))


def aws_raw() -> dict[str, Any]:
    return next(p for p in example()["providers"] if p.get("driver") == "aws")


def errors(raw: dict[str, Any]) -> list[tuple[str, str]]:
    return check(PROVIDER_SCHEMA, raw, ("providers", 1))


def test_example_config_builds():
    config = example()
    assert provider_errors(0, config["providers"][0]) == []  # the openstack one
    raw = aws_raw()
    assert errors(raw) == [] and check_references(raw) == []
    p = build_provider(PROVIDER_SCHEMA(raw))
    assert (p.name, p.driver, p.region_name, p.rate) == ("aws-us-east-1", "aws", "us-east-1",
                                                         2.0)
    assert (p.boot_timeout, p.launch_timeout, p.launch_retries) == (180, 600, 3)
    noble = p.cloud_image("ubuntu-noble")
    assert noble is not None and noble.image_id is None
    assert noble.image_filters is not None and noble.image_filters[1] == AwsImageFilter(
        "owner-id", ("099720109477",))
    assert noble.connection_port == 22 and noble.python_path == "/usr/bin/python3"
    di = p.diskimage("debian-bookworm")
    assert di is not None and di.import_method == "snapshot" and di.tags == {"cost-center": "ci"}
    main = p.pool("main")
    assert (main.max_servers, main.max_cores, main.subnet_id) == (50, 200,
                                                                  "subnet-0123456789abcdef0")
    assert main.public_ipv4 and not main.public_ipv6 and not main.use_internal_ip
    assert main.node_attributes == {"cloud": "aws"}
    label = p.label("main", "ubuntu-noble")
    assert (label.instance_type, label.volume_size, label.imdsv2) == ("t3.large", 40,
                                                                      "required")
    assert label.dynamic_tags == {"tenant": "{request.tenant_name}"}
    large = p.label("main", "ubuntu-noble-large")
    assert large.use_spot and large.iam_instance_profile == AwsIamInstanceProfile(
        name="nodepool-ci")
    assert p.label_names == {"ubuntu-noble", "ubuntu-noble-large", "debian-bookworm",
                             "debian-bookworm-arm64"}
    assert [pool.name for pool in p.pools_for_label("debian-bookworm-arm64")] == ["arm"]
    assert main.quota_limits().get("instances") == 50
    assert build_provider(PROVIDER_SCHEMA(aws_raw())) == p  # reload diff is plain ==


def test_upstream_defaults():
    raw = {"name": "a", "driver": "aws", "region-name": "eu-west-1",
           "cloud-images": [{"name": "c", "image-id": "ami-1", "username": "u",
                             "connection-type": "winrm"}],
           "pools": [{"name": "p", "labels": [{"name": "l", "cloud-image": "c",
                                               "instance-type": "t3.micro", "key-name": "k"}]}]}
    p = build_provider(PROVIDER_SCHEMA(raw))
    assert (p.boot_timeout, p.launch_timeout, p.launch_retries, p.rate) == (180, 3600, 3, 2.0)
    assert p.cloud_images[0].connection_port == 5986  # winrm's default port
    pool = p.pools[0]
    assert pool.max_servers is None and pool.public_ipv4 and pool.host_key_checking
    label = pool.labels[0]
    assert not label.use_spot and label.imdsv2 is None and label.volume_size is None


def test_legacy_public_ip_address_key():
    raw = aws_raw()
    raw["pools"][0]["public-ip-address"] = False
    del raw["pools"][0]["public-ipv4"]
    assert build_provider(PROVIDER_SCHEMA(raw)).pool("main").public_ipv4 is False


@pytest.mark.parametrize(("change", "path", "message"), [
    (lambda r: r["pools"][0]["labels"][1].update({"flavor-name": "x"}),
     "providers[1].pools[0].labels[1].flavor-name", "unknown key"),
    (lambda r: r["pools"][0]["labels"][0].pop("instance-type"),
     "providers[1].pools[0].labels[0].instance-type", "required key not provided"),
    (lambda r: r["pools"][0]["labels"][0].update({"imdsv2": "yes"}),
     "providers[1].pools[0].labels[0].imdsv2", "expected required or optional"),
    (lambda r: r["pools"][0]["labels"][0].update({"diskimage": "debian-bookworm"}),
     "providers[1].pools[0].labels[0].diskimage", "give cloud-image or diskimage, not both"),
    (lambda r: r["pools"][0]["labels"][1].update({"iam-instance-profile": {"name": "a",
                                                                            "arn": "b"}}),
     "providers[1].pools[0].labels[1].iam-instance-profile", "give exactly one of name or arn"),
    (lambda r: r["pools"][1].update({"max-servers": "ten"}),
     "providers[1].pools[1].max-servers", "expected int"),
    (lambda r: r["cloud-images"][1].pop("image-id"),
     "providers[1].cloud-images[1].image-id", "required: image-id or image-filters"),
    (lambda r: r["cloud-images"][0]["image-filters"][0].pop("values"),
     "providers[1].cloud-images[0].image-filters[0].values", "required key not provided"),
    (lambda r: r["diskimages"][0].update({"import-method": "image"}),
     "providers[1].diskimages[0].import-method", "expected snapshot or ebs-direct"),
    (lambda r: r.pop("region-name"), "providers[1].region-name", "required key not provided"),
    (lambda r: r.update({"cloud": "mycloud"}), "providers[1].cloud", "unknown key"),
    (lambda r: r.update({"rate": 0}), "providers[1].rate", "must be greater than 0"),
])
def test_bad_keys_name_the_path(change, path, message):
    raw = aws_raw()
    change(raw)
    found = errors(raw)
    assert found and found[0][0] == path, found
    assert found[0][1].startswith(message)


def test_references_to_missing_images():
    raw = aws_raw()
    raw["pools"][0]["labels"][0]["cloud-image"] = "nope"
    raw["pools"][0]["labels"][2]["diskimage"] = "nope"
    assert errors(raw) == []
    assert check_references(raw) == [
        ("pools[0].labels[0].cloud-image", "no cloud-images entry named 'nope'"),
        ("pools[0].labels[2].diskimage", "no diskimages entry named 'nope' in this provider"),
    ]

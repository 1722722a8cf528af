"""nodepool_ng.config: the one loading path, its defaults, errors (with paths) and reloads."""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Any

import pytest
import voluptuous as v
import yaml

from nodepool_ng.config import (
    Config,
    ConfigError,
    ConfigErrors,
    ConfigWatcher,
    load_config,
    validate_file,
)
from nodepool_ng.config import schema as config_schema
from nodepool_ng.model.quota import Quota

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "tests" / "fixtures" / "configs"
FULL = CONFIGS / "full.yaml"
MINIMAL = CONFIGS / "minimal.yaml"
NO_ENV: dict[str, str] = {}


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def raw(fixture: Path) -> dict[str, Any]:
    return yaml.safe_load(fixture.read_text())


def load_dict(tmp_path: Path, data: dict[str, Any], secure: Any = None) -> Config:
    secure_path = write(tmp_path / "secure.yaml", secure) if secure is not None else None
    return load_config(write(tmp_path / "nodepool.yaml", data), secure_path, env=NO_ENV)


# --- defaults and full config --------------------------------------------------------------


def test_minimal_config_defaults() -> None:
    config = load_config(MINIMAL, env=NO_ENV)
    assert config.webapp.port == 8005
    assert config.webapp.listen_address == "0.0.0.0"
    assert config.elements_dir is None and config.images_dir is None
    assert config.build_log_dir == "/var/log/nodepool/builds"
    assert config.build_log_retention == 7
    assert config.zookeeper_timeout == 10.0
    assert config.zookeeper_tls is None
    assert config.max_hold_age is None
    assert config.tenant_resource_limits == {}
    assert config.diskimages == {}
    assert config.zookeeper_servers[0].port == 2281
    assert config.zookeeper_servers[0].chroot is None
    assert config.zookeeper_hosts() == "127.0.0.1:2281"

    label = config.labels["small"]
    assert (label.min_ready, label.max_ready_age) == (0, 0)

    provider = config.providers["cloud1"]
    assert provider.driver == "openstack"
    assert provider.cloud == "devstack"
    assert provider.region_name is None
    assert provider.boot_timeout == 60
    assert provider.launch_timeout == 3600
    assert provider.launch_retries == 3
    assert provider.image_upload_timeout == 3600
    assert provider.rate == 1.0 and provider.rate_limit == 1.0
    assert provider.max_concurrency == -1
    assert provider.priority == 100
    assert provider.image_name_format == "{image_name}-{timestamp}"
    assert provider.clean_floating_ips is False
    assert provider.port_cleanup_interval == 600
    assert provider.post_upload_hook is None
    assert provider.diskimages == ()

    pool = provider.pool("main")
    assert pool.max_servers is None
    assert pool.max_cores is None and pool.max_ram is None
    assert pool.max_volumes is None and pool.max_volume_gb is None
    assert pool.ignore_provider_quota is False
    assert pool.availability_zones == () and pool.networks == () and pool.security_groups == ()
    assert pool.auto_floating_ip is True
    assert pool.host_key_checking is True
    assert pool.node_attributes == {}
    assert pool.priority is None and provider.pool_priority(pool) == 100
    assert math.isinf(pool.quota_limits().get("instances"))

    pool_label = pool.label("small")
    assert pool_label is not None
    assert pool_label.cloud_image == "debian" and pool_label.diskimage is None
    assert pool_label.min_ram == 1024 and pool_label.flavor_name is None
    assert pool_label.key_name is None
    assert pool_label.console_log is False
    assert pool_label.boot_from_volume is False
    assert pool_label.volume_size == 50
    assert pool_label.instance_properties == {}
    assert pool_label.dynamic_instance_properties == {}
    assert pool_label.userdata is None
    assert pool_label.networks is None and pool.networks_for(pool_label) == ()
    assert pool_label.host_key_checking is None and pool.host_key_checking_for(pool_label)

    image = provider.cloud_image("debian")
    assert image is not None
    assert (image.image_id, image.image_name, image.external_name) == (None, None, "debian")
    assert image.config_drive is None and image.username is None
    assert image.python_path == "auto" and image.shell_type is None
    assert (image.connection_type, image.connection_port) == ("ssh", 22)


def test_diskimage_and_provider_diskimage_defaults(tmp_path: Path) -> None:
    data = raw(MINIMAL)
    data["diskimages"] = [{"name": "img", "elements": ["debian-minimal"]}]
    data["providers"][0]["diskimages"] = [
        {"name": "img"},
        # winrm images default to the winrm port
    ]
    config = load_dict(tmp_path, data)
    image = config.diskimages["img"]
    assert image.elements == ("debian-minimal",) and image.elements_str == "debian-minimal"
    assert image.parent is None
    assert image.release == ""
    assert image.env_vars == {}
    assert image.formats == () and image.keep_formats == ()
    assert image.delete_after_upload is False
    assert image.rebuild_age == 86400
    assert image.build_timeout == 28800
    assert image.dib_cmd == "disk-image-create"
    assert image.pause is False
    assert image.username == "zuul"
    assert image.python_path == "auto"
    assert image.shell_type is None
    assert image.metadata == {}
    provider_image = config.providers["cloud1"].diskimage("img")
    assert provider_image is not None
    assert provider_image.pause is False and provider_image.meta == {}
    assert provider_image.config_drive is None
    assert (provider_image.connection_type, provider_image.connection_port) == ("ssh", 22)


def test_full_config_values() -> None:
    config = load_config(FULL, env=NO_ENV)
    assert config.webapp.port == 8080 and config.webapp.listen_address == "127.0.0.1"
    assert config.build_log_retention == 3
    assert config.zookeeper_timeout == 30.0
    assert config.max_hold_age == 86400
    assert config.zookeeper_tls is not None and config.zookeeper_tls.ca.endswith("ca.pem")
    assert config.zookeeper_hosts() == "zk1.example.org:2181,[2001:db8::1]:2281/nodepool"

    tenant = config.tenant_resource_limits["tenant-a"]
    assert tenant.quota() == Quota.limits(
        cores=100, instances=20, ram=204800, volumes=10, **{"volume-gb": 500, "gpus": 2}
    )

    provider = config.providers["cloud1"]
    assert provider.region_name == "RegionOne"
    assert (provider.boot_timeout, provider.launch_timeout) == (120, 900)
    assert (provider.launch_retries, provider.image_upload_timeout) == (5, 1800)
    assert provider.rate == 0.5 and provider.rate_limit == 2.0
    assert (provider.max_concurrency, provider.priority) == (10, 50)
    assert provider.image_name_format == "{image_name}-{upload_id}"
    assert provider.clean_floating_ips is True
    assert provider.port_cleanup_interval == 0
    assert provider.post_upload_hook == "/usr/local/bin/post-upload"
    assert provider.label_names == {"debian-small", "debian-large", "windows"}
    assert [p.name for p in provider.pools_for_label("windows")] == ["windows"]
    assert [p.name for p in config.providers_for_label("debian-small")] == ["cloud1", "cloud2"]

    pool = provider.pool("main")
    assert (pool.max_servers, pool.max_cores, pool.max_ram) == (10, 40, 81920)
    assert (pool.max_volumes, pool.max_volume_gb) == (5, 250)
    assert pool.ignore_provider_quota is True
    assert pool.availability_zones == ("az1", "az2")
    assert pool.security_groups == ("default", "ci")
    assert pool.auto_floating_ip is False and pool.host_key_checking is False
    assert pool.node_attributes == {"key1": "value1", "nested": {"a": 1}}
    assert provider.pool_priority(pool) == 10
    assert pool.quota_limits() == Quota.limits(
        cores=40, instances=10, ram=81920, volumes=5, **{"volume-gb": 250}
    )

    small = pool.label("debian-small")
    assert small is not None
    assert small.diskimage == "debian-bookworm" and small.flavor_name == "m1.small"
    assert small.key_name == "ci-key" and small.console_log is True
    assert small.userdata == "#cloud-config\n"
    assert small.instance_properties == {"team": "infra"}
    assert small.dynamic_instance_properties == {"tenant": "{request.tenant_name}"}
    assert pool.networks_for(small) == ("private",)
    assert pool.host_key_checking_for(small) is False

    large = pool.label("debian-large")
    assert large is not None
    assert (large.min_ram, large.flavor_name) == (8192, "large")
    assert large.boot_from_volume is True and large.volume_size == 80
    assert pool.networks_for(large) == ("public",)
    assert pool.host_key_checking_for(large) is True

    pdi = provider.diskimage("debian-bookworm")
    assert pdi is not None
    assert pdi.pause is True and pdi.meta == {"hw_disk_bus": "scsi"}
    assert pdi.config_drive is True and pdi.connection_port == 2222

    windows = provider.cloud_image("windows-2022")
    assert windows is not None
    assert windows.external_name == windows.image_id
    assert (windows.connection_type, windows.connection_port) == ("winrm", 5986)
    assert windows.username == "Administrator" and windows.shell_type == "cmd"
    stock = provider.cloud_image("debian-stock")
    assert stock is not None and stock.external_name == "Debian 12"

    image = config.diskimages["debian-bookworm"]
    assert image.formats == ("qcow2", "raw") and image.keep_formats == ("qcow2",)
    assert image.delete_after_upload is True
    assert image.build_timeout == 7200
    assert image.dib_cmd == "%p/tools/fake-dib"
    assert image.python_path == "/usr/bin/python3" and image.shell_type == "bash"
    assert image.metadata == {"os": "debian", "ssd": True}


def _schema_keys(node: Any) -> set[str]:
    if isinstance(node, v.Schema):
        node = node.schema
    return {
        str(k.schema if isinstance(k, v.Marker) else k)
        for k in node
        if isinstance(k, str | v.Marker)
    }


def _yaml_keys(items: list[dict[str, Any]]) -> set[str]:
    return {key for item in items for key in item}


def test_full_fixture_exercises_every_schema_key() -> None:
    data = raw(FULL)
    providers = data["providers"]
    pools = [pool for p in providers for pool in p["pools"]]
    sections = [
        (config_schema.TOP_LEVEL, [data]),
        (config_schema.LABEL, data["labels"]),
        (config_schema.DISKIMAGE, data["diskimages"]),
        (config_schema.ZOOKEEPER_SERVER, data["zookeeper-servers"]),
        (config_schema.ZOOKEEPER_TLS, [data["zookeeper-tls"]]),
        (config_schema.TENANT_RESOURCE_LIMIT, data["tenant-resource-limits"]),
        (config_schema.OPENSTACK_PROVIDER, providers),
        (config_schema.OPENSTACK_POOL, pools),
        (config_schema.OPENSTACK_POOL_LABEL, [lb for pool in pools for lb in pool["labels"]]),
        (
            config_schema.OPENSTACK_PROVIDER_DISKIMAGE,
            [i for p in providers for i in p.get("diskimages", [])],
        ),
        (
            config_schema.OPENSTACK_CLOUD_IMAGE,
            [i for p in providers for i in p.get("cloud-images", [])],
        ),
    ]
    for section, items in sections:
        missing = _schema_keys(section) - _yaml_keys(items)
        assert not missing, f"full.yaml does not use {sorted(missing)}"


def test_operator_example_config_loads() -> None:
    config = load_config(ROOT / "etc" / "nodepool.yaml", env=NO_ENV)
    assert config.providers and config.labels
    assert validate_file(ROOT / "etc" / "nodepool.yaml", env=NO_ENV) == []


def test_reload_of_same_file_is_equal() -> None:
    assert load_config(FULL, env=NO_ENV) == load_config(FULL, env=NO_ENV)


# --- environment substitution ------------------------------------------------------------


def test_env_substitution(tmp_path: Path) -> None:
    text = MINIMAL.read_text().replace("cloud: devstack", "cloud: '%(NODEPOOL_CLOUD)'")
    text += "elements-dir: '%(HOME)/elements'\n"
    path = write(tmp_path / "nodepool.yaml", text)
    config = load_config(path, env={"NODEPOOL_CLOUD": "from-env", "HOME": "/root"})
    assert config.providers["cloud1"].cloud == "from-env"
    # Only NODEPOOL_ variables are substituted, as upstream.
    assert config.elements_dir == "%(HOME)/elements"


def test_env_substitution_unknown_variable(tmp_path: Path) -> None:
    text = MINIMAL.read_text().replace("cloud: devstack", "cloud: '%(NODEPOOL_NOPE)'")
    text = "# example: %(NODEPOOL_IN_A_COMMENT)\n" + text
    path = write(tmp_path / "nodepool.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"NODEPOOL_CLOUD": "x"})
    assert "NODEPOOL_NOPE is not set" in str(exc.value)
    line = text.splitlines().index("    cloud: '%(NODEPOOL_NOPE)'") + 1
    assert f"{path} line {line}: " in str(exc.value)
    assert "IN_A_COMMENT" not in str(exc.value)


def test_env_defaults_to_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODEPOOL_TEST_CLOUD", "process-env")
    text = MINIMAL.read_text().replace("cloud: devstack", "cloud: '%(NODEPOOL_TEST_CLOUD)'")
    config = load_config(write(tmp_path / "nodepool.yaml", text))
    assert config.providers["cloud1"].cloud == "process-env"


# --- secure file -------------------------------------------------------------------------


def _with_diskimages(data: dict[str, Any]) -> dict[str, Any]:
    data["diskimages"] = [
        {"name": "base", "abstract": True, "elements": ["a"], "env-vars": {"X": "base"}},
        {"name": "img", "parent": "base", "elements": ["b"], "env-vars": {"PUBLIC": "1"}},
    ]
    return data


def test_secure_file_merge(tmp_path: Path) -> None:
    data = _with_diskimages(raw(MINIMAL))
    secure = {
        "zookeeper-servers": [{"host": "::1", "port": 2182, "chroot": "secret"}],
        "zookeeper-tls": {"cert": "c", "key": "k", "ca": "a"},
        "diskimages": [{"name": "img", "env-vars": {"PASSWORD": "s3cret", "PUBLIC": "2"}}],
    }
    config = load_dict(tmp_path, data, secure)
    assert config.zookeeper_hosts() == "[::1]:2182/secret"  # replaced, not appended
    assert config.zookeeper_tls is not None and config.zookeeper_tls.cert == "c"
    assert config.diskimages["img"].env_vars == {"X": "base", "PUBLIC": "2", "PASSWORD": "s3cret"}


def test_secure_file_empty_or_partial(tmp_path: Path) -> None:
    data = raw(MINIMAL)
    assert load_dict(tmp_path, data, "").zookeeper_hosts() == "127.0.0.1:2281"
    config = load_dict(tmp_path, data, {"zookeeper-tls": {"cert": "c", "key": "k", "ca": "a"}})
    assert config.zookeeper_hosts() == "127.0.0.1:2281"
    assert config.zookeeper_tls is not None


@pytest.mark.parametrize(
    ("secure", "expected"),
    [
        (
            {"diskimages": [{"name": "nope", "env-vars": {}}]},
            "diskimages[0].name: unknown diskimage 'nope' (in secure file",
        ),
        (
            {"diskimages": [{"name": "base", "env-vars": {}}]},
            "diskimages[0].name: diskimage 'base' is abstract",
        ),
        ({"labels": []}, "labels: unknown key (in secure file"),
        (
            {"zookeeper-tls": {"cert": "c", "key": "k"}},
            "zookeeper-tls.ca: required key not provided (in secure file",
        ),
        (
            {"diskimages": [{"name": "img", "env-vars": {"N": 1}}]},
            "diskimages[0].env-vars.N: expected str (in secure file",
        ),
    ],
)
def test_secure_file_is_validated(tmp_path: Path, secure: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_dict(tmp_path, _with_diskimages(raw(MINIMAL)), secure)
    assert str(exc.value).startswith(expected), str(exc.value)


# --- diskimage inheritance --------------------------------------------------------------


def test_diskimage_inheritance(tmp_path: Path) -> None:
    data = raw(MINIMAL)
    data["diskimages"] = [
        {
            "name": "root",
            "abstract": True,
            "elements": ["vm"],
            "env-vars": {"A": "root", "B": "root"},
            "rebuild-age": 100,
            "release": "old",
            "pause": True,
        },
        {
            "name": "mid",
            "abstract": True,
            "parent": "root",
            "elements": ["debian"],
            "env-vars": {"B": "mid"},
            "release": 12,
        },
        {"name": "leaf", "parent": "mid", "elements": ["extra"], "pause": False},
        {"name": "sibling", "parent": "root", "username": "other"},
    ]
    config = load_dict(tmp_path, data)
    assert set(config.diskimages) == {"leaf", "sibling"}  # abstract images are not built
    leaf = config.diskimages["leaf"]
    assert leaf.elements == ("vm", "debian", "extra")
    assert leaf.env_vars == {"A": "root", "B": "mid"}
    assert leaf.release == "12"
    assert leaf.rebuild_age == 100
    assert leaf.pause is False
    assert leaf.parent == "mid"
    sibling = config.diskimages["sibling"]
    assert sibling.elements == ("vm",) and sibling.username == "other"
    assert sibling.pause is True and sibling.release == "old"


# --- errors, each with its exact path ------------------------------------------------------


def _two_providers() -> dict[str, Any]:
    """Like the example in the spec: providers[1].pools[0].labels[2]."""
    data = raw(FULL)
    cloud2 = data["providers"][1]
    cloud2["pools"][0]["labels"] += [
        {"name": "debian-large", "cloud-image": "debian-stock", "min-ram": 1},
        {"name": "windows", "cloud-image": "debian-stock", "flavor-name": "x"},
    ]
    return data


def _set(path: str, value: Any) -> Any:
    """A mutation setting `a.b[0].c` (value `DELETE` removes the key)."""

    def mutate(data: dict[str, Any]) -> None:
        parts = path.replace("]", "").replace("[", ".").split(".")
        node: Any = data
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if value is DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


DELETE = object()
PL = "providers.1.pools.0.labels.2"


ERROR_CASES = [
    (
        _set(f"{PL}.flavor-name", DELETE),
        "providers[1].pools[0].labels[2].flavor-name: required key not provided",
    ),
    (_set("labels.0.min-ready", "two"), "labels[0].min-ready: expected int"),
    (_set("labels.0.min-ready", True), "labels[0].min-ready: expected int"),
    (
        _set("providers.0.driver", "gce"),  # aws is a driver since the registry (issue 9)
        "providers[0].driver: unknown driver 'gce' (supported: aws, openstack, static)",
    ),
    (_set("providers.0.cloud", DELETE), "providers[0].cloud: required key not provided"),
    (_set("providers.0.name", DELETE), "providers[0].name: required key not provided"),
    (_set("providers.0.pools.0.bogus", 1), "providers[0].pools[0].bogus: unknown key"),
    (_set("bogus", 1), "bogus: unknown key"),
    (_set("providers.0.rate", 0), "providers[0].rate: must be greater than 0"),
    (_set("providers.0.boot-timeout", "60"), "providers[0].boot-timeout: expected int"),
    (
        _set("providers.0.pools.0.auto-floating-ip", "yes"),
        "providers[0].pools[0].auto-floating-ip: expected bool",
    ),
    (
        _set("providers.0.pools.0.labels.0.instance-properties", {"a": 1}),
        "providers[0].pools[0].labels[0].instance-properties.a: expected str",
    ),
    (_set("providers.0.pools", {"name": "x"}), "providers[0].pools: expected a list"),
    (
        _set("zookeeper-servers.0.host", DELETE),
        "zookeeper-servers[0].host: required key not provided",
    ),
    (_set("zookeeper-tls.ca", DELETE), "zookeeper-tls.ca: required key not provided"),
    (_set("webapp.port", "80"), "webapp.port: expected int"),
    (_set("diskimages.1.release", 1.5), "diskimages[1].release: expected str or int"),
    (
        _set(f"{PL}.name", "nope"),
        "providers[1].pools[0].labels[2].name: unknown label 'nope' (not in labels)",
    ),
    (
        _set("providers.0.pools.0.labels.0.diskimage", "nope"),
        "providers[0].pools[0].labels[0].diskimage: unknown diskimage 'nope'",
    ),
    (
        _set("providers.0.pools.0.labels.0.diskimage", "base"),
        "providers[0].pools[0].labels[0].diskimage: diskimage 'base' is abstract",
    ),
    (
        _set("providers.0.diskimages", []),
        "providers[0].pools[0].labels[0].diskimage: diskimage 'debian-bookworm' is not in "
        "providers[0].diskimages",
    ),
    (
        _set("providers.0.pools.0.labels.0.cloud-image", "debian-stock"),
        "providers[0].pools[0].labels[0].cloud-image: diskimage and cloud-image are mutually "
        "exclusive",
    ),
    (
        _set(f"{PL}.cloud-image", DELETE),
        "providers[1].pools[0].labels[2].diskimage: required key not provided",
    ),
    (
        _set(f"{PL}.cloud-image", "nope"),
        "providers[1].pools[0].labels[2].cloud-image: unknown cloud-image 'nope' "
        "(not in providers[1].cloud-images)",
    ),
    (_set("providers.1.cloud-images.0.image-id", "abc"), None),  # valid alone
    (
        _set("providers.0.cloud-images.1.image-id", "abc"),
        "providers[0].cloud-images[1].image-name: image-id and image-name are mutually exclusive",
    ),
    (
        _set("providers.0.diskimages.0.name", "nope"),
        "providers[0].diskimages[0].name: unknown diskimage 'nope'",
    ),
    (
        _set("providers.0.diskimages.0.meta", {f"k{i}": "v" for i in range(6)}),
        "providers[0].diskimages[0].meta: at most 5 items",
    ),
    (_set("labels.1.name", "debian-small"), "labels[1].name: duplicate label 'debian-small'"),
    (_set("providers.1.name", "cloud1"), "providers[1].name: duplicate provider 'cloud1'"),
    (_set("providers.0.pools.1.name", "main"), "providers[0].pools[1].name: duplicate pool 'main'"),
    (
        _set(f"{PL}.name", "debian-small"),
        "providers[1].pools[0].labels[2].name: duplicate label 'debian-small'",
    ),
    (
        _set("providers.0.cloud-images.1.name", "windows-2022"),
        "providers[0].cloud-images[1].name: duplicate cloud-image 'windows-2022'",
    ),
    (_set("diskimages.1.name", "base"), "diskimages[1].name: duplicate diskimage 'base'"),
    (_set("diskimages.1.parent", "nope"), "diskimages[1].parent: unknown diskimage 'nope'"),
]


@pytest.mark.parametrize(("mutate", "expected"), ERROR_CASES)
def test_error_names_exact_path(tmp_path: Path, mutate: Any, expected: str | None) -> None:
    data = _two_providers()
    mutate(data)
    if expected is None:
        load_dict(tmp_path, data)
        return
    with pytest.raises(ConfigError) as exc:
        load_dict(tmp_path, data)
    assert str(exc.value).startswith(expected), str(exc.value)
    assert exc.value.path == expected.split(": ")[0]


def test_diskimage_parent_unknown_at_index_2(tmp_path: Path) -> None:
    data = raw(MINIMAL)
    data["diskimages"] = [
        {"name": "a", "elements": ["x"]},
        {"name": "b", "elements": ["x"]},
        {"name": "c", "parent": "base", "elements": ["x"]},
    ]
    with pytest.raises(ConfigError) as exc:
        load_dict(tmp_path, data)
    assert str(exc.value) == "diskimages[2].parent: unknown diskimage 'base'"


def test_diskimage_without_elements(tmp_path: Path) -> None:
    data = raw(MINIMAL)
    data["diskimages"] = [
        {"name": "base", "abstract": True, "env-vars": {"A": "1"}},
        {"name": "img", "parent": "base"},
        {"name": "ok", "parent": "base", "elements": ["x"]},
    ]
    with pytest.raises(ConfigErrors) as exc:
        load_dict(tmp_path, data)
    assert exc.value.errors == [
        "diskimages[1].elements: diskimage 'img' has no elements (own or inherited)"
    ]


def test_diskimage_inheritance_cycle(tmp_path: Path) -> None:
    data = raw(MINIMAL)
    data["diskimages"] = [
        {"name": "a", "parent": "b", "elements": ["x"]},
        {"name": "b", "parent": "a"},
        {"name": "self", "parent": "self"},
    ]
    with pytest.raises(ConfigErrors) as exc:
        load_dict(tmp_path, data)
    assert exc.value.errors == [
        "diskimages[0].parent: inheritance cycle: a -> b -> a",
        "diskimages[1].parent: inheritance cycle: b -> a -> b",
        "diskimages[2].parent: inheritance cycle: self -> self",
    ]


def test_all_errors_are_listed(tmp_path: Path) -> None:
    data = copy.deepcopy(_two_providers())
    data["labels"][0]["min-ready"] = "x"
    data["providers"][0]["launch-retries"] = "x"
    errors = validate_file(write(tmp_path / "nodepool.yaml", data), env=NO_ENV)
    assert "labels[0].min-ready: expected int" in errors
    assert "providers[0].launch-retries: expected int" in errors


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "nodepool.yaml", "labels:\n  - name: a\n  bad: [\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env=NO_ENV)
    assert str(exc.value).startswith(f"{path}: invalid YAML at line ")
    assert "column" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("- a\n- b\n", "expected a mapping at the top level"), ("", None)],
)
def test_top_level_shape(tmp_path: Path, text: str, expected: str | None) -> None:
    path = write(tmp_path / "nodepool.yaml", text)
    if expected is None:
        assert load_config(path, env=NO_ENV) == Config()
    else:
        with pytest.raises(ConfigError, match=expected):
            load_config(path, env=NO_ENV)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", env=NO_ENV)
    assert validate_file(tmp_path / "missing.yaml") == [
        f"config file {str(tmp_path / 'missing.yaml')!r} does not exist"
    ]


def test_validate_file_good() -> None:
    assert validate_file(FULL, env=NO_ENV) == []
    assert validate_file(MINIMAL, None, env=NO_ENV) == []


def test_label_lookups_and_missing_pool() -> None:
    provider = load_config(FULL, env=NO_ENV).providers["cloud1"]
    assert provider.pool("main").label("nope") is None
    assert provider.diskimage("nope") is None and provider.cloud_image("nope") is None
    with pytest.raises(KeyError, match="no pool 'nope'"):
        provider.pool("nope")


# --- watcher -----------------------------------------------------------------------------


def test_watcher_picks_up_change_and_keeps_unchanged_providers(tmp_path: Path) -> None:
    data = raw(FULL)
    path = write(tmp_path / "nodepool.yaml", data)
    watcher = ConfigWatcher(path, env=NO_ENV)
    first = watcher.load()
    assert watcher.check() is None  # nothing changed

    data["providers"][1]["boot-timeout"] = 300
    write(path, data)
    second = watcher.check()
    assert second is not None and watcher.config is second
    assert second.providers["cloud2"].boot_timeout == 300
    assert second.providers["cloud1"] == first.providers["cloud1"]
    assert second.providers["cloud2"] != first.providers["cloud2"]
    assert watcher.check() is None

    # Only a comment changed: same config, nothing to do.
    path.write_text("# a comment\n" + path.read_text())
    assert watcher.check() is None


def test_watcher_ignores_invalid_edit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = raw(MINIMAL)
    path = write(tmp_path / "nodepool.yaml", data)
    watcher = ConfigWatcher(path, env=NO_ENV)
    good = watcher.load()

    bad = copy.deepcopy(data)
    bad["labels"][0]["min-ready"] = "lots"
    write(path, bad)
    with caplog.at_level(logging.ERROR, logger="nodepool_ng.config"):
        assert watcher.check() is None
    assert watcher.config is good
    assert watcher.last_error is not None and watcher.last_error.path == "labels[0].min-ready"
    assert "labels[0].min-ready: expected int" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="nodepool_ng.config"):
        assert watcher.check() is None  # the same bad file is not re-reported
    assert caplog.text == ""

    os.remove(path)
    assert watcher.check() is None and watcher.config is good

    data["labels"][0]["min-ready"] = 3
    write(path, data)
    fixed = watcher.check()
    assert fixed is not None and fixed.labels["small"].min_ready == 3
    assert watcher.last_error is None


def test_watcher_ignores_an_emptied_file(tmp_path: Path) -> None:
    """A reload reading the file between truncate and write must not stop every provider."""
    path = write(tmp_path / "nodepool.yaml", raw(FULL))
    watcher = ConfigWatcher(path, env=NO_ENV)
    good = watcher.load()
    path.write_text("")
    assert watcher.check() is None and watcher.config is good
    data = raw(FULL)
    data["providers"][1]["boot-timeout"] = 300
    write(path, data)
    changed = watcher.check()
    assert changed is not None and changed.providers["cloud1"] == good.providers["cloud1"]


def test_watcher_secure_file_change(tmp_path: Path) -> None:
    path = write(tmp_path / "nodepool.yaml", raw(MINIMAL))
    secure = write(tmp_path / "secure.yaml", "")
    watcher = ConfigWatcher(path, secure, env=NO_ENV)
    assert watcher.check() is not None  # first check loads
    write(secure, {"zookeeper-servers": [{"host": "10.0.0.1"}]})
    changed = watcher.check()
    assert changed is not None and changed.zookeeper_hosts() == "10.0.0.1:2281"


# --- YAML details ------------------------------------------------------------------------


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    text = MINIMAL.read_text().replace("    cloud: devstack\n", "    cloud: a\n    cloud: b\n")
    path = write(tmp_path / "nodepool.yaml", text)
    line = text.splitlines().index("    cloud: b") + 1
    with pytest.raises(ConfigError) as exc:
        load_config(path, env=NO_ENV)
    assert str(exc.value) == f"{path}: invalid YAML at line {line}, column 5: duplicate key 'cloud'"


def test_yaml_merge_keys_and_empty_sections(tmp_path: Path) -> None:
    text = """
labels:
  - name: a
    min-ready: 1
  - name: b
diskimages:
providers:
  - name: p
    cloud: c
    cloud-images:
      - &img {name: img, username: ci}
      - <<: *img
        name: img2
    diskimages:
    pools:
      - name: main
        labels:
          - &small {name: a, cloud-image: img, min-ram: 512}
          - <<: *small
            name: b
"""
    config = load_config(write(tmp_path / "nodepool.yaml", text), env=NO_ENV)
    provider = config.providers["p"]
    image2 = provider.cloud_image("img2")
    assert image2 is not None and image2.username == "ci"
    label_b = provider.pool("main").label("b")
    assert label_b is not None and (label_b.cloud_image, label_b.min_ram) == ("img", 512)
    assert config.diskimages == {} and provider.diskimages == ()

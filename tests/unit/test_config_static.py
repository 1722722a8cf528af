"""Static providers in nodepool.yaml: values, defaults, and errors by path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodepool_ng.config import ConfigError, load_config
from nodepool_ng.config import schema as config_schema
from nodepool_ng.config.models import StaticNodeConfig

FULL_NODE = {
    "name": "host1.example.com",
    "labels": ["small", "big"],
    "username": "ci",
    "timeout": 7,
    "host-key-checking": False,
    "host-key": ["ssh-ed25519 AAAA", "ssh-rsa BBBB"],
    "connection-port": 2222,
    "connection-type": "network_cli",
    "shell-type": "cmd",
    "max-parallel-jobs": 3,
    "python-path": "/usr/bin/python3",
}

BASE: dict[str, Any] = {
    "zookeeper-servers": [{"host": "127.0.0.1"}],
    "labels": [{"name": "small"}, {"name": "big"}],
    "providers": [
        {
            "name": "static-1",
            "driver": "static",
            "max-concurrency": 2,
            "priority": 10,
            "pools": [
                {
                    "name": "main",
                    "max-servers": 4,
                    "priority": 5,
                    "node-attributes": {"rack": "r1"},
                    "nodes": [FULL_NODE, {"name": "host2", "labels": "small big"}],
                }
            ],
        }
    ],
}


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "nodepool.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(str(path), env={})


def test_static_provider_values_and_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, BASE)
    provider = config.providers["static-1"]
    assert provider.driver == "static" and not provider.launches_servers
    assert provider.cloud == "" and provider.priority == 10 and provider.max_concurrency == 2
    pool = provider.pool("main")
    assert pool.label_names == {"small", "big"}
    assert dict(pool.node_attributes) == {"rack": "r1"}
    full, plain = pool.nodes
    assert full == StaticNodeConfig(
        name="host1.example.com", labels=("small", "big"), username="ci", timeout=7,
        host_key_checking=False, host_key=("ssh-ed25519 AAAA", "ssh-rsa BBBB"),
        connection_port=2222, connection_type="network_cli", shell_type="cmd",
        max_parallel_jobs=3, python_path="/usr/bin/python3")
    # Upstream's defaults; labels given as one string are split on spaces.
    assert plain == StaticNodeConfig(name="host2", labels=("small", "big"))
    assert plain.identity == ("host2", "zuul", 22)
    assert config.providers_for_label("small") == (provider,)


def test_every_static_schema_key_is_exercised() -> None:
    used = set(FULL_NODE)
    assert {str(getattr(k, "schema", k)) for k in config_schema.STATIC_NODE} == used


def test_single_host_key_string(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["providers"][0]["pools"][0]["nodes"][1]["host-key"] = "ssh-ed25519 CCCC"
    node = load(tmp_path, data).providers["static-1"].pool("main").nodes[1]
    assert node.host_key == ("ssh-ed25519 CCCC",)


NODE = "providers[0].pools[0].nodes[1]"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"labels": ["nope"]}, f"{NODE}.labels: unknown label 'nope' (not in labels)"),
        ({"labels": ""}, f"{NODE}.labels: a static node needs at least one label"),
        ({"max-parallel-jobs": 0}, f"{NODE}.max-parallel-jobs: must be at least 1"),
        ({"timeout": 0}, f"{NODE}.timeout: must be at least 1"),
        ({"bogus": 1}, f"{NODE}.bogus: unknown key"),
        ({"connection-port": "22"}, f"{NODE}.connection-port: expected int"),
        ({"labels": None}, f"{NODE}.labels:"),
        ({"name": "host1.example.com", "username": "ci", "connection-port": 2222},
         f"{NODE}.name: same host, username and port as providers[0].pools[0].nodes[0]"),
    ],
)
def test_static_errors_name_the_path(tmp_path: Path, change: dict[str, Any],
                                     expected: str) -> None:
    data = copy.deepcopy(BASE)
    data["providers"][0]["pools"][0]["nodes"][1].update(change)
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, data)
    assert str(exc.value).startswith(expected), str(exc.value)


def test_static_pool_takes_no_openstack_keys(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["providers"][0]["cloud"] = "mycloud"
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, data)
    assert str(exc.value).startswith("providers[0].cloud: unknown key")

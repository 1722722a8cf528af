"""Build the frozen models from a raw config that passed the schema and the semantic checks.

YAML keys map to dataclass fields by replacing `-` with `_`; absent keys take the dataclass
default, so every default lives in exactly one place (models.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from nodepool_ng.config import inherit, models
from nodepool_ng.drivers import registry

T = TypeVar("T")
Raw = Mapping[str, Any]

# Keys accepted for compatibility but not kept.
_IGNORED = frozenset({"nodepool-id"})


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return {key: _freeze(item) for key, item in value.items()}
    return value


def make_model(cls: type[T], raw: Raw, **overrides: Any) -> T:
    """cls(**raw keys in snake_case), with `overrides` replacing or adding fields (every
    driver's models are built this way)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _IGNORED:
            continue
        name = key.replace("-", "_")
        if name not in names:
            # The schema and the models disagree: a programming error, not a user error.
            raise AssertionError(f"{cls.__name__} has no field for config key {key!r}")
        kwargs[name] = _freeze(value)
    kwargs.update(overrides)
    return cls(**kwargs)


def connection_port(raw: Raw) -> dict[str, int]:
    """The default `connection-port` of the entry's `connection-type`, unless given."""
    if "connection-port" in raw:
        return {}
    return {"connection_port": models.default_connection_port(raw.get("connection-type", "ssh"))}


def build_diskimages(
    raw_images: list[Raw], secure_env: Mapping[str, Raw]
) -> dict[str, models.DiskImageConfig]:
    by_name: dict[str, Raw] = {}
    for image in raw_images:
        by_name.setdefault(image["name"], image)
    out: dict[str, models.DiskImageConfig] = {}
    for name, image in by_name.items():
        if image.get("abstract"):
            continue
        merged = inherit.merge(name, by_name)
        env = {**merged.get("env-vars", {}), **secure_env.get(name, {})}
        merged["env-vars"] = env
        if "release" in merged:
            # DIB_RELEASE is an environment variable; YAML may have read `21` as an int.
            merged["release"] = str(merged["release"])
        out[name] = make_model(models.DiskImageConfig, merged)
    return out


def build_pool(raw: Raw) -> models.PoolConfig:
    if "nodes" in raw:
        return build_static_pool(raw)
    labels = tuple(make_model(models.PoolLabelConfig, label) for label in raw.get("labels") or [])
    return make_model(models.PoolConfig, raw, labels=labels)


def static_node_labels(raw_node: Raw) -> tuple[str, ...]:
    """A static node's `labels`: a list, or one string of space-separated names."""
    labels = raw_node["labels"]
    return tuple(labels.split() if isinstance(labels, str) else labels)


def build_static_pool(raw: Raw) -> models.PoolConfig:
    """A static pool's labels are those of its nodes (plain labels: nothing to boot)."""
    nodes = tuple(
        make_model(models.StaticNodeConfig, node, labels=static_node_labels(node),
              host_key=_strings(node.get("host-key", ())))
        for node in raw["nodes"]
    )
    names = dict.fromkeys(label for node in nodes for label in node.labels)
    labels = tuple(models.PoolLabelConfig(name=name) for name in names)
    return make_model(models.PoolConfig, raw, labels=labels, nodes=nodes)


def _strings(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def build_provider(raw: Raw) -> models.OpenStackProviderConfig:
    """The model of an OpenStack or static provider (their driver entries' build_provider)."""
    pools = tuple(build_pool(pool) for pool in raw.get("pools") or [])
    diskimages = tuple(
        make_model(models.ProviderDiskImageConfig, image, **connection_port(image))
        for image in raw.get("diskimages") or []
    )
    cloud_images = tuple(
        make_model(models.CloudImageConfig, image, **connection_port(image))
        for image in raw.get("cloud-images") or []
    )
    driver = raw.get("driver", registry.DEFAULT_DRIVER)
    extra: dict[str, Any] = {"driver": driver,
                             "launches_servers": registry.get(driver).launches_servers}
    if "rate" in raw:
        extra["rate"] = float(raw["rate"])
    return make_model(
        models.OpenStackProviderConfig,
        raw,
        pools=pools,
        diskimages=diskimages,
        cloud_images=cloud_images,
        **extra,
    )


def build_webapp(raw: Raw) -> models.WebappConfig:
    """`webapp`, its `api-tokens` already merged with the secure file's."""
    tokens = tuple(make_model(models.ApiTokenConfig, t) for t in raw.get("api-tokens") or [])
    return make_model(models.WebappConfig, raw, api_tokens=tokens)


def build_config(raw: Raw, secure_env: Mapping[str, Raw]) -> models.Config:
    """`secure_env`: diskimage name -> env-vars from the secure file (merged last)."""
    labels = {label["name"]: make_model(models.LabelConfig, label)
              for label in raw.get("labels") or []}
    providers = {
        p["name"]: registry.get(p.get("driver", registry.DEFAULT_DRIVER)).build_provider(p)
        for p in raw.get("providers") or []
    }
    tenants = {
        t["tenant-name"]: models.TenantResourceLimitConfig(
            tenant_name=t["tenant-name"],
            limits={k: val for k, val in t.items() if k != "tenant-name"},
        )
        for t in raw.get("tenant-resource-limits") or []
    }
    tls = raw.get("zookeeper-tls")
    max_hold_age = raw.get("max-hold-age")
    top: dict[str, Any] = {}
    for key in ("elements-dir", "images-dir", "build-log-dir", "build-log-retention"):
        if key in raw:
            top[key.replace("-", "_")] = raw[key]
    if "zookeeper-timeout" in raw:
        top["zookeeper_timeout"] = float(raw["zookeeper-timeout"])
    mqtt = raw.get("mqtt")
    if mqtt:
        mqtt_tls = mqtt.get("tls")
        tls_model = make_model(models.MqttTLSConfig, mqtt_tls) if mqtt_tls else None
        top["mqtt"] = make_model(models.MqttConfig, mqtt, tls=tls_model)
    return models.Config(
        labels=labels,
        providers=providers,
        diskimages=build_diskimages(raw.get("diskimages") or [], secure_env),
        zookeeper_servers=tuple(
            make_model(models.ZooKeeperServerConfig, s) for s in raw.get("zookeeper-servers") or []
        ),
        zookeeper_tls=make_model(models.ZooKeeperTLSConfig, tls) if tls else None,
        webapp=build_webapp(raw.get("webapp") or {}),
        # Upstream treats absent, 0 and negative alike: held nodes never expire.
        max_hold_age=max_hold_age if max_hold_age and max_hold_age > 0 else None,
        tenant_resource_limits=tenants,
        **top,
    )

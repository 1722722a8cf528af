"""The voluptuous schemas of `nodepool.yaml` and the secure file (upstream key spelling).

Unknown keys are rejected everywhere (upstream lets many through). Cross-references
(labels, diskimages, cloud-images) are checked afterwards in `checks.py`, where the error can
name the exact path of the bad reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import voluptuous as v

from nodepool_ng.drivers import registry
from nodepool_ng.errors import ConfigError


def _int(value: Any) -> int:
    # voluptuous' plain `int` accepts True/False; a bool where a number belongs is a typo.
    if isinstance(value, bool) or not isinstance(value, int):
        raise v.Invalid("expected int")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise v.Invalid("expected a number")
    return float(value)


def _positive_number(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise v.Invalid("must be greater than 0")
    return number


def _str_or_int(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise v.Invalid("expected str or int")
    return value


Scalar = v.Any(str, _int, _number, bool, msg="expected a scalar (str, number or bool)")
StrDict = v.Schema({str: str})
Strs = [str]

# --- top level ---------------------------------------------------------------------------

LABEL = {
    v.Required("name"): str,
    "min-ready": _int,
    "max-ready-age": _int,
}

DISKIMAGE = {
    v.Required("name"): str,
    "abstract": bool,
    "parent": str,
    "elements": Strs,
    "release": _str_or_int,
    "env-vars": StrDict,
    "formats": Strs,
    "keep-formats": Strs,
    "delete-after-upload": bool,
    "rebuild-age": _int,
    "build-timeout": _int,
    "dib-cmd": str,
    "pause": bool,
    "username": str,
    "python-path": str,
    "shell-type": str,
    "metadata": {str: Scalar},
}

ZOOKEEPER_SERVER = {
    v.Required("host"): str,
    "port": _int,
    "chroot": str,
}

# Client certificate, its key and the CA: all three file paths, or no zookeeper-tls.
ZOOKEEPER_TLS = {v.Required(name): str for name in ("cert", "key", "ca")}


def _port(value: Any) -> int:
    number = _int(value)
    if not 0 < number < 65536:
        raise v.Invalid("must be a port number (1-65535)")
    return number


def _topic_prefix(value: Any) -> str:
    # Wildcards and empty levels are not valid in an MQTT topic that is published to.
    if not isinstance(value, str) or not value or any(c in value for c in "+#\0"):
        raise v.Invalid("expected a non-empty MQTT topic without + or #")
    if value.startswith("/") or value.endswith("/"):
        raise v.Invalid("must not start or end with /")
    return value


def _cert_with_key(value: dict[str, Any]) -> dict[str, Any]:
    if ("cert" in value) != ("key" in value):
        raise v.Invalid("cert and key must be given together")
    return value


MQTT = {
    v.Required("host"): str,
    "port": _port,
    "topic-prefix": _topic_prefix,
    "qos": v.In([0, 1], msg="expected 0 or 1"),
    "username": str,
    "password": str,
    "tls": v.All({"ca": str, "cert": str, "key": str}, _cert_with_key),
}

TENANT_RESOURCE_LIMIT = {
    v.Required("tenant-name"): str,
    "max-cores": _int,
    "max-ram": _int,
    "max-servers": _int,
    "max-volumes": _int,
    "max-volume-gb": _int,
    str: _int,
}

def _positive_int(value: Any) -> int:
    number = _int(value)
    if number <= 0:
        raise v.Invalid("must be greater than 0")
    return number


API_TOKEN_SECRET_MIN = 16  # characters: a bearer token must not be guessable


def _token_name(value: Any) -> str:
    # The name is the requestor of the token's node requests and a metric label value.
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise v.Invalid("expected a non-empty name without spaces")
    return value


def _token_secret(value: Any) -> str:
    if not isinstance(value, str):
        raise v.Invalid("expected str")
    if len(value) < API_TOKEN_SECRET_MIN:
        raise v.Invalid(f"must be at least {API_TOKEN_SECRET_MIN} characters")
    return value


# `webapp.api-tokens[]`: who may use the REST request API (`nodepool_ng/api/`). A token's
# `secret` may be given here or by an entry of the same name in the secure file
# (`loader.merge_api_tokens` joins them; a token must end up with one).
API_TOKEN = {
    v.Required("name"): _token_name,
    "secret": _token_secret,
    "labels": [str],
    "max-nodes": _positive_int,
}

TOP_LEVEL = v.Schema(
    {
        "webapp": {"port": _int, "listen_address": str, "api-tokens": [API_TOKEN]},
        "elements-dir": str,
        "images-dir": str,
        "build-log-dir": str,
        "build-log-retention": _int,
        "zookeeper-servers": [ZOOKEEPER_SERVER],
        "zookeeper-tls": ZOOKEEPER_TLS,
        "zookeeper-timeout": _number,
        "labels": [LABEL],
        "diskimages": [DISKIMAGE],
        # Each provider is checked by its driver's schema (see `provider_schema`).
        "providers": [dict],
        "max-hold-age": _int,
        "tenant-resource-limits": [TENANT_RESOURCE_LIMIT],
        "mqtt": MQTT,
    }
)

# The secure file may only carry secrets; anything else there is a mistake.
SECURE = v.Schema(
    {
        "zookeeper-servers": [ZOOKEEPER_SERVER],
        "zookeeper-tls": ZOOKEEPER_TLS,
        "diskimages": [{v.Required("name"): str, v.Required("env-vars"): StrDict}],
        "webapp": {"api-tokens": [API_TOKEN]},
    }
)

# --- openstack provider (drivers/openstack/driver.py) -------------------------------------

COMMON_PROVIDER = {
    v.Required("name"): str,
    "driver": str,
    "max-concurrency": _int,
    "priority": _int,
}

COMMON_POOL = {
    v.Required("name"): str,
    "max-servers": _int,
    "node-attributes": dict,
    "priority": _int,
}

OPENSTACK_POOL_LABEL = {
    v.Required("name"): str,
    # Exactly one of diskimage / cloud-image and at least one of min-ram / flavor-name are
    # checked in checks.py so the error names the missing key.
    "diskimage": str,
    "cloud-image": str,
    "min-ram": _int,
    "flavor-name": str,
    "key-name": str,
    "console-log": bool,
    "boot-from-volume": bool,
    "volume-size": _int,
    "instance-properties": StrDict,
    "dynamic-instance-properties": StrDict,
    "userdata": str,
    "networks": Strs,
    "host-key-checking": bool,
}

OPENSTACK_POOL = {
    **COMMON_POOL,
    "networks": Strs,
    "auto-floating-ip": bool,
    "host-key-checking": bool,
    "ignore-provider-quota": bool,
    "max-cores": _int,
    "max-ram": _int,
    "max-volumes": _int,
    "max-volume-gb": _int,
    "labels": [OPENSTACK_POOL_LABEL],
    "availability-zones": Strs,
    "security-groups": Strs,
}

OPENSTACK_PROVIDER_DISKIMAGE = {
    v.Required("name"): str,
    "pause": bool,
    "meta": StrDict,
    "config-drive": bool,
    "connection-type": str,
    "connection-port": _int,
}

OPENSTACK_CLOUD_IMAGE = {
    v.Required("name"): str,
    "config-drive": bool,
    "connection-type": str,
    "connection-port": _int,
    "image-id": str,
    "image-name": str,
    "username": str,
    "python-path": str,
    "shell-type": str,
}

OPENSTACK_PROVIDER = v.Schema(
    {
        **COMMON_PROVIDER,
        v.Required("cloud"): str,
        "region-name": str,
        "boot-timeout": _int,
        "launch-timeout": _int,
        "launch-retries": _int,
        "image-upload-timeout": _int,
        "nodepool-id": str,  # legacy, accepted and ignored
        "rate": _positive_number,
        "image-name-format": str,
        "clean-floating-ips": bool,
        "port-cleanup-interval": _int,
        "post-upload-hook": str,
        "pools": [OPENSTACK_POOL],
        "diskimages": [OPENSTACK_PROVIDER_DISKIMAGE],
        "cloud-images": [OPENSTACK_CLOUD_IMAGE],
    }
)

# --- static provider (drivers/static/driver.py) ---------------------------------------------

STATIC_NODE = {
    v.Required("name"): str,
    # A list, or one string of space-separated labels (upstream splits it).
    v.Required("labels"): v.Any(str, Strs),
    "username": str,
    "timeout": _int,
    "host-key-checking": bool,
    "host-key": v.Any(str, Strs),
    "connection-port": _int,
    "connection-type": str,
    "shell-type": str,
    "max-parallel-jobs": _int,
    "python-path": str,
}

STATIC_PROVIDER = v.Schema(
    {
        **COMMON_PROVIDER,
        "pools": [{**COMMON_POOL, "nodes": [STATIC_NODE]}],
    }
)

# Which schema checks a provider is the registry's business (`drivers/registry.py`).


# --- turning voluptuous errors into ConfigError paths ---------------------------------------


def format_path(path: list[Any] | tuple[Any, ...]) -> str:
    """["providers", 1, "pools", 0, "name"] -> "providers[1].pools[0].name"."""
    out = ""
    for element in path:
        if isinstance(element, int) and not isinstance(element, bool):
            out += f"[{element}]"
        else:
            key = str(element.schema) if isinstance(element, v.Marker) else str(element)
            out += f".{key}" if out else key
    return out


def invalid_messages(
    error: v.Invalid, prefix: tuple[Any, ...] = (), suffix: str = ""
) -> list[tuple[str, str]]:
    """(path, message) for every error inside a voluptuous Invalid/MultipleInvalid."""
    errors = error.errors if isinstance(error, v.MultipleInvalid) else [error]
    out = []
    for err in errors:
        message = err.msg
        if message == "extra keys not allowed":
            message = "unknown key"
        elif message in ("expected a dictionary", "expected dict"):
            message = "expected a mapping"
        out.append((format_path([*prefix, *err.path]), message + suffix))
    return out


def check(
    schema: Callable[[Any], Any], data: Any, prefix: tuple[Any, ...] = (), suffix: str = ""
) -> list[tuple[str, str]]:
    """Validate; return [(path, message)] (empty when valid)."""
    try:
        schema(data)
    except v.Invalid as exc:
        return invalid_messages(exc, prefix, suffix)
    return []


def provider_errors(index: int, provider: dict[str, Any]) -> list[tuple[str, str]]:
    """Check one provider with its driver's schema. Unknown drivers are an error."""
    driver = provider.get("driver", registry.DEFAULT_DRIVER)
    entry = registry.find(driver)
    if entry is None:
        supported = ", ".join(sorted(registry.names()))
        return [
            (f"providers[{index}].driver", f"unknown driver {driver!r} (supported: {supported})")
        ]
    return check(entry.schema, provider, ("providers", index))


def raise_errors(errors: list[tuple[str, str]]) -> None:
    """Raise one ConfigError for the first error, carrying all of them in `errors`."""
    if errors:
        path, message = errors[0]
        raise ConfigErrors(message, path, [f"{p}: {m}" if p else m for p, m in errors])


class ConfigErrors(ConfigError):
    """A ConfigError that also lists every problem found (`errors`), first one in the message."""

    def __init__(self, message: str, path: str | None = None, errors: list[str] | None = None):
        super().__init__(message, path)
        self.errors: list[str] = errors if errors else [str(self)]

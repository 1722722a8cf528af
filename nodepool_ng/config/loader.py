"""The one way to load `nodepool.yaml`: daemons, the CLI and `config-validate` all call this.

read -> `%(NODEPOOL_*)` substitution -> YAML safe load -> schema (main and secure file) ->
semantic checks -> secure-file merge -> frozen models.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from nodepool_ng.config import checks, schema
from nodepool_ng.config.build import build_config
from nodepool_ng.config.models import Config
from nodepool_ng.errors import ConfigError

ENV_PREFIX = "NODEPOOL_"
_ENV_REF = re.compile(r"%\((NODEPOOL_[A-Za-z0-9_]*)\)")


def read_text(path: str | os.PathLike[str]) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {os.fspath(path)!r}: {exc}") from None


def substitute_env(text: str, env: Mapping[str, str], source: str = "config") -> str:
    """Replace `%(NODEPOOL_NAME)` with the environment's value; an unset name is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            line_start = text.rfind("\n", 0, match.start()) + 1
            if text[line_start : match.start()].lstrip().startswith("#"):
                return match.group(0)  # a commented-out example is not a reference
            line = text.count("\n", 0, match.start()) + 1
            raise ConfigError(
                f"{source} line {line}: environment variable {name} is not set "
                f"(referenced as %({name}))"
            )
        return env[name]

    return _ENV_REF.sub(replace, text)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (plain YAML keeps the last silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` keys may legitimately be overridden
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: let the normal constructor report it
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """Safe-load one YAML document that must be a mapping (an empty file is `{}`)."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    return data


def read_yaml(path: str | os.PathLike[str], env: Mapping[str, str]) -> dict[str, Any]:
    source = os.fspath(path)
    return parse_yaml(substitute_env(read_text(path), env, source), source)


# A key written with nothing after it (`labels:`) reads as null; treat it as absent.
_TOP_SECTIONS = (
    "labels",
    "diskimages",
    "providers",
    "zookeeper-servers",
    "tenant-resource-limits",
    "webapp",
    "mqtt",
)
_PROVIDER_SECTIONS = ("pools", "diskimages", "cloud-images")


def drop_empty_sections(raw: dict[str, Any]) -> dict[str, Any]:
    out = {k: val for k, val in raw.items() if not (k in _TOP_SECTIONS and val is None)}
    providers = out.get("providers")
    if isinstance(providers, list):
        out["providers"] = [
            {k: val for k, val in p.items() if not (k in _PROVIDER_SECTIONS and val is None)}
            if isinstance(p, dict)
            else p
            for p in providers
        ]
    return out


def merge_api_tokens(
    raw: Mapping[str, Any], secure: Mapping[str, Any], suffix: str
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """`webapp.api-tokens` of both files joined by name (the secure file's keys win), and
    the problems: a name twice in one file, a token without a secret in either file, two
    tokens with one secret, a label that is not in `labels`."""
    errors: list[tuple[str, str]] = []
    known_labels = {label["name"] for label in raw.get("labels") or []}
    merged: dict[str, dict[str, Any]] = {}
    where: dict[str, tuple[str, str]] = {}  # name -> (path of its first entry, suffix)
    for source, extra in ((raw, ""), (secure, suffix)):
        seen: set[str] = set()
        for i, token in enumerate((source.get("webapp") or {}).get("api-tokens") or []):
            path = f"webapp.api-tokens[{i}]"
            name = token["name"]
            if name in seen:
                errors.append((f"{path}.name", f"duplicate api token {name!r}{extra}"))
                continue
            seen.add(name)
            for j, label in enumerate(token.get("labels") or []):
                if label not in known_labels:
                    errors.append((f"{path}.labels[{j}]", f"unknown label {label!r}{extra}"))
            merged.setdefault(name, {}).update(token)
            where.setdefault(name, (path, extra))
    secrets: dict[str, str] = {}
    for name, token in merged.items():
        path, extra = where[name]
        secret = token.get("secret")
        if secret is None:
            errors.append((f"{path}.secret", f"api token {name!r} has no secret (give it "
                           f"here or in the secure file){extra}"))
        elif secret in secrets:
            errors.append((f"{path}.secret", f"api token {name!r} has the same secret as "
                           f"{secrets[secret]!r}{extra}"))
        else:
            secrets[secret] = name
    return list(merged.values()), errors


def load_config(
    path: str | os.PathLike[str],
    secure_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load, validate and build the configuration. Raises ConfigError naming the field path."""
    environ = os.environ if env is None else env
    nodepool_env = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    raw = read_yaml(path, nodepool_env)
    secure = read_yaml(secure_path, nodepool_env) if secure_path is not None else {}
    return config_from_dicts(raw, secure, secure_source=os.fspath(secure_path or ""))


def config_from_dicts(
    raw: dict[str, Any], secure: dict[str, Any] | None = None, secure_source: str = ""
) -> Config:
    """Validate and build from already-parsed YAML (the secure file's contents in `secure`)."""
    raw = drop_empty_sections(raw)
    secure = drop_empty_sections(secure or {})
    suffix = f" (in secure file {secure_source})" if secure_source else " (in secure file)"

    errors = schema.check(schema.TOP_LEVEL, raw)
    providers = raw.get("providers")
    if isinstance(providers, list):
        for i, provider in enumerate(providers):
            if isinstance(provider, dict):
                errors += schema.provider_errors(i, provider)
    errors += schema.check(schema.SECURE, secure, suffix=suffix)
    schema.raise_errors(errors)

    errors = checks.check_config(raw)
    errors += checks.check_secure_diskimages(secure, raw, suffix)
    tokens, token_errors = merge_api_tokens(raw, secure, suffix)
    errors += token_errors
    schema.raise_errors(errors)

    merged = dict(raw)
    if tokens:
        merged["webapp"] = {**(raw.get("webapp") or {}), "api-tokens": tokens}
    if secure.get("zookeeper-servers"):
        merged["zookeeper-servers"] = secure["zookeeper-servers"]
    if secure.get("zookeeper-tls"):
        merged["zookeeper-tls"] = secure["zookeeper-tls"]
    secure_env: dict[str, dict[str, str]] = {}
    for image in secure.get("diskimages") or []:
        secure_env.setdefault(image["name"], {}).update(image["env-vars"])
    return build_config(merged, secure_env)

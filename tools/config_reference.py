#!/usr/bin/env python3
"""Write doc/config-reference.md from the configuration schema and models.

Read from the code, never copied: the keys, nesting, types and required keys (the voluptuous
schemas: `nodepool_ng/config/schema.py`, each driver's `Driver.schema` from the registry),
allowed values (`v.In`) and constraints (the messages of the validators' `v.Invalid`), the
defaults (the dataclass defaults of `nodepool_ng/config/models.py` and the drivers' models,
found by following the models' field types from each section's root model) and the notes
written after a model field (`max_servers: int | None = None  # None = unlimited`).

The one-line descriptions of what a key does live here, in `DESCRIPTIONS`, and nowhere else
(a key missing there gets none; an entry naming no key is an error).

    python tools/config_reference.py          # (re)write doc/config-reference.md
    python tools/config_reference.py --check  # exit 1 when the file is stale
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import voluptuous as v

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodepool_ng.config import models, schema  # noqa: E402
from nodepool_ng.drivers import registry  # noqa: E402

OUTPUT = ROOT / "doc" / "config-reference.md"
COMMAND = "python tools/config_reference.py"

# What each key does, one line. Looked up as "<driver>:<path>", then "<path>", then the key's
# own name (for keys that mean the same wherever they appear). Paths are the reference's:
# `providers[].pools[].labels[].min-ram`; the secure file's start with `secure:`.
DESCRIPTIONS: dict[str, str] = {
    # names and connection details shared by many sections
    "name": "the entry's name (unique in its list)",
    "username": "the user Zuul logs in as on the node",
    "python-path": "the Python interpreter Ansible uses on the node (`auto`: Ansible finds it)",
    "shell-type": "the node's shell, for Ansible (e.g. `sh`, `cmd`, `powershell`)",
    "connection-type": "how Zuul reaches the node: `ssh`, `winrm`, `network_cli`, ...",
    "connection-port": "the port of `connection-type` (22; 5986 for winrm when not given)",
    "pause": "true: no new builds (top level) or uploads (provider) of this image",
    "priority": "lower numbers are tried first when several pools can serve a request",
    "max-servers": "most nodes the pool has at once",
    "max-cores": "most CPU cores the pool's nodes use at once",
    "max-ram": "most RAM (MiB) the pool's nodes use at once",
    "max-volumes": "most volumes the pool's nodes use at once",
    "max-volume-gb": "most volume GiB the pool's nodes use at once",
    "node-attributes": "a mapping copied into every node's `attributes` (Zuul reads it)",
    "host-key-checking": "scan the node's SSH host keys before it is READY",
    "ignore-provider-quota": "launch without checking the cloud's own quota first",
    "userdata": "user data passed to the server at boot (cloud-init)",
    "key-name": "the cloud's key pair to put on the server",
    "config-drive": "attach a config drive to the server",
    "boot-timeout": "seconds a server may take to become ACTIVE/running and reachable",
    "launch-timeout": "seconds a whole launch may take before it fails",
    "launch-retries": "launch attempts per node before the request is declined",
    "image-name-format": "name of an uploaded image in the cloud (`{image_name}`, "
                         "`{timestamp}`)",
    "post-upload-hook": "a command run after each upload (image name, id, file as arguments)",
    "max-concurrency": "most launches in flight at once in this provider (-1: no limit)",
    "diskimage": "the top-level diskimage this label boots (also in the provider's "
                 "`diskimages`)",
    "cloud-image": "the provider's `cloud-images` entry this label boots",
    "volume-size": "root volume size in GiB",
    "tags": "tags put on what the provider creates",
    "driver": "which driver runs this provider",
    "region-name": "the cloud region",
    "labels": "the labels this pool offers",
    "pools": "groups of nodes with their own limits and labels",
    # top level
    "webapp": "the launcher's web server (status pages, /metrics, health)",
    "webapp.port": "TCP port of the web server",
    "webapp.listen_address": "address the web server listens on",
    "webapp.api-tokens": "bearer tokens of the REST request API",
    "webapp.api-tokens[].name": "the token's name, the requestor of its node requests",
    "webapp.api-tokens[].secret": "the bearer token (or from the secure file's entry of the "
                                  "same name)",
    "webapp.api-tokens[].labels": "the labels the token may request (absent: every label)",
    "webapp.api-tokens[].max-nodes": "most nodes the token holds and has requested at once",
    "elements-dir": "diskimage-builder elements directory (builder)",
    "images-dir": "where the builder writes image files",
    "build-log-dir": "where the builder writes one log per build",
    "zookeeper-servers": "the ZooKeeper ensemble",
    "zookeeper-servers[].host": "host name or address of one ZooKeeper server",
    "zookeeper-servers[].port": "its client port",
    "zookeeper-servers[].chroot": "path prefix for every znode (the first server's is used)",
    "zookeeper-tls": "TLS to ZooKeeper: all three files, or no TLS",
    "zookeeper-tls.cert": "client certificate file",
    "zookeeper-tls.key": "client key file",
    "zookeeper-tls.ca": "CA certificate file",
    "zookeeper-timeout": "ZooKeeper session timeout in seconds",
    "labels[].name": "the label's name, as node requests ask for it",
    "labels[].min-ready": "READY unallocated nodes of this label kept at all times",
    "main:labels": "every label nodes can be requested with",
    "labels[].max-ready-age": "how long a READY unallocated node may wait before it is deleted",
    "diskimages": "images the builder builds with diskimage-builder",
    "diskimages[].abstract": "only a parent for other images; never built",
    "diskimages[].parent": "the image whose settings this one inherits",
    "diskimages[].elements": "diskimage-builder elements (appended to the parent's)",
    "diskimages[].release": "DIB_RELEASE (kept as text)",
    "diskimages[].env-vars": "environment of disk-image-create (merged over the parent's)",
    "diskimages[].formats": "image formats to build",
    "diskimages[].keep-formats": "formats kept on disk after the uploads",
    "diskimages[].delete-after-upload": "delete the image files once every upload is done",
    "diskimages[].rebuild-age": "seconds after which the image is built again",
    "diskimages[].build-timeout": "seconds a build may take",
    "diskimages[].dib-cmd": "the diskimage-builder command (`%p`: the package's directory)",
    "diskimages[].metadata": "extra metadata for the image's nodes",
    "providers": "the clouds and host lists nodes come from: see the driver sections",
    "max-hold-age": "how long a held node is kept at most (0: forever too)",
    "tenant-resource-limits": "per-tenant limits on what its requests hold at once",
    "tenant-resource-limits[].tenant-name": "the Zuul tenant",
    "tenant-resource-limits[].max-servers": "most nodes of the tenant at once",
    "tenant-resource-limits[].max-cores": "most cores of the tenant's nodes at once",
    "tenant-resource-limits[].max-ram": "most RAM (MiB) of the tenant's nodes at once",
    "tenant-resource-limits[].max-volumes": "most volumes of the tenant's nodes at once",
    "tenant-resource-limits[].max-volume-gb": "most volume GiB of the tenant's nodes at once",
    "tenant-resource-limits[].<any key>": "any other `max-<resource>` limit",
    "mqtt": "where the daemons publish their events (nodepool_ng only)",
    "mqtt.host": "the MQTT broker",
    "mqtt.port": "the broker's port",
    "mqtt.topic-prefix": "first level(s) of every event topic",
    "mqtt.qos": "MQTT quality of service of the events",
    "mqtt.username": "broker user",
    "mqtt.password": "broker password",
    "mqtt.tls": "TLS to the broker",
    "mqtt.tls.ca": "CA certificate file",
    "mqtt.tls.cert": "client certificate file",
    "mqtt.tls.key": "client key file",
    # secure file
    "secure:zookeeper-servers": "replaces the main file's list",
    "secure:zookeeper-tls": "replaces the main file's TLS files",
    "secure:diskimages": "secret environment of image builds",
    "secure:diskimages[].name": "the top-level diskimage these variables are for",
    "secure:webapp": "only the secrets of its api-tokens",
    "secure:diskimages[].env-vars": "merged over the image's env-vars after inheritance",
    "secure:webapp.api-tokens": "token secrets, joined with the main file's tokens by name",
    # openstack
    "openstack:providers[].cloud": "the clouds.yaml entry to use",
    "openstack:providers[].image-upload-timeout": "seconds an image upload may take",
    "openstack:providers[].nodepool-id": "legacy; accepted and ignored",
    "openstack:providers[].clean-floating-ips": "delete floating IPs no server uses",
    "openstack:providers[].port-cleanup-interval": "seconds between passes deleting DOWN "
                                                   "ports (0: never)",
    "openstack:providers[].pools[].networks": "networks every server of the pool is on",
    "openstack:providers[].pools[].auto-floating-ip": "add a floating IP when the server has "
                                                      "no public address",
    "openstack:providers[].pools[].availability-zones": "zones to spread servers over",
    "openstack:providers[].pools[].security-groups": "security groups of every server",
    "openstack:providers[].pools[].labels[].min-ram": "the smallest flavor with this much "
                                                      "RAM (MiB)",
    "openstack:providers[].pools[].labels[].flavor-name": "the flavor (name or id; a name "
                                                          "part with min-ram)",
    "openstack:providers[].pools[].labels[].console-log": "log the console when a launch "
                                                          "fails",
    "openstack:providers[].pools[].labels[].boot-from-volume": "boot from a new volume",
    "openstack:providers[].pools[].labels[].instance-properties": "server metadata",
    "openstack:providers[].pools[].labels[].dynamic-instance-properties":
        "server metadata rendered from the request (`{request.id}`, ...)",
    "openstack:providers[].pools[].labels[].networks": "overrides the pool's networks",
    "openstack:providers[].pools[].labels[].host-key-checking": "overrides the pool's",
    "openstack:providers[].diskimages": "top-level diskimages uploaded to this cloud",
    "openstack:providers[].diskimages[].meta": "image properties set on the upload",
    "openstack:providers[].cloud-images": "images that already exist in the cloud",
    "openstack:providers[].cloud-images[].image-id": "the image's id in the cloud",
    "openstack:providers[].cloud-images[].image-name": "the image's name in the cloud",
    # static
    "static:providers[].pools[].nodes[].labels": "labels of the host (a list, or "
                                                 "space-separated)",
    "static:providers[].pools[].nodes[].max-parallel-jobs": "nodes registered for this host "
                                                            "(jobs at once)",
    # aws
    "aws:providers[].profile-name": "the AWS credentials profile",
    "aws:providers[].image-import-timeout": "seconds an image upload may take",
    "aws:providers[].image-format": "format of the uploaded image files",
    "aws:providers[].object-storage.bucket-name": "an S3 bucket (not used)",
    "aws:providers[].pools[].max-resources": "named limits, e.g. an AWS quota code",
    "aws:providers[].pools[].subnet-id": "the VPC subnet of the instances",
    "aws:providers[].pools[].security-group-id": "the security group of the instances",
    "aws:providers[].pools[].public-ip-address": "upstream's older name of public-ipv4",
    "aws:providers[].pools[].public-ipv4": "give instances a public IPv4 address",
    "aws:providers[].pools[].public-ipv6": "give instances an IPv6 address",
    "aws:providers[].pools[].use-internal-ip": "Zuul connects to the private address",
    "aws:providers[].pools[].labels[].instance-type": "the EC2 instance type",
    "aws:providers[].pools[].labels[].ebs-optimized": "launch EBS-optimized instances",
    "aws:providers[].pools[].labels[].volume-type": "EBS volume type of the root volume",
    "aws:providers[].pools[].labels[].iops": "provisioned IOPS of the root volume",
    "aws:providers[].pools[].labels[].throughput": "throughput (MiB/s) of the root volume",
    "aws:providers[].pools[].labels[].iam-instance-profile": "the instance profile, by name "
                                                             "or ARN",
    "aws:providers[].pools[].labels[].iam-instance-profile.name": "the profile's name",
    "aws:providers[].pools[].labels[].iam-instance-profile.arn": "the profile's ARN",
    "aws:providers[].pools[].labels[].dynamic-tags": "tags rendered from the request",
    "aws:providers[].pools[].labels[].use-spot": "launch spot instances",
    "aws:providers[].pools[].labels[].imdsv2": "instance metadata service v2 setting",
    "aws:providers[].diskimages": "top-level diskimages uploaded as AMIs",
    "aws:providers[].diskimages[].architecture": "the AMI's architecture",
    "aws:providers[].diskimages[].ena-support": "the AMI supports ENA networking",
    "aws:providers[].diskimages[].volume-size": "size of the image's volume",
    "aws:providers[].diskimages[].volume-type": "EBS volume type of the snapshot's volumes",
    "aws:providers[].diskimages[].iops": "provisioned IOPS of those volumes",
    "aws:providers[].diskimages[].throughput": "throughput (MiB/s) of those volumes",
    "aws:providers[].diskimages[].import-method": "how the image is uploaded",
    "aws:providers[].diskimages[].imds-support": "the AMI's IMDS support",
    "aws:providers[].cloud-images": "AMIs that already exist",
    "aws:providers[].cloud-images[].image-id": "the AMI id",
    "aws:providers[].cloud-images[].image-filters": "EC2 filters finding the newest matching "
                                                    "AMI",
}


# --- reading the schema -----------------------------------------------------------------------


@dataclass
class Row:
    path: str
    type: str
    required: bool
    default: str = ""
    allowed: str = ""
    description: str = ""


@dataclass
class Shape:
    """What a schema node accepts: a type name, allowed values, constraints, and for a
    mapping (or a list of mappings) its keys."""

    type: str
    allowed: str = ""
    constraints: tuple[str, ...] = ()
    keys: dict[Any, Any] | None = None  # the mapping's schema, when it has named keys
    is_list: bool = False


def _messages(fn: Callable[..., Any]) -> list[str]:
    """The texts of the `v.Invalid(...)` a validator raises, read from its source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError):
        return []
    out: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                and node.exc.args and getattr(node.exc.func, "attr", "") == "Invalid"):
            continue
        arg = node.exc.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            out.append(arg.value)
        elif isinstance(arg, ast.JoinedStr):
            code = compile(ast.Expression(arg), "<message>", "eval")
            out.append(str(eval(code, getattr(fn, "__globals__", {}))))
    return out


# Messages that only restate the type or the keys (the table says those already).
_NO_CONSTRAINT = ("expected", "unknown key", "required key not provided")
_ANNOTATION_TYPES = {"int": "int", "float": "number", "str": "str", "bool": "bool"}


def _function_shape(fn: Callable[..., Any]) -> Shape:
    annotation = str(inspect.signature(fn).return_annotation)
    parts = [p.strip() for p in annotation.split("|")]
    if all(p in _ANNOTATION_TYPES for p in parts):
        name = " or ".join(_ANNOTATION_TYPES[p] for p in parts)
    else:
        name = (inspect.getdoc(fn) or fn.__name__).splitlines()[0].split(";")[0]
    constraints = tuple(m for m in _messages(fn) if not m.startswith(_NO_CONSTRAINT))
    return Shape(name, constraints=constraints)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`"


def shape(node: Any) -> Shape:
    if isinstance(node, v.Schema):
        return shape(node.schema)
    if isinstance(node, dict):
        named = {k: val for k, val in node.items() if not isinstance(k, type)}
        if not named:  # {str: X}: any key
            (key_type, value), = node.items()
            return Shape(f"mapping of {key_type.__name__} to {shape(value).type}")
        return Shape("mapping", keys=node)
    if isinstance(node, list):
        (item,) = node
        inner = shape(item)
        if inner.keys is not None:
            return Shape("list of mappings", constraints=inner.constraints, keys=inner.keys,
                         is_list=True)
        kind = "mappings" if inner.type == "mapping" else inner.type
        return Shape(f"list of {kind}", inner.allowed, inner.constraints)
    if isinstance(node, v.All):
        base = shape(node.validators[0])
        extra: list[str] = []
        for validator in node.validators[1:]:
            extra.extend(_messages(validator))
        base.constraints = base.constraints + tuple(extra)
        return base
    if isinstance(node, v.Any):
        return Shape(" or ".join(shape(item).type for item in node.validators))
    if isinstance(node, v.In):
        values = list(typing.cast(list[Any], node.container))
        kinds = sorted({type(x).__name__ for x in values})
        return Shape(" or ".join(kinds), allowed=", ".join(_literal(x) for x in values))
    if node is dict:
        return Shape("mapping")
    if isinstance(node, type):
        return Shape(node.__name__)
    if isinstance(node, types.FunctionType):
        return _function_shape(node)
    raise TypeError(f"cannot describe schema node {node!r}")


# --- reading the models -----------------------------------------------------------------------


def _field_notes(cls: type) -> dict[str, str]:
    """field name -> the comment written after it in the class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    notes: dict[str, str] = {}
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        line = lines[token.start[0] - 1]
        code = line[:token.start[1]].strip()
        if code and ":" in code and not code.startswith(("def ", "#", "return")):
            name = code.split(":")[0].strip()
            if name.isidentifier():
                notes[name] = token.string.lstrip("#").strip()
    return notes


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass inside a field type: X, X | None, tuple[X, ...], Mapping[str, X]."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


@dataclass
class Model:
    cls: type | None
    notes: bool = True  # show the comments after its fields (not for the secure file)

    def field(self, key: str) -> dataclasses.Field[Any] | None:
        if self.cls is None:
            return None
        fields = {f.name: f for f in dataclasses.fields(self.cls)}
        return fields.get(key.replace("-", "_"))

    def child(self, key: str) -> Model:
        f = self.field(key)
        if f is None or self.cls is None:
            return Model(None)
        hint = f.type
        if isinstance(hint, str):  # `from __future__ import annotations`
            namespace = vars(sys.modules[self.cls.__module__])
            hint = eval(hint, dict(namespace))
        return Model(_dataclass_in(hint), self.notes)

    def default(self, key: str) -> str:
        f = self.field(key)
        if f is None:
            return ""
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            return ""
        if dataclasses.is_dataclass(value):
            return ""
        if value is None:
            return "none"
        if value in ((), {}):
            return "empty"
        if isinstance(value, str):
            return f"`{value}`" if value else '`""`'
        return _literal(value).strip("`") if isinstance(value, bool) else f"`{value}`"

    def note(self, key: str) -> str:
        if self.cls is None or not self.notes:
            return ""
        notes: dict[str, str] = {}
        for klass in reversed(self.cls.__mro__):
            if dataclasses.is_dataclass(klass):
                notes.update(_field_notes(klass))
        return notes.get(key.replace("-", "_"), "")


# --- rows -----------------------------------------------------------------------------------


def _description(prefix: str, path: str, key: str) -> str:
    for lookup in (f"{prefix}:{path}", path, key):
        if lookup in DESCRIPTIONS:
            return DESCRIPTIONS[lookup]
    return ""


def rows(keys: dict[Any, Any], model: Model, prefix: str, path: str = "") -> Iterator[Row]:
    for marker, node in keys.items():
        if isinstance(marker, type):
            key, required = "<any key>", False
        else:
            key = str(marker.schema) if isinstance(marker, v.Marker) else str(marker)
            required = isinstance(marker, v.Required)
        full = f"{path}.{key}" if path else key
        s = shape(node)
        described = [_description(prefix, full, key), model.note(key)]
        if s.constraints:
            described.append("; ".join(s.constraints))
        yield Row(full, s.type, required, "" if required else model.default(key), s.allowed,
                  "; ".join(d for d in described if d))
        if s.keys is not None:
            yield from rows(s.keys, model.child(key), prefix, full + ("[]" if s.is_list else ""))


def used_description_keys(sections: list[tuple[str, str, list[Row]]]) -> set[str]:
    used: set[str] = set()
    for _title, prefix, section_rows in sections:
        for row in section_rows:
            key = row.path.rsplit(".", 1)[-1]
            used.update({f"{prefix}:{row.path}", row.path, key})
    return used


# The root model of each section; nested models follow from the fields' types.
_DRIVER_MODELS = {
    "openstack": "nodepool_ng.config.models:OpenStackProviderConfig",
    "static": "nodepool_ng.config.models:OpenStackProviderConfig",
    "aws": "nodepool_ng.drivers.aws.config:AwsProviderConfig",
}


def _load(spec: str) -> type:
    module, name = spec.split(":")
    __import__(module)
    cls = getattr(sys.modules[module], name)
    assert isinstance(cls, type)
    return cls


def sections() -> list[tuple[str, str, list[Row]]]:
    out = [
        ("The main file (`nodepool.yaml`)", "main",
         list(rows(schema.TOP_LEVEL.schema, Model(models.Config), "main"))),
        ("The secure file (`-s`)", "secure",
         list(rows(schema.SECURE.schema, Model(models.Config, notes=False), "secure"))),
    ]
    for name in registry.names():
        if name not in _DRIVER_MODELS:
            raise SystemExit(f"{COMMAND}: driver {name!r} has no root model in _DRIVER_MODELS")
        driver_schema = registry.get(name).schema
        keys = shape(driver_schema).keys
        assert keys is not None, name
        title = f"Providers with `driver: {name}`"
        if name == registry.DEFAULT_DRIVER:
            title += " (the default)"
        out.append((title, name, list(rows(keys, Model(_load(_DRIVER_MODELS[name])), name,
                                           "providers[]"))))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    all_sections = sections()
    unknown = sorted(set(DESCRIPTIONS) - used_description_keys(all_sections))
    if unknown:
        raise SystemExit(f"{COMMAND}: DESCRIPTIONS names keys the schema lacks: {unknown}")
    out = [
        "# Configuration reference",
        "",
        f"Generated by `{COMMAND}` from the schemas (`nodepool_ng/config/schema.py`,",
        "each driver's schema), the defaults of the models (`nodepool_ng/config/models.py`,",
        "the drivers' models) and the descriptions in the tool. Do not edit: run the command",
        "again after changing any of them (`tests/unit/test_config_reference.py` fails",
        "while this file is stale). How loading works and where nodepool_ng differs from",
        "upstream: `configuration.md`.",
        "",
        "A path names a key inside its parents: `a.b` is key `b` of mapping `a`, `a[].b` key",
        "`b` of each entry of list `a`. *Default* is the value an absent key takes (none: no",
        "value; empty: an empty list or mapping). Unknown keys are errors everywhere.",
    ]
    for title, _prefix, section_rows in all_sections:
        out += ["", f"## {title}", "",
                "| key | type | required | default | allowed values | description |",
                "|---|---|---|---|---|---|"]
        for row in section_rows:
            out.append("| " + " | ".join(_cell(c) for c in (
                f"`{row.path}`", row.type, "yes" if row.required else "no", row.default,
                row.allowed, row.description)) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the file differs from what would be written")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

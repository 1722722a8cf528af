"""Cloud profiles for simcloud: voluptuous schema -> frozen dataclasses.

A profile file is YAML with a top-level `clouds:` list; each entry describes one simulated
cloud (see doc/simcloud.md for every field). `load_profile_file` and `build_profiles` raise
`ProfileError` whose message starts with the field path, e.g. `clouds[1].quota.cores: ...`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import voluptuous as v
import yaml

ADDRESS_MODELS = ("external", "external_private", "floating", "nova_floating", "access_ip")
DISK_FORMATS = ("qcow2", "vhd", "raw", "vmdk", "vdi", "iso", "ami", "ploop")
SERVICES = ("identity", "compute", "image", "network", "object_store", "volume")


class ProfileError(ValueError):
    """A profile does not validate; the message starts with the field path."""


@dataclass(frozen=True)
class FlavorProfile:
    name: str
    vcpus: int
    ram: int
    disk: int
    id: str


@dataclass(frozen=True)
class ImageProfile:
    """An image present from the start (a "cloud image"), active, in `disk_format`."""

    name: str
    disk_format: str
    min_ram: int = 0


@dataclass(frozen=True)
class QuotaProfile:
    instances: int = -1
    cores: int = -1
    ram: int = -1


@dataclass(frozen=True)
class FaultProfile:
    """Fault injection; rates are probabilities in [0, 1]."""

    error_rate: dict[str, float] = field(default_factory=dict)  # per service, answered with 500
    server_error_rate: float = 0.0  # servers that end in ERROR with a fault
    slow_rate: float = 0.0  # requests delayed by slow_delay seconds
    slow_delay: float = 0.5


@dataclass(frozen=True)
class CloudProfile:
    name: str
    region: str
    port: int
    username: str
    password: str
    project: str
    address_model: str
    image_formats: tuple[str, ...]
    image_upload: str
    flavors: tuple[FlavorProfile, ...]
    images: tuple[ImageProfile, ...]
    quota: QuotaProfile
    boot_delay: float
    boot_jitter: float
    faults: FaultProfile
    seed: int
    public_cidr: str
    private_cidr: str
    token_ttl: float
    compute_microversion: str

    @property
    def image_format(self) -> str:
        """The format the cloud prefers (what clouds.yaml advertises)."""
        return self.image_formats[0]

    @property
    def has_network_api(self) -> bool:
        return self.address_model in ("external", "external_private", "floating")


def _loopback_cidr(value: Any) -> str:
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError as e:
        raise v.Invalid(f"not a network: {e}") from e
    if not isinstance(net, ipaddress.IPv4Network) or not net.subnet_of(
            ipaddress.IPv4Network("127.0.0.0/8")):
        raise v.Invalid("must lie inside 127.0.0.0/8 (no traffic may leave the machine)")
    if net.prefixlen > 28:
        raise v.Invalid("too small: use at most a /28")
    return str(net)


def _microversion(value: Any) -> str:
    text = str(value)
    parts = text.split(".")
    if len(parts) != 2 or parts[0] != "2" or not parts[1].isdigit():
        raise v.Invalid("must look like 2.N")
    return text


_rate = v.All(v.Coerce(float), v.Range(min=0.0, max=1.0))
_seconds = v.All(v.Coerce(float), v.Range(min=0.0))
_limit = v.All(int, v.Range(min=-1))

FLAVOR = v.Schema(
    {
        v.Required("name"): v.All(str, v.Length(min=1)),
        v.Required("vcpus"): v.All(int, v.Range(min=1)),
        v.Required("ram"): v.All(int, v.Range(min=1)),
        v.Optional("disk", default=10): v.All(int, v.Range(min=0)),
        v.Optional("id"): v.All(str, v.Length(min=1)),
    }
)

FAULTS = v.Schema(
    {
        v.Optional("error_rate", default={}): {v.In(SERVICES): _rate},
        v.Optional("server_error_rate", default=0.0): _rate,
        v.Optional("slow_rate", default=0.0): _rate,
        v.Optional("slow_delay", default=0.5): _seconds,
    }
)

CLOUD = v.Schema(
    {
        v.Required("name"): v.All(str, v.Match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")),
        v.Optional("region", default="RegionOne"): v.All(str, v.Length(min=1)),
        v.Optional("port", default=0): v.All(int, v.Range(min=0, max=65535)),
        v.Optional("username", default="demo"): v.All(str, v.Length(min=1)),
        v.Optional("password", default="secret"): v.All(str, v.Length(min=1)),
        v.Optional("project", default="demo"): v.All(str, v.Length(min=1)),
        v.Optional("address_model", default="external"): v.In(
            ADDRESS_MODELS, msg=f"must be one of {', '.join(ADDRESS_MODELS)}"
        ),
        v.Optional("image_formats", default=["qcow2"]): v.All(
            [v.In(DISK_FORMATS, msg=f"must be one of {', '.join(DISK_FORMATS)}")],
            v.Length(min=1),
        ),
        v.Optional("image_upload", default="put"): v.In(("put", "task"), msg="must be put or task"),
        v.Optional("flavors"): v.All([FLAVOR], v.Length(min=1)),
        v.Optional("images", default=[]): [{
            v.Required("name"): v.All(str, v.Length(min=1)),
            v.Optional("disk_format"): v.In(DISK_FORMATS),
            v.Optional("min_ram", default=0): v.All(int, v.Range(min=0)),
        }],
        v.Optional("quota", default={}): {
            v.Optional("instances", default=-1): _limit,
            v.Optional("cores", default=-1): _limit,
            v.Optional("ram", default=-1): _limit,
        },
        v.Optional("boot_delay", default=0.0): _seconds,
        v.Optional("boot_jitter", default=0.0): _seconds,
        v.Optional("faults", default={}): FAULTS,
        v.Optional("seed", default=0): int,
        v.Optional("public_cidr"): _loopback_cidr,
        v.Optional("private_cidr"): _loopback_cidr,
        v.Optional("token_ttl", default=3600.0): v.All(v.Coerce(float), v.Range(min=1.0)),
        v.Optional("compute_microversion", default="2.79"): _microversion,
    }
)

PROFILE = v.Schema({v.Required("clouds"): v.All([CLOUD], v.Length(min=1))})

DEFAULT_FLAVORS = (
    {"name": "small", "vcpus": 1, "ram": 1024, "disk": 10},
    {"name": "medium", "vcpus": 2, "ram": 4096, "disk": 40},
    {"name": "large", "vcpus": 4, "ram": 8192, "disk": 80},
)


def _path(error: v.Invalid) -> str:
    out = ""
    for part in error.path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def build_profiles(data: Any) -> tuple[CloudProfile, ...]:
    """Validate a profile (the parsed YAML) and build one CloudProfile per cloud."""
    try:
        clean = PROFILE(data)
    except v.MultipleInvalid as e:
        err = e.errors[0]
        raise ProfileError(f"{_path(err)}: {err.msg}") from None
    clouds: list[CloudProfile] = []
    names: set[str] = set()
    for index, c in enumerate(clean["clouds"]):
        where = f"clouds[{index}]"
        if c["name"] in names:
            raise ProfileError(f"{where}.name: duplicate cloud name {c['name']!r}")
        names.add(c["name"])
        flavors: list[FlavorProfile] = []
        for fi, f in enumerate(c.get("flavors") or DEFAULT_FLAVORS):
            if any(f["name"] == other.name for other in flavors):
                raise ProfileError(f"{where}.flavors[{fi}].name: duplicate flavor {f['name']!r}")
            flavors.append(
                FlavorProfile(f["name"], f["vcpus"], f["ram"], f.get("disk", 10),
                              f.get("id") or str(fi + 1))
            )
        images = []
        for ii, img in enumerate(c["images"]):
            fmt = img.get("disk_format") or c["image_formats"][0]
            if fmt not in c["image_formats"]:
                raise ProfileError(f"{where}.images[{ii}].disk_format: {fmt} is not one of this "
                                   f"cloud's image_formats")
            images.append(ImageProfile(img["name"], fmt, img["min_ram"]))
        public = c.get("public_cidr") or f"127.{100 + index % 50}.0.0/16"
        private = c.get("private_cidr") or f"127.{200 + index % 50}.0.0/16"
        if ipaddress.ip_network(public).overlaps(ipaddress.ip_network(private)):
            raise ProfileError(f"{where}.private_cidr: overlaps public_cidr {public}")
        faults = c["faults"]
        clouds.append(
            CloudProfile(
                name=c["name"], region=c["region"], port=c["port"], username=c["username"],
                password=c["password"], project=c["project"], address_model=c["address_model"],
                image_formats=tuple(dict.fromkeys(c["image_formats"])),
                image_upload=c["image_upload"], flavors=tuple(flavors), images=tuple(images),
                quota=QuotaProfile(**c["quota"]), boot_delay=c["boot_delay"],
                boot_jitter=c["boot_jitter"],
                faults=FaultProfile(
                    error_rate=dict(faults["error_rate"]),
                    server_error_rate=faults["server_error_rate"],
                    slow_rate=faults["slow_rate"], slow_delay=faults["slow_delay"],
                ),
                seed=c["seed"], public_cidr=public, private_cidr=private,
                token_ttl=c["token_ttl"], compute_microversion=c["compute_microversion"],
            )
        )
    return tuple(clouds)


def load_profile_file(path: str | Path) -> tuple[CloudProfile, ...]:
    """Read and validate a YAML profile file."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    return build_profiles(data)

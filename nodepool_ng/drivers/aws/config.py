"""`driver: aws` providers: the voluptuous schema and the frozen models.

Keys and defaults are upstream Nodepool's aws driver (nodepool/driver/aws/config.py), written
with the helpers of `nodepool_ng.config.schema` so errors name the exact path, e.g.
`providers[1].pools[0].labels[2].instance-type: required key not provided`. Unknown keys are
rejected, as for the other drivers.

Differences from upstream, on purpose:

* `import-method` (provider diskimages): `snapshot` (the default) and `ebs-direct` are
  accepted and both upload with the EBS direct APIs (no S3 bucket, no VM Import service);
  `image` (VM Import of a whole image) is refused. `object-storage` is accepted for
  compatibility and not used.
* `image-format` may only be `raw` (what the EBS direct upload writes).
* Fleet launches (`fleet`), dedicated hosts (`dedicated-host`) and provider-wide `tags` /
  `max-*` limits are not supported yet: such keys are rejected as unknown, never ignored.

Models: field names are the YAML keys in snake_case; absent keys take the dataclass default
(upstream's). `build_provider(raw)` takes a mapping that passed `PROVIDER_SCHEMA`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import voluptuous as v

from nodepool_ng.config.build import connection_port, make_model
from nodepool_ng.config.models import PoolLookups, ProviderLookups
from nodepool_ng.config.schema import (
    COMMON_POOL,
    COMMON_PROVIDER,
    StrDict,
    _int,
    _positive_number,
)
from nodepool_ng.model.quota import Quota

DRIVER = "aws"

# --- schema --------------------------------------------------------------------------------


def _one_image_source(image: dict[str, Any]) -> dict[str, Any]:
    """A cloud image names exactly one of image-id / image-filters."""
    if "image-id" in image and "image-filters" in image:
        raise v.Invalid("give image-id or image-filters, not both", path=["image-filters"])
    if "image-id" not in image and "image-filters" not in image:
        raise v.Invalid("required: image-id or image-filters", path=["image-id"])
    return image


def _one_label_image(label: dict[str, Any]) -> dict[str, Any]:
    """A pool label boots exactly one of cloud-image / diskimage."""
    if "cloud-image" in label and "diskimage" in label:
        raise v.Invalid("give cloud-image or diskimage, not both", path=["diskimage"])
    if "cloud-image" not in label and "diskimage" not in label:
        raise v.Invalid("required: cloud-image or diskimage", path=["cloud-image"])
    return label


def _iam_profile(profile: dict[str, Any]) -> dict[str, Any]:
    if len(profile) != 1:
        raise v.Invalid("give exactly one of name or arn")
    return profile


def IMAGE_FILTER(value: Any) -> Any:  # a schema, named like the others
    """{name, values}; upstream also takes boto3's spelling (Name, Values)."""
    if not isinstance(value, dict):
        raise v.Invalid("expected a mapping")
    seen = {}
    for key, item in value.items():
        if not isinstance(key, str) or key.lower() not in ("name", "values"):
            raise v.Invalid("unknown key", path=[key])
        seen[key.lower()] = (key, item)
    for wanted in ("name", "values"):
        if wanted not in seen:
            raise v.Invalid("required key not provided", path=[wanted])
    key, name = seen["name"]
    if not isinstance(name, str):
        raise v.Invalid("expected str", path=[key])
    key, values = seen["values"]
    if not isinstance(values, list) or not all(isinstance(x, str) for x in values):
        raise v.Invalid("expected a list of str", path=[key])
    return value

CLOUD_IMAGE = v.All(
    {
        v.Required("name"): str,
        v.Required("username"): str,
        "image-id": str,
        "image-filters": [IMAGE_FILTER],
        "connection-type": str,
        "connection-port": _int,
        "python-path": str,
        "shell-type": str,
    },
    _one_image_source,
)

PROVIDER_DISKIMAGE = {
    v.Required("name"): str,
    "pause": bool,
    "username": str,
    "python-path": str,
    "shell-type": str,
    "connection-type": str,
    "connection-port": _int,
    "architecture": v.In(["x86_64", "arm64", "i386"], msg="expected x86_64, arm64 or i386"),
    "ena-support": bool,
    "volume-size": _int,
    "volume-type": str,
    "iops": _int,
    "throughput": _int,
    "import-method": v.In(
        ["snapshot", "ebs-direct"],
        msg="expected snapshot or ebs-direct (both upload with the EBS direct APIs; "
            "'image' is not supported)"),
    "imds-support": v.In(["v2.0"], msg="expected v2.0"),
    "tags": StrDict,
}

POOL_LABEL = v.All(
    {
        v.Required("name"): str,
        "cloud-image": str,
        "diskimage": str,
        v.Required("instance-type"): str,
        v.Required("key-name"): str,
        "ebs-optimized": bool,
        "volume-type": str,
        "volume-size": _int,
        "iops": _int,
        "throughput": _int,
        "userdata": str,
        "iam-instance-profile": v.All({"name": str, "arn": str}, _iam_profile),
        "tags": StrDict,
        "dynamic-tags": StrDict,
        "use-spot": bool,
        "imdsv2": v.In(["required", "optional"], msg="expected required or optional"),
    },
    _one_label_image,
)

POOL = {
    **COMMON_POOL,
    v.Required("labels"): [POOL_LABEL],
    "max-cores": _int,
    "max-ram": _int,
    "max-resources": {str: _int},
    "ignore-provider-quota": bool,
    "host-key-checking": bool,
    "subnet-id": str,
    "security-group-id": str,
    "public-ip-address": bool,  # upstream's older name of public-ipv4
    "public-ipv4": bool,
    "public-ipv6": bool,
    "use-internal-ip": bool,
}

PROVIDER_SCHEMA = v.Schema(
    {
        **COMMON_PROVIDER,
        v.Required("driver"): v.In([DRIVER], msg="expected aws"),
        v.Required("region-name"): str,
        "profile-name": str,
        "boot-timeout": _int,
        "launch-timeout": _int,
        "launch-retries": _int,
        "image-import-timeout": _int,
        "rate": _positive_number,
        "image-name-format": str,
        "post-upload-hook": str,
        "image-format": v.In(["raw"], msg="expected raw (the EBS direct upload writes raw)"),
        "object-storage": {v.Required("bucket-name"): str},  # accepted, not used
        v.Required("pools"): [POOL],
        "diskimages": [PROVIDER_DISKIMAGE],
        "cloud-images": [CLOUD_IMAGE],
    }
)

# --- models --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsImageFilter:
    name: str
    values: tuple[str, ...]

    def as_boto(self) -> dict[str, Any]:
        return {"Name": self.name, "Values": list(self.values)}


@dataclass(frozen=True)
class AwsCloudImageConfig:
    name: str
    username: str | None = None
    image_id: str | None = None
    image_filters: tuple[AwsImageFilter, ...] | None = None
    python_path: str = "auto"
    shell_type: str | None = None
    connection_type: str = "ssh"
    connection_port: int = 22

    @property
    def external_name(self) -> str:
        return self.image_id or self.name

    # What the launcher core reads of an OpenStack cloud image (no meaning on AWS).
    image_name: None = None
    config_drive: None = None


@dataclass(frozen=True)
class AwsProviderDiskImageConfig:
    name: str
    pause: bool = False
    username: str | None = None  # None: the top-level diskimage's
    python_path: str | None = None
    shell_type: str | None = None
    connection_type: str = "ssh"
    connection_port: int = 22
    architecture: str = "x86_64"
    ena_support: bool = True
    volume_size: int | None = None  # GiB; None: the image's size rounded up
    volume_type: str = "gp3"
    iops: int | None = None
    throughput: int | None = None
    import_method: str = "snapshot"
    imds_support: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    config_drive: None = None  # read by the launcher core; no meaning on AWS

    @property
    def meta(self) -> Mapping[str, str]:
        """What the builder adds to the upload's metadata (OpenStack's `meta`): nothing;
        the adapter tags the snapshot and AMI with `tags` itself."""
        return {}


@dataclass(frozen=True)
class AwsIamInstanceProfile:
    name: str | None = None
    arn: str | None = None

    def as_boto(self) -> dict[str, str]:
        return {"Arn": self.arn} if self.arn else {"Name": self.name or ""}


@dataclass(frozen=True)
class AwsLabelConfig:
    name: str
    instance_type: str
    key_name: str | None = None
    cloud_image: str | None = None
    diskimage: str | None = None
    ebs_optimized: bool = False
    volume_type: str | None = None
    volume_size: int | None = None
    iops: int | None = None
    throughput: int | None = None
    userdata: str | None = None
    iam_instance_profile: AwsIamInstanceProfile | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    dynamic_tags: Mapping[str, str] = field(default_factory=dict)
    use_spot: bool = False
    imdsv2: str | None = None  # "required" | "optional" | None (the AMI's default)

    # The launcher core builds LaunchSpec.metadata from these (OpenStack names): the AWS
    # driver turns every metadata entry into a tag, so tags / dynamic-tags go through them.
    @property
    def instance_properties(self) -> Mapping[str, str]:
        return self.tags

    @property
    def dynamic_instance_properties(self) -> Mapping[str, str]:
        return self.dynamic_tags

    @property
    def flavor_name(self) -> str:
        return self.instance_type

    min_ram: None = None
    boot_from_volume: bool = False
    console_log: bool = False
    networks: None = None
    host_key_checking: None = None  # the pool's


@dataclass(frozen=True)
class AwsPoolConfig(PoolLookups[AwsLabelConfig]):
    name: str
    max_servers: int | None = None  # None = unlimited
    max_cores: int | None = None
    max_ram: int | None = None
    max_resources: Mapping[str, int] = field(default_factory=dict)
    ignore_provider_quota: bool = False
    host_key_checking: bool = True
    node_attributes: Mapping[str, object] = field(default_factory=dict)
    priority: int | None = None  # None = the provider's
    subnet_id: str | None = None
    security_group_id: str | None = None
    public_ipv4: bool = True
    public_ipv6: bool = False
    use_internal_ip: bool = False
    labels: tuple[AwsLabelConfig, ...] = ()

    def host_key_checking_for(self, label: object) -> bool:
        return self.host_key_checking

    def quota_limits(self) -> Quota:
        """The pool's own limits (unset = unlimited); max-resources adds named ones (e.g. an
        AWS quota code such as L-1216C47A, counted in vCPUs)."""
        return Quota.limits(cores=self.max_cores, instances=self.max_servers,
                            ram=self.max_ram, **dict(self.max_resources))

    # What the launcher core reads of an OpenStack pool (no meaning on AWS).
    nodes: tuple[()] = ()
    availability_zones: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    auto_floating_ip: bool = False
    max_volumes: None = None
    max_volume_gb: None = None

    @property
    def security_groups(self) -> tuple[str, ...]:
        return (self.security_group_id,) if self.security_group_id else ()

    def networks_for(self, label: object) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class AwsProviderConfig(ProviderLookups[AwsPoolConfig, AwsProviderDiskImageConfig,
                                       AwsCloudImageConfig]):
    name: str
    region_name: str
    driver: str = DRIVER
    profile_name: str | None = None
    boot_timeout: int = 180
    launch_timeout: int = 3600
    launch_retries: int = 3
    image_import_timeout: int | None = None
    rate: float = 2.0  # API calls per second (upstream's aws meaning; not openstack's)
    max_concurrency: int = -1
    priority: int = 100
    image_name_format: str = "{image_name}-{timestamp}"
    post_upload_hook: str | None = None
    image_format: str = "raw"
    object_storage: Mapping[str, str] | None = None  # accepted for upstream configs; unused
    pools: tuple[AwsPoolConfig, ...] = ()
    diskimages: tuple[AwsProviderDiskImageConfig, ...] = ()
    cloud_images: tuple[AwsCloudImageConfig, ...] = ()

    @property
    def launches_servers(self) -> bool:
        return True

    # What the launcher core and builder read of an OpenStack provider.
    @property
    def image_upload_timeout(self) -> int:
        return self.image_import_timeout or 3600

    cloud: str = ""
    clean_floating_ips: bool = False
    port_cleanup_interval: int = 0  # no ports on AWS


# --- building the models -------------------------------------------------------------------

Raw = Mapping[str, Any]


def _cloud_image(raw: Raw) -> AwsCloudImageConfig:
    extra: dict[str, Any] = connection_port(raw)
    if "image-filters" in raw:
        extra["image_filters"] = tuple(
            AwsImageFilter(
                name=str(f.get("name", f.get("Name"))),
                values=tuple(f.get("values", f.get("Values")) or ()),
            )
            for f in raw["image-filters"]
        )
    return make_model(AwsCloudImageConfig, raw, **extra)


def _label(raw: Raw) -> AwsLabelConfig:
    extra: dict[str, Any] = {}
    if "iam-instance-profile" in raw:
        extra["iam_instance_profile"] = AwsIamInstanceProfile(**raw["iam-instance-profile"])
    return make_model(AwsLabelConfig, raw, **extra)


def _pool(raw: Raw) -> AwsPoolConfig:
    raw = dict(raw)
    legacy_public = raw.pop("public-ip-address", None)
    extra: dict[str, Any] = {"labels": tuple(_label(label) for label in raw["labels"])}
    if "public-ipv4" not in raw and legacy_public is not None:
        extra["public_ipv4"] = legacy_public
    return make_model(AwsPoolConfig, raw, **extra)


def build_provider(raw: Raw) -> AwsProviderConfig:
    """The model of one provider mapping that passed `PROVIDER_SCHEMA`."""
    extra: dict[str, Any] = {
        "pools": tuple(_pool(pool) for pool in raw.get("pools") or []),
        "diskimages": tuple(
            make_model(AwsProviderDiskImageConfig, image, **connection_port(image))
            for image in raw.get("diskimages") or []
        ),
        "cloud_images": tuple(_cloud_image(image) for image in raw.get("cloud-images") or []),
    }
    if "rate" in raw:
        extra["rate"] = float(raw["rate"])
    return make_model(AwsProviderConfig, raw, **extra)


def check_references(raw: Raw) -> list[tuple[str, str]]:
    """(path, message) for labels naming a cloud image or diskimage this provider lacks
    (the schema checks shapes; the config's own checks may add global ones)."""
    cloud_images = {image.get("name") for image in raw.get("cloud-images") or []}
    diskimages = {image.get("name") for image in raw.get("diskimages") or []}
    errors = []
    for p, pool in enumerate(raw.get("pools") or []):
        for n, label in enumerate(pool.get("labels") or []):
            path = f"pools[{p}].labels[{n}]"
            if "cloud-image" in label and label["cloud-image"] not in cloud_images:
                errors.append((f"{path}.cloud-image",
                               f"no cloud-images entry named {label['cloud-image']!r}"))
            if "diskimage" in label and label["diskimage"] not in diskimages:
                errors.append((f"{path}.diskimage",
                               f"no diskimages entry named {label['diskimage']!r} in this "
                               f"provider"))
    return errors

"""Semantic checks across the schema-valid config: names, references, inheritance.

Every problem is reported as (path, message) with the exact YAML path of the offending key,
e.g. `providers[0].pools[1].labels[2].diskimage: unknown diskimage 'base'`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from nodepool_ng.config import inherit
from nodepool_ng.config.build import static_node_labels
from nodepool_ng.drivers import registry

if TYPE_CHECKING:
    from nodepool_ng.config.models import Config

Errors = list[tuple[str, str]]
Raw = Mapping[str, Any]

# Nova limits on image metadata used as server properties: 5 keys, 255 characters each.
META_MAX_ITEMS = 5
META_MAX_LEN = 255


def _duplicates(items: Iterable[Raw], path: str, what: str, key: str = "name") -> Errors:
    errors: Errors = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        name = item[key]
        if name in seen:
            errors.append((f"{path}[{i}].{key}", f"duplicate {what} {name!r}"))
        seen.add(name)
    return errors


def _first_by_name(items: Iterable[Raw]) -> dict[str, Raw]:
    out: dict[str, Raw] = {}
    for item in items:
        out.setdefault(item["name"], item)
    return out


def check_diskimages(raw: Raw) -> Errors:
    images = raw.get("diskimages") or []
    errors = _duplicates(images, "diskimages", "diskimage")
    by_name = _first_by_name(images)
    broken = False
    for i, image in enumerate(images):
        parent = image.get("parent")
        if parent is None:
            continue
        if parent not in by_name:
            errors.append((f"diskimages[{i}].parent", f"unknown diskimage {parent!r}"))
            broken = True
        elif (loop := inherit.cycle_of(image["name"], by_name)) is not None:
            errors.append((f"diskimages[{i}].parent", "inheritance cycle: " + " -> ".join(loop)))
            broken = True
    if broken:
        return errors
    for i, image in enumerate(images):
        if image.get("abstract") or by_name[image["name"]] is not image:
            continue
        if not inherit.merge(image["name"], by_name).get("elements"):
            errors.append(
                (
                    f"diskimages[{i}].elements",
                    f"diskimage {image['name']!r} has no elements (own or inherited)",
                )
            )
    return errors


def _buildable_diskimages(raw: Raw) -> dict[str, bool]:
    """name -> abstract?"""
    return {
        image["name"]: bool(image.get("abstract"))
        for image in reversed(raw.get("diskimages") or [])
    }


def _diskimage_ref_error(name: str, diskimages: Mapping[str, bool]) -> str | None:
    if name not in diskimages:
        return f"unknown diskimage {name!r}"
    if diskimages[name]:
        return f"diskimage {name!r} is abstract and cannot be used directly"
    return None


ItemCheck = Callable[[str, Raw], Errors]  # (the item's path, the item) -> its errors


def _no_check(path: str, item: Raw) -> Errors:
    return []


def check_references(index: int, provider: Raw, raw: Raw) -> Errors:
    """What every driver's provider needs of its names (for drivers whose pools list
    `labels` and which may have `diskimages` / `cloud-images`): no duplicate pools, pool
    labels, diskimages or cloud-images; pool labels are in `labels`; provider diskimages
    name buildable top-level diskimages."""
    return _walk_provider(index, provider, raw)


def _walk_provider(
    index: int,
    provider: Raw,
    raw: Raw,
    diskimage: ItemCheck = _no_check,
    cloud_image: ItemCheck = _no_check,
    pool: ItemCheck = _no_check,
    label: ItemCheck = _no_check,
) -> Errors:
    """`check_references`, with the driver's own check of each item right after its names'
    (so the errors stay in the order of the file)."""
    path = f"providers[{index}]"
    diskimages = _buildable_diskimages(raw)
    labels = {raw_label["name"] for raw_label in raw.get("labels") or []}
    errors: Errors = []
    images = provider.get("diskimages") or []
    errors += _duplicates(images, f"{path}.diskimages", "diskimage")
    for j, image in enumerate(images):
        if (msg := _diskimage_ref_error(image["name"], diskimages)) is not None:
            errors.append((f"{path}.diskimages[{j}].name", msg))
        errors += diskimage(f"{path}.diskimages[{j}]", image)
    cloud_images = provider.get("cloud-images") or []
    errors += _duplicates(cloud_images, f"{path}.cloud-images", "cloud-image")
    for j, image in enumerate(cloud_images):
        errors += cloud_image(f"{path}.cloud-images[{j}]", image)
    pools = provider.get("pools") or []
    errors += _duplicates(pools, f"{path}.pools", "pool")
    for j, raw_pool in enumerate(pools):
        errors += pool(f"{path}.pools[{j}]", raw_pool)
        pool_labels = raw_pool.get("labels") or []
        errors += _duplicates(pool_labels, f"{path}.pools[{j}].labels", "label")
        for k, pool_label in enumerate(pool_labels):
            if pool_label["name"] not in labels:
                errors.append((f"{path}.pools[{j}].labels[{k}].name",
                               f"unknown label {pool_label['name']!r} (not in labels)"))
            errors += label(f"{path}.pools[{j}].labels[{k}]", pool_label)
    return errors


def check_provider(index: int, provider: Raw, raw: Raw) -> Errors:
    """The checks of an OpenStack or static provider (the core's ProviderConfig)."""
    path = f"providers[{index}]"
    diskimages = _buildable_diskimages(raw)
    labels = {label["name"] for label in raw.get("labels") or []}
    provider_images = {image["name"] for image in provider.get("diskimages") or []}
    cloud_images = {image["name"] for image in provider.get("cloud-images") or []}
    seen_hosts: dict[tuple[str, str, int], str] = {}

    def pool(pool_path: str, pool: Raw) -> Errors:
        errors: Errors = []
        for k, node in enumerate(pool.get("nodes") or []):
            errors += _check_static_node(f"{pool_path}.nodes[{k}]", node, labels, seen_hosts)
        return errors

    def label(label_path: str, label: Raw) -> Errors:
        return _check_pool_label(label_path, label, diskimages, provider_images, cloud_images,
                                 path)

    return _walk_provider(index, provider, raw, diskimage=_check_image_meta,
                          cloud_image=_check_cloud_image, pool=pool, label=label)


def _check_image_meta(path: str, image: Raw) -> Errors:
    meta = image.get("meta") or {}
    if len(meta) > META_MAX_ITEMS or any(
        len(k) > META_MAX_LEN or len(val) > META_MAX_LEN for k, val in meta.items()
    ):
        return [(f"{path}.meta",
                 f"at most {META_MAX_ITEMS} items of at most {META_MAX_LEN} characters")]
    return []


def _check_cloud_image(path: str, image: Raw) -> Errors:
    if "image-id" in image and "image-name" in image:
        return [(f"{path}.image-name", "image-id and image-name are mutually exclusive")]
    return []


def _check_static_node(
    path: str, node: Raw, labels: set[str], seen: dict[tuple[str, str, int], str]
) -> Errors:
    errors: Errors = []
    names = static_node_labels(node)
    if not names:
        errors.append((f"{path}.labels", "a static node needs at least one label"))
    for name in names:
        if name not in labels:
            errors.append((f"{path}.labels", f"unknown label {name!r} (not in labels)"))
    if node.get("max-parallel-jobs", 1) < 1:
        errors.append((f"{path}.max-parallel-jobs", "must be at least 1"))
    if node.get("timeout", 5) < 1:
        errors.append((f"{path}.timeout", "must be at least 1"))
    # Upstream identifies a static node by (name, username, port): two entries with the
    # same identity would fight over the same registered nodes.
    identity = (node["name"], node.get("username", "zuul"), node.get("connection-port", 22))
    if identity in seen:
        errors.append((f"{path}.name", f"same host, username and port as {seen[identity]}"))
    else:
        seen[identity] = path
    return errors


def _check_pool_label(
    path: str,
    label: Raw,
    diskimages: Mapping[str, bool],
    provider_images: set[str],
    cloud_images: set[str],
    provider_path: str,
) -> Errors:
    """What an OpenStack pool label needs besides a known name."""
    errors: Errors = []
    has_diskimage, has_cloud_image = "diskimage" in label, "cloud-image" in label
    if has_diskimage and has_cloud_image:
        errors.append((f"{path}.cloud-image", "diskimage and cloud-image are mutually exclusive"))
    elif not has_diskimage and not has_cloud_image:
        errors.append(
            (f"{path}.diskimage", "required key not provided (one of diskimage or cloud-image)")
        )
    if "min-ram" not in label and "flavor-name" not in label:
        errors.append((f"{path}.flavor-name", "required key not provided (flavor-name or min-ram)"))
    if has_diskimage:
        name = label["diskimage"]
        if (msg := _diskimage_ref_error(name, diskimages)) is not None:
            errors.append((f"{path}.diskimage", msg))
        elif name not in provider_images:
            errors.append(
                (f"{path}.diskimage", f"diskimage {name!r} is not in {provider_path}.diskimages")
            )
    if has_cloud_image and label["cloud-image"] not in cloud_images:
        errors.append(
            (
                f"{path}.cloud-image",
                f"unknown cloud-image {label['cloud-image']!r} "
                f"(not in {provider_path}.cloud-images)",
            )
        )
    return errors


def check_config(raw: Raw) -> Errors:
    """All semantic errors of a schema-valid main config."""
    errors: Errors = []
    errors += _duplicates(raw.get("labels") or [], "labels", "label")
    errors += _duplicates(raw.get("providers") or [], "providers", "provider")
    errors += _duplicates(
        raw.get("tenant-resource-limits") or [],
        "tenant-resource-limits",
        "tenant",
        key="tenant-name",
    )
    errors += check_diskimages(raw)
    for i, provider in enumerate(raw.get("providers") or []):
        driver = registry.get(provider.get("driver", registry.DEFAULT_DRIVER))
        errors += driver.check_provider(i, provider, raw)
    return errors


def check_secure_diskimages(secure: Raw, raw: Raw, suffix: str) -> Errors:
    """Secure-file diskimages must name a buildable top-level diskimage."""
    diskimages = _buildable_diskimages(raw)
    errors: Errors = []
    for i, image in enumerate(secure.get("diskimages") or []):
        if (msg := _diskimage_ref_error(image["name"], diskimages)) is not None:
            errors.append((f"diskimages[{i}].name", msg + suffix))
    return errors


def check_zookeeper_user(config: Config) -> Errors:
    """What the daemons, `config-validate` and every `nodepool` command that reads ZooKeeper
    need of a loaded config (secure file merged). Not part of loading: other users of the
    config (tools, tests of one section) need no ZooKeeper."""
    if not config.zookeeper_servers:
        return [("zookeeper-servers",
                 "at least one server is required (in the config or the secure file)")]
    return []

"""Diskimage `parent` / `abstract` inheritance on the raw (schema-checked) YAML mappings.

Walking from the root ancestor down to the image itself: `elements` append, `env-vars`
update-merge, every other key present overrides. `name`, `parent` and `abstract` belong to
each image and are never inherited.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_OWN_KEYS = frozenset({"name", "parent", "abstract"})


def ancestry(name: str, images: Mapping[str, Mapping[str, Any]]) -> list[str] | None:
    """[root, ..., name], or None if a parent is unknown or the chain loops."""
    chain = [name]
    seen = {name}
    current = images[name]
    while current.get("parent") is not None:
        parent = current["parent"]
        if parent in seen or parent not in images:
            return None
        chain.append(parent)
        seen.add(parent)
        current = images[parent]
    chain.reverse()
    return chain


def cycle_of(name: str, images: Mapping[str, Mapping[str, Any]]) -> list[str] | None:
    """The loop `name` sits on (`[a, b, a]`), or None."""
    chain = [name]
    current = images[name]
    while current.get("parent") is not None:
        parent = current["parent"]
        if parent not in images:
            return None
        if parent in chain:
            loop = chain[chain.index(parent) :]
            return [*loop, parent] if loop[0] == name else None
        chain.append(parent)
        current = images[parent]
    return None


def merge(name: str, images: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The raw keys of diskimage `name` with its ancestors' values folded in."""
    chain = ancestry(name, images)
    if chain is None:
        raise ValueError(f"diskimage {name!r} has a broken parent chain")
    merged: dict[str, Any] = {}
    for image_name in chain:
        for key, value in images[image_name].items():
            if key in _OWN_KEYS:
                continue
            if key == "elements":
                merged["elements"] = [*merged.get("elements", []), *value]
            elif key == "env-vars":
                merged["env-vars"] = {**merged.get("env-vars", {}), **value}
            else:
                merged[key] = value
    own = images[name]
    merged["name"] = name
    if own.get("parent") is not None:
        merged["parent"] = own["parent"]
    return merged

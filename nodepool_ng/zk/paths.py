"""THE ZooKeeper tree: every path nodepool_ng reads or writes, and parsers for them.

Relative to the client's chroot. Parsers return None for paths that are not of their kind,
so cache event handlers can route on them.
"""

from __future__ import annotations

ROOT = "/nodepool"
NODES_ROOT = f"{ROOT}/nodes"
REQUESTS_ROOT = f"{ROOT}/requests"
REQUEST_LOCKS_ROOT = f"{ROOT}/requests-lock"
IMAGES_ROOT = f"{ROOT}/images"
COMPONENTS_ROOT = f"{ROOT}/components"
ELECTIONS_ROOT = f"{ROOT}/elections"
# nodepool_ng's own (upstream has no such subtree): leases of the REST request API.
API_LEASES_ROOT = f"{ROOT}/api-leases"
STATS_ELECTION = f"{ELECTIONS_ROOT}/stats"
# Defined upstream but unused since launchers register as components.
LAUNCHERS_ROOT = f"{ROOT}/launchers"

LOCK = "lock"
# Flag znodes below an image.
PAUSE = "pause"
REQUEST_BUILD = "request-build"
IMAGE_FLAGS = (PAUSE, REQUEST_BUILD)


# -- nodes ---------------------------------------------------------------------------------
def node_path(node_id: str) -> str:
    """A node: persistent sequential `<seq10>`, its lock dir below it."""
    return f"{NODES_ROOT}/{node_id}"


def node_lock_path(node_id: str) -> str:
    return f"{node_path(node_id)}/{LOCK}"


def parse_node_path(path: str) -> tuple[str, bool, str | None] | None:
    """`/nodepool/nodes/<id>[/lock[/<contender>]]` -> (id, is_lock_path, contender)."""
    return _parse_locked_record(path, NODES_ROOT)


def cache_key(parsed: tuple[str, bool, str | None] | None) -> tuple[str, str | None] | None:
    """A parsed `<root>/<id>[/lock[/<contender>]]` as a record cache routes it: (id, None)
    for the record, (id, contender) for a lock contender, None for the lock dir itself."""
    if parsed is None:
        return None
    record_id, is_lock, contender = parsed
    if not is_lock:
        return record_id, None
    if contender is None:
        return None
    return record_id, contender


def _parse_locked_record(path: str, root: str) -> tuple[str, bool, str | None] | None:
    """`<root>/<id>[/lock[/<contender>]]` -> (id, is_lock_path, contender)."""
    parts = _parts_under(path, root)
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0], False, None
    if parts[1] != LOCK or len(parts) > 3:
        return None
    return parts[0], True, parts[2] if len(parts) == 3 else None


# -- requests ------------------------------------------------------------------------------
def request_path(request_id: str) -> str:
    """A node request: `<prio>-<seq10>`."""
    return f"{REQUESTS_ROOT}/{request_id}"


def request_prefix(priority: str) -> str:
    """Path prefix for a sequence create: `/nodepool/requests/<prio>-`."""
    return f"{REQUESTS_ROOT}/{priority}-"


def request_lock_path(request_id: str) -> str:
    """A request's lock dir: outside the request, so it outlives it (`cleanup_lock_dirs`)."""
    return f"{REQUEST_LOCKS_ROOT}/{request_id}"


def parse_request_path(path: str) -> str | None:
    """`/nodepool/requests/<id>` -> id."""
    rest = _under(path, REQUESTS_ROOT)
    if not rest or "/" in rest:
        return None
    return rest


# -- API leases ----------------------------------------------------------------------------
def api_lease_path(lease_id: str) -> str:
    """A lease of the REST request API, named by its node request's id; its lock dir below
    it (the launcher whose lease keeper holds it owns the lease)."""
    return f"{API_LEASES_ROOT}/{lease_id}"


def api_lease_lock_path(lease_id: str) -> str:
    return f"{api_lease_path(lease_id)}/{LOCK}"


def parse_api_lease_path(path: str) -> tuple[str, bool, str | None] | None:
    """`/nodepool/api-leases/<id>[/lock[/<contender>]]` -> (id, is_lock_path, contender)."""
    return _parse_locked_record(path, API_LEASES_ROOT)


# -- images --------------------------------------------------------------------------------
def image_path(image: str) -> str:
    """An image: parent of its flags and its builds."""
    return f"{IMAGES_ROOT}/{image}"


def image_pause_path(image: str) -> str:
    """Empty flag: while it exists (`nodepool image-pause`), the image is not built."""
    return f"{image_path(image)}/{PAUSE}"


def image_request_build_path(image: str) -> str:
    """Empty flag asking for a build now (`nodepool image-build`); its ctime is the
    request's age."""
    return f"{image_path(image)}/{REQUEST_BUILD}"


def builds_path(image: str) -> str:
    """Parent of an image's builds (uuid4 hex) and of its build lock."""
    return f"{image_path(image)}/builds"


def image_build_lock_path(image: str) -> str:
    """Image-level build lock: one builder builds an image at a time."""
    return f"{builds_path(image)}/{LOCK}"


def build_path(image: str, build_id: str) -> str:
    return f"{builds_path(image)}/{build_id}"


def build_lock_path(image: str, build_id: str) -> str:
    return f"{build_path(image, build_id)}/{LOCK}"


def build_providers_path(image: str, build_id: str) -> str:
    return f"{build_path(image, build_id)}/providers"


def uploads_path(image: str, build_id: str, provider: str) -> str:
    return f"{build_path(image, build_id)}/providers/{provider}/images"


def upload_lock_path(image: str, build_id: str, provider: str) -> str:
    """Per build+provider upload lock."""
    return f"{uploads_path(image, build_id, provider)}/{LOCK}"


def upload_path(image: str, build_id: str, provider: str, upload_id: str) -> str:
    return f"{uploads_path(image, build_id, provider)}/{upload_id}"


def upload_number_lock_path(image: str, build_id: str, provider: str, upload_id: str) -> str:
    """Per-upload lock, used when deleting an upload."""
    return f"{upload_path(image, build_id, provider, upload_id)}/{LOCK}"


def parse_image_flag_path(path: str) -> tuple[str, str] | None:
    """`/nodepool/images/<image>/<flag>` -> (image, flag) for the flags in IMAGE_FLAGS."""
    parts = _parts_under(path, IMAGES_ROOT)
    if len(parts) != 2 or parts[1] not in IMAGE_FLAGS:
        return None
    return parts[0], parts[1]


def parse_build_path(path: str) -> tuple[str, str] | None:
    """`/nodepool/images/<image>/builds/<build>` -> (image, build)."""
    parts = _parts_under(path, IMAGES_ROOT)
    if len(parts) != 3 or parts[1] != "builds" or parts[2] == LOCK:
        return None
    return parts[0], parts[2]


def parse_upload_path(path: str) -> tuple[str, str, str, str] | None:
    """`.../images/<image>/builds/<b>/providers/<p>/images/<u>` -> (image, build, provider, u)."""
    parts = _parts_under(path, IMAGES_ROOT)
    if (
        len(parts) != 7
        or parts[1] != "builds"
        or parts[3] != "providers"
        or parts[5] != "images"
        or parts[6] == LOCK
    ):
        return None
    return parts[0], parts[2], parts[4], parts[6]


# -- components and elections --------------------------------------------------------------
def component_root(kind: str) -> str:
    """Parent of the registrations of one ComponentKind."""
    return f"{COMPONENTS_ROOT}/{kind}"


def component_prefix(kind: str, hostname: str) -> str:
    """Prefix for the ephemeral-sequential registration znode `<hostname><seq10>`."""
    return f"{component_root(kind)}/{hostname}"


def parse_component_path(path: str) -> tuple[str, str] | None:
    """`/nodepool/components/<kind>/<name>` -> (kind, name); the kind is not checked."""
    parts = _parts_under(path, COMPONENTS_ROOT)
    return (parts[0], parts[1]) if len(parts) == 2 else None


def _under(path: str, root: str) -> str | None:
    if not path.startswith(root + "/"):
        return None
    return path[len(root) + 1 :]


def _parts_under(path: str, root: str) -> list[str]:
    rest = _under(path, root)
    return rest.split("/") if rest else []

"""Status tables shared by the `nodepool` CLI and the web app: pure row builders.

Every builder returns a `Table`: ordered `(key, header)` columns (upstream's keys and
headers, in upstream's order) and one dict per row. Rows carry ages as epoch seconds (the web
app's JSON form); the text renderer turns those into `DD:HH:MM:SS`.

Builders take plain views of the records (`NodeView`, ...) so they need neither ZooKeeper nor
a particular store; `nodepool_ng.cmd.admin` and `nodepool_ng.web` fill the views.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NODE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "ID"),
    ("provider", "Provider"),
    ("label", "Label"),
    ("server_id", "Server ID"),
    ("public_ipv4", "Public IPv4"),
    ("ipv6", "IPv6"),
    ("state", "State"),
    ("age", "Age"),
    ("locked", "Locked"),
)
NODE_DETAIL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pool", "Pool"),
    ("hostname", "Hostname"),
    ("private_ipv4", "Private IPv4"),
    ("AZ", "AZ"),
    ("username", "Username"),
    ("connection_port", "Port"),
    ("launcher", "Launcher"),
    ("allocated_to", "Allocated To"),
    ("hold_job", "Hold Job"),
    ("comment", "Comment"),
    ("user_data", "User Data"),
    ("driver_data", "Driver Data"),
)
REQUEST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "Request ID"),
    ("relative_priority", "Priority"),
    ("state", "State"),
    ("requestor", "Requestor"),
    ("node_types", "Node Types"),
    ("nodes", "Nodes"),
    ("declined_by", "Declined By"),
    ("event_id", "Event ID"),
)
LABEL_COLUMNS: tuple[tuple[str, str], ...] = (("label", "Label"),)
DIB_IMAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "ID"),
    ("image", "Image"),
    ("builder", "Builder"),
    ("formats", "Formats"),
    ("state", "State"),
    ("age", "Age"),
)
IMAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "Build ID"),
    ("upload_id", "Upload ID"),
    ("provider", "Provider"),
    ("image", "Image"),
    ("external_name", "Provider Image Name"),
    ("external_id", "Provider Image ID"),
    ("state", "State"),
    ("age", "Age"),
)
IMAGE_STATUS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("image", "Image"),
    ("paused", "Paused"),
    ("build_request", "Build Request"),
    ("build_request_age", "Build Request Age"),
)


@dataclass
class Table:
    """Rows plus the ordered columns that describe them."""

    columns: Sequence[tuple[str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    age_keys: frozenset[str] = frozenset({"age"})

    def select(self, fields: Sequence[str] | None) -> list[tuple[str, str]]:
        """The columns named in `fields` (by key), in table order; all when empty."""
        if not fields:
            return list(self.columns)
        wanted = set(fields)
        return [(k, h) for k, h in self.columns if k in wanted]

    @property
    def keys(self) -> list[str]:
        return [k for k, _h in self.columns]


def format_age(timestamp: float, now: float | None = None) -> str:
    """Time since `timestamp` as upstream shows it: `DD:HH:MM:SS`."""
    delta = max(0, int((time.time() if now is None else now) - timestamp))
    minutes, seconds = divmod(delta, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{seconds:02d}"


def _epoch(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class NodeView:
    """A node as the status tables see it: its id, its upstream JSON and its lock state."""

    id: str
    data: Mapping[str, Any]
    locked: bool


def _port(value: Any) -> Any:
    # Upstream hides anything that is not a plain port number (drivers may put secrets there).
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return "redacted"


def node_row(node: NodeView) -> dict[str, Any]:
    d = node.data
    labels = d.get("type")
    if isinstance(labels, str):
        labels = [labels]
    return {
        "id": node.id,
        "provider": d.get("provider"),
        "label": list(labels or []),
        "server_id": d.get("external_id"),
        "public_ipv4": d.get("public_ipv4"),
        "ipv6": d.get("public_ipv6"),
        "state": d.get("state"),
        "age": _epoch(d.get("state_time")),
        "locked": "locked" if node.locked else "unlocked",
        "pool": d.get("pool"),
        "hostname": d.get("hostname"),
        "private_ipv4": d.get("private_ipv4"),
        "AZ": d.get("az"),
        "username": d.get("username"),
        "connection_port": _port(d.get("connection_port")),
        "launcher": d.get("launcher"),
        "allocated_to": d.get("allocated_to"),
        "hold_job": d.get("hold_job"),
        "comment": d.get("comment"),
        "user_data": d.get("user_data"),
        "driver_data": d.get("driver_data"),
    }


def node_list(nodes: Iterable[NodeView], detail: bool = True) -> Table:
    """`nodepool list` (`detail=False`: the short columns) and the web `/node-list`."""
    columns = NODE_COLUMNS + NODE_DETAIL_COLUMNS if detail else NODE_COLUMNS
    rows = [node_row(n) for n in sorted(nodes, key=lambda n: n.id)]
    return Table(columns, rows)


def request_list(requests: Iterable[tuple[str, Mapping[str, Any]]]) -> Table:
    """`nodepool request-list` from `(request id, upstream JSON)` pairs."""
    rows = []
    for req_id, d in sorted(requests, key=lambda r: r[0]):
        rows.append(
            {
                "id": req_id,
                "relative_priority": d.get("relative_priority", 0),
                "state": d.get("state"),
                "requestor": d.get("requestor"),
                "node_types": list(d.get("node_types") or []),
                "nodes": list(d.get("nodes") or []),
                "declined_by": list(d.get("declined_by") or []),
                "event_id": d.get("event_id"),
            }
        )
    return Table(REQUEST_COLUMNS, rows)


def label_list(pools: Iterable[Mapping[str, Any]]) -> Table:
    """Union of `supported_labels` over the registered pool components."""
    labels: set[str] = set()
    for pool in pools:
        labels.update(str(label) for label in pool.get("supported_labels") or [])
    return Table(LABEL_COLUMNS, [{"label": label} for label in sorted(labels)])


@dataclass(frozen=True)
class BuildView:
    image: str
    build_id: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class UploadView:
    image: str
    build_id: str
    provider: str
    upload_id: str
    data: Mapping[str, Any]


def dib_image_list(builds: Iterable[BuildView], paused_images: Iterable[str] = ()) -> Table:
    """`nodepool dib-image-list`: one row per build; a paused image's builds say `paused`."""
    paused = set(paused_images)
    rows = []
    for b in sorted(builds, key=lambda b: (b.image, _epoch(b.data.get("state_time")) or 0)):
        formats = b.data.get("formats") or ""
        if isinstance(formats, str):
            formats = [f for f in formats.split(",") if f]
        rows.append(
            {
                "id": f"{b.image}-{b.build_id}",
                "image": b.image,
                "builder": b.data.get("builder"),
                "formats": list(formats),
                "state": "paused" if b.image in paused else b.data.get("state"),
                "age": _epoch(b.data.get("state_time")),
            }
        )
    return Table(DIB_IMAGE_COLUMNS, rows)


def image_list(uploads: Iterable[UploadView]) -> Table:
    """`nodepool image-list`: one row per provider upload."""
    rows = []
    ordered = sorted(uploads, key=lambda u: (u.image, u.build_id, u.provider, u.upload_id))
    for u in ordered:
        rows.append(
            {
                "id": u.build_id,
                "upload_id": u.upload_id,
                "provider": u.provider,
                "image": u.image,
                "external_name": u.data.get("external_name"),
                "external_id": u.data.get("external_id"),
                "state": u.data.get("state"),
                "age": _epoch(u.data.get("state_time")),
            }
        )
    return Table(IMAGE_COLUMNS, rows)


@dataclass(frozen=True)
class ImageStatusView:
    """One image's pause flag and manual build request (`request_ctime`: epoch or None)."""

    image: str
    paused: bool
    request_ctime: float | None
    building: bool = False


def image_status(images: Iterable[ImageStatusView]) -> Table:
    """`nodepool image-status`: paused flag and pending manual build request per image."""
    rows = []
    for i in sorted(images, key=lambda i: i.image):
        if i.request_ctime is None:
            request, age = "", None
        else:
            request = "building" if i.building else "pending"
            age = _epoch(i.request_ctime)
        rows.append(
            {
                "image": i.image,
                "paused": i.paused,
                "build_request": request,
                "build_request_age": age,
            }
        )
    return Table(IMAGE_STATUS_COLUMNS, rows, age_keys=frozenset({"build_request_age"}))


# -- a launcher's own view of its providers (the status page) --------------------------------


@dataclass(frozen=True)
class PoolStatus:
    """One pool as its launcher sees it now."""

    pool: str
    at_quota: bool | None  # no label of the pool fits now; None: no quota (registered hosts)
    servers: int  # nodes the pool counts against its quota (not deleted)
    max_servers: int | None  # None: unlimited


@dataclass(frozen=True)
class ProviderStatus:
    """One provider a launcher process runs: its cloud's health (circuit breaker state:
    `healthy`, `open` or `ramping`), launches under way, and its pools."""

    name: str
    health: str
    launches_in_flight: int
    pools: tuple[PoolStatus, ...] = ()

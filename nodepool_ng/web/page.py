"""The status page at `/`: one server-rendered HTML page for an operator.

Node counts by provider and state; the providers (cloud health, pools paused or at quota);
node requests still waiting and what holds them up where that is known; every node, grouped
by provider; image builds and uploads. The data is read from the same source as the status
tables (`collect`); `render` is pure. The page reloads itself every `REFRESH_SECONDS`, has
its CSS inline and loads nothing else. Every value is escaped.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from nodepool_ng.status import ProviderStatus
from nodepool_ng.web.status_paths import StatusSource

REFRESH_SECONDS = 10

# A callable returning the providers of the launcher in this process (`Launcher.
# provider_status`); the builder's app has none.
LauncherStatus = Callable[[], Sequence[ProviderStatus]]

WAITING_STATES = ("requested", "pending")
# Node states in the order a node lives through them; others follow alphabetically.
STATE_ORDER = ("building", "testing", "ready", "in-use", "used", "hold", "deleting",
               "failed", "aborted", "deleted")


@runtime_checkable
class PageSource(StatusSource, Protocol):
    """The status tables plus the raw records the page needs besides them."""

    def request_records(self) -> list[tuple[str, dict[str, Any]]]: ...

    def pool_records(self) -> list[dict[str, Any]]: ...


@dataclass
class PageData:
    """Everything the page shows, read at `now`."""

    now: float
    nodes: list[dict[str, Any]] = field(default_factory=list)  # `/node-list` rows
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    pools: list[dict[str, Any]] = field(default_factory=list)  # pool components
    builds: list[dict[str, Any]] = field(default_factory=list)  # `/dib-image-list` rows
    uploads: list[dict[str, Any]] = field(default_factory=list)  # `/image-list` rows
    providers: Sequence[ProviderStatus] | None = None  # None: no launcher in this process


def collect(source: StatusSource, launcher_status: LauncherStatus | None) -> PageData:
    data = PageData(now=time.time())
    data.nodes = source.table("node-list").rows
    data.builds = source.table("dib-image-list").rows
    data.uploads = source.table("image-list").rows
    if isinstance(source, PageSource):
        data.requests = source.request_records()
        data.pools = source.pool_records()
    if launcher_status is not None:
        data.providers = list(launcher_status())
    return data


# -- small helpers ---------------------------------------------------------------------------


def esc(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return html.escape(", ".join(str(v) for v in value))
    return html.escape(str(value))


def age(epoch: Any, now: float) -> str:
    """`45s`, `12m 3s`, `3h 5m`, `2d 4h` since `epoch`; empty when unknown."""
    try:
        seconds = max(0, int(now - float(epoch)))
    except (TypeError, ValueError):
        return ""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def state_key(state: str) -> tuple[int, str]:
    return (STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER), state)


def badge(state: Any, text: str | None = None) -> str:
    """`state` as a coloured tag (CSS class `st-<state>`), showing `text` or the state."""
    text = esc(state if text is None else text)
    css = "".join(c if c.isalnum() else "-" for c in str(state or "unknown"))
    return f'<span class="st st-{css}">{text}</span>'


def table(headers: Sequence[str], rows: Iterable[str], empty: str, css: str = "") -> str:
    body = "".join(rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def cells(values: Iterable[str]) -> str:
    """Cells of already-escaped HTML."""
    return "".join(f"<td>{v}</td>" for v in values)


# -- sections --------------------------------------------------------------------------------


def summary(data: PageData) -> str:
    counts = Counter((str(n.get("provider") or ""), str(n.get("state") or "")) for n in data.nodes)
    states = sorted({s for _p, s in counts}, key=state_key)
    providers = sorted({p for p, _s in counts})
    rows = []
    for provider in providers:
        values = [str(counts[(provider, s)] or "") for s in states]
        total = sum(counts[(provider, s)] for s in states)
        rows.append(f"<tr><th>{esc(provider)}</th>{cells(values)}<td>{total}</td></tr>")
    if providers:
        totals = [str(sum(counts[(p, s)] for p in providers)) for s in states]
        rows.append(f'<tr class="total"><th>all</th>{cells(totals)}'
                    f"<td>{len(data.nodes)}</td></tr>")
    return table(["provider", *states, "total"], rows, "No nodes.", "counts")


def providers_section(data: PageData) -> str:
    """One row per pool: registered pools (any launcher) and this process's providers."""
    mine = {p.name: p for p in data.providers or ()}
    pools: dict[tuple[str, str], dict[str, Any]] = {}
    for component in data.pools:
        key = (str(component.get("provider_name") or ""), str(component.get("name") or ""))
        pools[key] = component
    for provider in mine.values():
        for pool in provider.pools:
            pools.setdefault((provider.name, pool.pool), {})
    rows = []
    for (provider_name, pool_name), component in sorted(pools.items()):
        status = mine.get(provider_name)
        pool_status = next((p for p in status.pools if p.pool == pool_name),
                           None) if status else None
        health = badge(status.health) if status else '<span class="dim">other launcher</span>'
        paused = component.get("paused")
        paused_html = ("" if paused is None else
                       badge("paused") if paused else '<span class="dim">no</span>')
        if pool_status is None or pool_status.at_quota is None:
            quota = '<span class="dim">n/a</span>' if pool_status else ""
        else:
            quota = (badge("at-quota", "at quota") if pool_status.at_quota
                     else '<span class="dim">no</span>')
        if pool_status is not None:
            limit = "∞" if pool_status.max_servers is None else str(pool_status.max_servers)
            servers = f"{pool_status.servers} / {limit}"
        else:
            servers = ""
        rows.append(
            f'<tr id="pool-{esc(provider_name)}-{esc(pool_name)}">'
            + cells([esc(provider_name), health,
                     esc(status.launches_in_flight) if status else "",
                     esc(pool_name), esc(sorted(component.get("supported_labels") or [])),
                     paused_html, quota, esc(servers)])
            + "</tr>")
    note = ("" if data.providers is not None else
            '<p class="dim">No launcher runs in this process: cloud health and quota '
            "are unknown here.</p>")
    return note + table(["provider", "cloud health", "launching", "pool", "labels", "paused",
                         "at quota", "servers / max"], rows, "No pools registered.")


def waiting_reasons(request: Mapping[str, Any], data: PageData) -> list[str]:
    """What is known to hold a waiting request up."""
    labels = set(request.get("node_types") or [])
    reasons = []
    offered = {str(label) for p in data.pools for label in p.get("supported_labels") or []}
    missing = sorted(labels - offered)
    if missing and data.pools:
        reasons.append(f"no registered pool offers {', '.join(missing)}")
    capable = [p for p in data.pools if labels <= set(p.get("supported_labels") or [])]
    if labels and not missing and not capable:
        reasons.append("no single pool offers all its labels")
    if capable and all(p.get("paused") for p in capable):
        reasons.append("every pool that could serve it is paused")
    at_quota = {(p.name, pool.pool) for p in data.providers or () for pool in p.pools
                if pool.at_quota}
    full = sorted(f"{p.get('provider_name')}/{p.get('name')}" for p in capable
                  if (p.get("provider_name"), p.get("name")) in at_quota)
    if full:
        reasons.append(f"at quota: {', '.join(full)}")
    providers = {p.get("provider_name") for p in capable}
    unhealthy = sorted(p.name for p in data.providers or ()
                       if p.health != "healthy" and p.name in providers)
    if unhealthy:
        reasons.append(f"cloud not healthy: {', '.join(unhealthy)}")
    if request.get("state") == "pending" and request.get("provider"):
        reasons.append(f"being served by {request['provider']}")
    return reasons


def requests_section(data: PageData) -> str:
    rows = []
    waiting = [(rid, r) for rid, r in data.requests if r.get("state") in WAITING_STATES]
    for rid, r in sorted(waiting, key=lambda item: float(item[1].get("state_time") or 0)):
        rows.append(
            f'<tr id="request-{esc(rid)}">'
            + cells([esc(rid), badge(r.get("state")), esc(r.get("requestor")),
                     esc(r.get("node_types") or []), esc(age(r.get("state_time"), data.now)),
                     esc(r.get("declined_by") or []),
                     "<br>".join(esc(w) for w in waiting_reasons(r, data))])
            + "</tr>")
    return table(["request", "state", "requestor", "labels", "waiting", "declined by", "why"],
                 rows, "No request is waiting.")


def address(node: Mapping[str, Any]) -> Any:
    """The address users reach the node at: public IPv4, else IPv6, else private IPv4
    (upstream's interface_ip without `use-internal-ip`)."""
    return node.get("public_ipv4") or node.get("ipv6") or node.get("private_ipv4")


def holder(node: Mapping[str, Any]) -> str:
    """Who holds the node and why: its hold job (an autohold) and its comment."""
    parts = [str(node[key]) for key in ("hold_job", "comment") if node.get(key)]
    return esc(" · ".join(parts))


def nodes_section(data: PageData) -> str:
    by_provider: dict[str, list[dict[str, Any]]] = {}
    for node in data.nodes:
        by_provider.setdefault(str(node.get("provider") or ""), []).append(node)
    if not by_provider:
        return '<p class="empty">No nodes.</p>'
    parts = []
    headers = ["id", "label", "state", "age", "address", "pool", "locked", "held by",
               "allocated to", "user data"]
    for provider, nodes in sorted(by_provider.items()):
        rows = [
            f'<tr id="node-{esc(n.get("id"))}" class="node" data-state="{esc(n.get("state"))}">'
            + cells([esc(n.get("id")), esc(n.get("label")), badge(n.get("state")),
                     esc(age(n.get("age"), data.now)), esc(address(n)), esc(n.get("pool")),
                     esc(n.get("locked")), holder(n), esc(n.get("allocated_to")),
                     esc(n.get("user_data"))])
            + "</tr>"
            for n in sorted(nodes, key=lambda n: str(n.get("id")))
        ]
        parts.append(f'<h3>{esc(provider) or "(no provider)"} '
                     f'<span class="dim">{len(nodes)} nodes</span></h3>'
                     + table(headers, rows, "No nodes."))
    return "".join(parts)


def images_section(data: PageData) -> str:
    builds = [
        "<tr>" + cells([esc(b.get("image")), esc(b.get("id")), badge(b.get("state")),
                        esc(age(b.get("age"), data.now)), esc(b.get("builder")),
                        esc(b.get("formats"))]) + "</tr>"
        for b in data.builds
    ]
    uploads = [
        "<tr>" + cells([esc(u.get("image")), esc(u.get("id")), esc(u.get("provider")),
                        esc(u.get("upload_id")), esc(u.get("external_id")),
                        badge(u.get("state")), esc(age(u.get("age"), data.now))]) + "</tr>"
        for u in data.uploads
    ]
    return ("<h3>Builds</h3>"
            + table(["image", "build", "state", "age", "builder", "formats"], builds,
                    "No image builds.")
            + "<h3>Uploads</h3>"
            + table(["image", "build", "provider", "upload", "cloud image id", "state", "age"],
                    uploads, "No image uploads."))


CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:24px;
 align-items:baseline}
header h1{font-size:18px;margin:0}
header span{color:#b8c0d0}
main{padding:8px 20px 24px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:14px 0;
 padding:6px 14px 12px}
h2{font-size:16px;margin:8px 0}
h3{font-size:14px;margin:12px 0 4px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eceef2;
 vertical-align:top}
thead th{background:#f0f2f5;font-weight:600}
table.counts{width:auto}
table.counts td{text-align:right}
tr.total{font-weight:600}
.dim,.empty{color:#6b7385}
.st{border-radius:3px;padding:0 6px;background:#e4e7ec;white-space:nowrap}
.st-ready,.st-healthy{background:#d3f2dc;color:#145c2a}
.st-in-use{background:#d6e6ff;color:#143f7a}
.st-building,.st-pending,.st-requested,.st-ramping,.st-uploading,.st-testing{
 background:#fff1c2;color:#6b4d00}
.st-failed,.st-open,.st-aborted,.st-at-quota{background:#fbd5d5;color:#8a1c1c}
.st-hold,.st-paused{background:#ead9fb;color:#4d2280}
.st-deleting,.st-used,.st-deleted{background:#e4e7ec;color:#4a5163}
"""


def render(data: PageData) -> str:
    waiting = sum(1 for _id, r in data.requests if r.get("state") in WAITING_STATES)
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data.now))
    sections = [
        ("nodes-by-state", "Nodes by provider and state", summary(data)),
        ("providers", "Providers and pools", providers_section(data)),
        ("requests", f"Requests waiting ({waiting})", requests_section(data)),
        ("nodes", f"Nodes ({len(data.nodes)})", nodes_section(data)),
        ("images", "Images", images_section(data)),
    ]
    body = "".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{content}</section>'
                   for sid, title, content in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>nodepool status</title><style>{CSS}</style></head><body>"
        f"<header><h1>nodepool status</h1><span>{len(data.nodes)} nodes · {waiting} "
        f"requests waiting</span><span>as of {esc(generated)} · refreshes every "
        f"{REFRESH_SECONDS} s</span></header>"
        f"<main>{body}</main></body></html>\n"
    )

"""Rendering of status tables (the `nodepool` CLI and the web app): PrettyTable-style text
(left-aligned) and JSON.

The text form matches upstream's PrettyTable output byte for byte for the plain cases
(`+---+` borders, one space of padding, left alignment), without the dependency.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from nodepool_ng.status import Table, format_age


def cell_text(value: Any) -> str:
    """How upstream shows one cell: lists comma-joined, None as `None`."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def render_rows(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A left-aligned PrettyTable-like grid of `headers` and `rows`."""
    text_rows = [[cell_text(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            # Multi-line cells (user data, comments) widen the column by their longest line.
            widths[i] = max(widths[i], *(len(line) for line in cell.split("\n")))
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [border, _line(headers, widths), border]
    for row in text_rows:
        lines = [cell.split("\n") for cell in row]
        height = max((len(c) for c in lines), default=1)
        for n in range(height):
            out.append(_line([c[n] if n < len(c) else "" for c in lines], widths))
    out.append(border)
    return "\n".join(out)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "|" + "|".join(f" {c:<{w}} " for c, w in zip(cells, widths, strict=True)) + "|"


def render_table(table: Table, fields: Sequence[str] | None = None) -> str:
    """The text table; ages (epoch seconds in the rows) are shown as DD:HH:MM:SS."""
    columns = table.select(fields)
    rows = []
    for obj in table.rows:
        values = []
        for key, _header in columns:
            value = obj.get(key)
            if key in table.age_keys:
                value = "" if value is None else format_age(value)
            values.append(value)
        rows.append(values)
    return render_rows([header for _key, header in columns], rows)


def render_json(table: Table, fields: Sequence[str] | None = None) -> str:
    """A JSON list of row objects keyed by column key (the web app's format)."""
    keys = [key for key, _header in table.select(fields)]
    return json.dumps([{k: obj.get(k) for k in keys} for obj in table.rows])


def render(table: Table, as_json: bool, fields: Sequence[str] | None = None) -> str:
    return render_json(table, fields) if as_json else render_table(table, fields)

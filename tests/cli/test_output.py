"""Text and JSON rendering of status tables (pure: no ZooKeeper)."""

from __future__ import annotations

import json
import time

from nodepool_ng.output import render_json, render_rows, render_table
from nodepool_ng.status import (
    ImageStatusView,
    NodeView,
    Table,
    format_age,
    image_status,
    label_list,
    node_list,
)


def test_render_rows_is_left_aligned_prettytable() -> None:
    text = render_rows(["ID", "Label"], [["1", "small"], ["0000000042", ["a", "b"]]])
    assert text.splitlines() == [
        "+------------+-------+",
        "| ID         | Label |",
        "+------------+-------+",
        "| 1          | small |",
        "| 0000000042 | a,b   |",
        "+------------+-------+",
    ]


def test_render_rows_empty_table_keeps_header() -> None:
    assert render_rows(["Label"], []).splitlines() == [
        "+-------+",
        "| Label |",
        "+-------+",
        "+-------+",
    ]


def test_multiline_cell_spans_lines() -> None:
    lines = render_rows(["A", "B"], [["x\nlonger", "y"]]).splitlines()
    assert lines[3] == "| x      | y |"
    assert lines[4] == "| longer |   |"


def test_format_age_days_hours_minutes_seconds() -> None:
    assert format_age(1000.0, now=1000.0 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5) == "02:03:04:05"
    assert format_age(2000.0, now=1000.0) == "00:00:00:00"


def test_node_list_short_and_detail_columns() -> None:
    views = [
        NodeView("0000000002", {"type": "old-string-label", "state": "ready"}, locked=True),
        NodeView(
            "0000000001",
            {"type": ["small"], "state": "building", "connection_port": {"secret": 1}},
            locked=False,
        ),
    ]
    short = node_list(views, detail=False)
    assert short.keys == [
        "id",
        "provider",
        "label",
        "server_id",
        "public_ipv4",
        "ipv6",
        "state",
        "age",
        "locked",
    ]
    assert [r["id"] for r in short.rows] == ["0000000001", "0000000002"]
    assert short.rows[1]["label"] == ["old-string-label"]
    assert short.rows[1]["locked"] == "locked"
    detail = node_list(views, detail=True)
    assert detail.keys[9:] == [
        "pool",
        "hostname",
        "private_ipv4",
        "AZ",
        "username",
        "connection_port",
        "launcher",
        "allocated_to",
        "hold_job",
        "comment",
        "user_data",
        "driver_data",
    ]
    assert detail.rows[0]["connection_port"] == "redacted"


def test_render_table_ages_and_fields() -> None:
    now = time.time()
    table = Table(
        (("id", "ID"), ("age", "Age"), ("state", "State")),
        [{"id": "1", "age": int(now - 61), "state": "ready"}],
    )
    text = render_table(table, fields=["id", "age"])
    assert "State" not in text
    assert "| 1  | 00:00:01:0" in text
    assert json.loads(render_json(table, fields=["state"])) == [{"state": "ready"}]


def test_label_list_is_union_of_pool_labels() -> None:
    table = label_list([{"supported_labels": ["b", "a"]}, {"supported_labels": ["a", "c"]}, {}])
    assert [r["label"] for r in table.rows] == ["a", "b", "c"]


def test_image_status_without_request_shows_blank_age() -> None:
    table = image_status([ImageStatusView("debian", paused=True, request_ctime=None)])
    assert table.rows == [
        {"image": "debian", "paused": True, "build_request": "", "build_request_age": None}
    ]
    assert "| debian | True   |               |                   |" in render_table(table)

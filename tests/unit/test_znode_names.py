"""The znode-name rule user input is checked against (web app, nodepool commands)."""

from __future__ import annotations

import pytest

from nodepool_ng.znode_names import znode_name_problem


@pytest.mark.parametrize("name", ["0000000001", "debian-12", "cloud_1.example", "ü"])
def test_valid_names(name: str) -> None:
    assert znode_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [("", "empty"), ("a/b", "'/'"), ("../x", "'/'"), (".", "not a valid"),
     ("..", "not a valid"), ("a\x00", "U+0000"), ("a\x1f", "U+001F"), ("\x85", "U+0085"),
     ("\ue000", "U+E000"), ("\ufffd", "U+FFFD")],
)
def test_invalid_names(name: str, why: str) -> None:
    problem = znode_name_problem(name)
    assert problem is not None and why in problem

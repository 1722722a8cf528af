"""`nodepool` commands refuse ids and names that are not znode names (`../x`, `a/b`):
one error line naming the argument, exit 1, and nothing written elsewhere in the tree."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kazoo.client import KazooClient

from tests.cli.conftest import CliResult

BAD = ["../../x", "a/b", "..", "x\x01"]
COMMANDS = {
    "delete": (["delete", "{}"], "id"),
    "hold": (["hold", "{}"], "id"),
    "image-pause": (["image-pause", "{}"], "image"),
    "image-unpause": (["image-unpause", "{}"], "image"),
    "info": (["info", "{}"], "provider"),
    "erase": (["erase", "--force", "{}"], "provider"),
    "alien-image-list": (["alien-image-list", "{}"], "provider"),
    "dib-image-delete": (["dib-image-delete", "{}-0000000001"], "id"),
    "image-delete": (["image-delete", "--provider", "cloud1", "--image", "debian",
                      "--build-id", "{}", "--upload-id", "0000000001"], "--build-id"),
}


def tree(kz: KazooClient, path: str = "/") -> set[str]:
    out = {path}
    for child in kz.get_children(path):
        out |= tree(kz, f"{path.rstrip('/')}/{child}")
    return out


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_name_is_refused_naming_the_argument(
    run_cli: Callable[..., CliResult], kazoo_client: KazooClient, command: str, bad: str
) -> None:
    argv, argument = COMMANDS[command]
    before = tree(kazoo_client)
    result = run_cli(*[a.replace("{}", bad) for a in argv])
    assert result.rc == 1, result
    assert result.err.startswith(f"nodepool: error: {argument}: "), result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert tree(kazoo_client) == before

"""doc/cli.md documents every command and option the parsers know, and no other command."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from nodepool_ng.cmd import admin, builder, launcher, simcloud

DOC = Path(__file__).resolve().parents[2] / "doc" / "cli.md"
HEADING = re.compile(r"^#{2,3} `(nodepool[\w-]*)(?: ([\w-]+))?`$", re.M)
OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions
            if isinstance(action, argparse._SubParsersAction) for name in action.choices}


def documented() -> dict[tuple[str, str | None], str]:
    """(program, command or None) -> the text of its section."""
    text = DOC.read_text()
    matches = list(HEADING.finditer(text))
    out = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        out[(match.group(1), match.group(2))] = text[match.end():end]
    return out


def help_options(main: Callable[[list[str]], object], argv: list[str],
                 capsys: pytest.CaptureFixture[str]) -> set[str]:
    """The options `--help` lists (hidden ones excluded), read from the real parser."""
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    usage = capsys.readouterr().out
    return set(OPTION.findall(usage.split("options:", 1)[-1])) - {"-h", "--help"}


def test_every_nodepool_command_is_documented_and_no_other() -> None:
    known = subcommands(admin.build_parser())
    doc = {command for program, command in documented() if program == "nodepool" and command}
    assert known - doc == set(), f"commands missing from doc/cli.md: {sorted(known - doc)}"
    assert doc - known == set(), f"doc/cli.md documents unknown commands: {sorted(doc - known)}"


def test_every_simcloud_command_is_documented_and_no_other() -> None:
    known = subcommands(simcloud.parser())
    doc = {c for p, c in documented() if p == "nodepool-simcloud" and c}
    assert known == doc


def test_every_program_has_a_section() -> None:
    sections = documented()
    for program in ("nodepool", "nodepool-launcher", "nodepool-builder", "nodepool-simcloud"):
        assert (program, None) in sections, program
    programs = {p for p, _c in sections}
    assert programs == {"nodepool", "nodepool-launcher", "nodepool-builder",
                        "nodepool-simcloud"}


def test_every_option_is_in_its_section(capsys: pytest.CaptureFixture[str]) -> None:
    sections = documented()
    cases: list[tuple[str, str | None, Callable[[list[str]], object], list[str]]] = [
        ("nodepool", None, admin.main, []),
        ("nodepool-launcher", None, launcher.parse_args, []),
        ("nodepool-builder", None, builder.main, []),
        ("nodepool-simcloud", None, simcloud.main, []),
    ]
    cases += [("nodepool", c, admin.main, [c]) for c in subcommands(admin.build_parser())]
    cases += [("nodepool-simcloud", c, simcloud.main, [c])
              for c in subcommands(simcloud.parser())]
    missing = []
    for program, command, main, argv in cases:
        section = sections[(program, command)]
        for option in sorted(help_options(main, argv, capsys)):
            if option not in section:
                missing.append(f"{program} {command or ''}: {option}")
    assert not missing, f"options missing from their doc/cli.md section: {missing}"

"""Docs, docstrings and comments state facts themselves: no citation of a file outside the
repository (the upstream reference specification, by name or by its section numbers).

`ALLOWED` lists the files that still cite it because they are being edited elsewhere; the
list can only shrink: a listed file that no longer cites is an error too, so whoever cleans
it removes it from the list.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("nodepool_ng", "doc", "tests")
# Spelled in pieces so that this file does not match itself.
CITATION = re.compile("spec " + "\u00a7" + "|nodepool" + "-spec")

# Being edited elsewhere (each one's citations go when its owner next touches it).
ALLOWED = frozenset(
    {
        "doc/configuration.md",
        "nodepool_ng/config/models.py",
        "nodepool_ng/config/schema.py",
    }
)


def citing_files() -> dict[str, list[str]]:
    """Relative path -> its citing lines ("line: text"), for every text file scanned."""
    out: dict[str, list[str]] = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or path.suffix not in (".py", ".md", ".yaml", ".txt", ".rst"):
                continue
            lines = path.read_text(errors="replace").splitlines()
            hits = [f"{n}: {line.strip()}" for n, line in enumerate(lines, 1)
                    if CITATION.search(line)]
            if hits:
                out[str(path.relative_to(ROOT))] = hits
    return out


def test_no_file_cites_the_external_spec() -> None:
    found = citing_files()
    new = {path: hits for path, hits in found.items() if path not in ALLOWED}
    assert not new, (
        "state the fact itself instead of citing a file outside the repository:\n"
        + "\n".join(f"{path}:{hit}" for path, hits in new.items() for hit in hits)
    )


def test_allow_list_only_shrinks() -> None:
    stale = sorted(ALLOWED - set(citing_files()))
    assert not stale, f"no longer cite anything: remove them from ALLOWED: {stale}"


def test_the_pattern_finds_a_citation() -> None:
    assert CITATION.search("defaults are upstream's (spec " + "\u00a7" + "3)")
    assert CITATION.search("see nodepool" + "-spec.md")
    assert not CITATION.search("upstream deletes unlocked in-use nodes")

"""Docs, docstrings and comments state facts themselves: no citation of a file outside the
repository (the upstream reference specification, by name or by its section numbers).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("nodepool_ng", "doc", "tests", "tools", "README.md")
# Spelled in pieces so that this file does not match itself.
CITATION = re.compile("spec " + "\u00a7" + "|nodepool" + "-spec", re.IGNORECASE)
SUFFIXES = (".py", ".md", ".yaml", ".txt", ".rst", ".sh")


def citing_files() -> dict[str, list[str]]:
    """Relative path -> its citing lines ("line: text"), for every text file scanned."""
    out: dict[str, list[str]] = {}
    for top in SCANNED:
        base = ROOT / top
        for path in sorted(base.rglob("*")) if base.is_dir() else [base]:
            if not path.is_file() or path.suffix not in SUFFIXES:
                continue
            lines = path.read_text(errors="replace").splitlines()
            hits = [f"{n}: {line.strip()}" for n, line in enumerate(lines, 1)
                    if CITATION.search(line)]
            if hits:
                out[str(path.relative_to(ROOT))] = hits
    return out


def test_no_file_cites_the_external_spec() -> None:
    found = citing_files()
    assert not found, (
        "state the fact itself instead of citing a file outside the repository:\n"
        + "\n".join(f"{path}:{hit}" for path, hits in found.items() for hit in hits)
    )


def test_the_pattern_finds_a_citation() -> None:
    assert CITATION.search("defaults are upstream's (spec " + "\u00a7" + "3)")
    assert CITATION.search("see nodepool" + "-spec.md")
    assert CITATION.search("Spec " + "\u00a7" + "2.1 step 3: ...")
    assert not CITATION.search("upstream deletes unlocked in-use nodes")

"""The package layering, read from the source with `ast` (no module is imported).

- `model` imports neither `zk` nor `drivers`; `drivers` never import `zk`;
- only `zk` imports kazoo;
- `simcloud` imports nothing of the rest of nodepool_ng (it stands alone: a fake cloud);
- `cmd` (console scripts) is imported by nothing outside `cmd`;
- no import circle between modules, counting imports inside functions and those under
  `if TYPE_CHECKING:` too (a circle of types still makes two modules one).

Each rule is also checked against a small planted tree that breaks it, so that a rule which
can no longer see its violation fails here rather than passing silently.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "nodepool_ng"


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    imported: str  # dotted name as far as it resolves to a module of the tree, else as written
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        kind = " (TYPE_CHECKING)" if self.type_only else ""
        return f"{self.importer}:{self.line} imports {self.imported}{kind}"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file for every module below `root` (the package directory)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement at any depth (functions included), with its TYPE_CHECKING flag."""

    def walk(node: ast.AST, type_only: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from walk(child, True)
            for child in node.orelse:
                yield from walk(child, type_only)
            return
        for child in ast.iter_child_nodes(node):
            yield from walk(child, type_only)

    yield from walk(tree, False)


def imports_of(root: Path) -> list[Import]:
    modules = module_names(root)
    found = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, type_only in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    if not is_package:
                        anchor.pop()
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import mod` imports the module pkg.mod when there is one.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in dict.fromkeys(targets):
                found.append(Import(name, target, node.lineno, type_only))
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_violations(root: Path) -> list[str]:
    top = root.name
    rules = [
        # (importer package, what it must not import, why)
        (f"{top}.model", f"{top}.zk", "model imports zk"),
        (f"{top}.model", f"{top}.drivers", "model imports drivers"),
        (f"{top}.drivers", f"{top}.zk", "drivers import zk"),
    ]
    bad = []
    for imp in imports_of(root):
        for importer, forbidden, why in rules:
            if _within(imp.importer, importer) and _within(imp.imported, forbidden):
                bad.append(f"{why}: {imp}")
        if _within(imp.imported, "kazoo") and not _within(imp.importer, f"{top}.zk"):
            bad.append(f"kazoo outside zk: {imp}")
        if (_within(imp.importer, f"{top}.simcloud") and _within(imp.imported, top)
                and not _within(imp.imported, f"{top}.simcloud")):
            bad.append(f"simcloud imports the rest of {top}: {imp}")
        if _within(imp.imported, f"{top}.cmd") and not _within(imp.importer, f"{top}.cmd"):
            bad.append(f"cmd imported from outside cmd: {imp}")
    return bad


def import_circles(root: Path) -> list[list[str]]:
    """Strongly connected groups (more than one module, or a module importing itself) of
    the graph of imports between modules of the tree."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for imp in imports_of(root):
        if imp.imported in modules:
            graph[imp.importer].add(imp.imported)
    # Tarjan's algorithm, iterative.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph[node]:
                    groups.append(sorted(group))
    return sorted(groups)


def test_package_layers_are_kept() -> None:
    assert layer_violations(PACKAGE) == []


def test_no_import_circles() -> None:
    assert import_circles(PACKAGE) == []


# -- the rules can fail -----------------------------------------------------------------------

PLANTED = {
    "model/__init__.py": "",
    "model/node.py": "from pkg.zk import paths\n",
    "model/image.py": "def f():\n    import pkg.drivers.base\n",
    "zk/__init__.py": "",
    "zk/paths.py": "import kazoo.client\n",
    "drivers/__init__.py": "",
    "drivers/base.py": "from ..zk.paths import ROOT\n",
    "drivers/a.py": "from pkg.drivers import b\n",
    "drivers/b.py": "def later():\n    from . import a\n",
    "simcloud/__init__.py": "",
    "simcloud/http.py": "from pkg.errors import Boom\nfrom pkg.simcloud import state\n",
    "simcloud/state.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg.simcloud import http\n"
    ),
    "cmd/__init__.py": "",
    "cmd/output.py": "",
    "web/__init__.py": "",
    "web/app.py": "import kazoo\nfrom pkg.cmd.output import render\n",
    "errors.py": "",
    "self.py": "import pkg.self\n",
}


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    for rel, text in {"__init__.py": "", **PLANTED}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_planted_layer_violations_are_found(planted: Path) -> None:
    found = layer_violations(planted)
    assert sorted(line.split(":")[0] for line in found) == sorted([
        "model imports zk",
        "model imports drivers",
        "drivers import zk",
        "kazoo outside zk",
        "simcloud imports the rest of pkg",
        "cmd imported from outside cmd",
    ]), found
    assert "pkg.model.image:2 imports pkg.drivers.base" in "\n".join(found)
    # Inside zk, kazoo is fine; inside cmd, cmd is fine.
    assert not [line for line in found if "pkg.zk.paths:" in line]


def test_planted_circles_are_found(planted: Path) -> None:
    # drivers.a <-> drivers.b closes through a function-level relative import; simcloud's
    # http <-> state through an import under TYPE_CHECKING.
    assert import_circles(planted) == [
        ["pkg.drivers.a", "pkg.drivers.b"],
        ["pkg.self"],
        ["pkg.simcloud.http", "pkg.simcloud.state"],
    ]

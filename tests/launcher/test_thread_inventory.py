"""doc/launcher.md's thread table against the threads of a real `nodepool-launcher`.

The launcher runs as its console script (2 OpenStack providers on simcloud, 3 pools, the web
app, min-ready nodes so that launches go through every part); once its nodes are READY a
SIGUSR2 dump lists every thread by name. Each name must match exactly one row of the table
("missing from the doc" otherwise), and each row's count formula must give the number seen
(at most that number for an "up to" row). The doc's totals must be the sums of its rows.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient

from tests.cli.test_signals import Daemon, pool_providers
from tests.fixtures.zookeeper import ZooKeeperChroot
from tests.launcher import harness as h

DOC = Path(__file__).resolve().parents[2] / "doc" / "launcher.md"
BIN = Path(sys.executable).parent
# The launcher under test: P providers (O OpenStack, A AWS, S static), Q pools, the web app
# (W), no MQTT (M).
SETUP = {"P": 2, "O": 2, "A": 0, "S": 0, "Q": 3, "W": 1, "M": 0}
FORMULA = re.compile(r"^[\dPOASQWM+* ()]+$")
TOTALS = re.compile(r"always has `([^`]+)` threads, and at most\s+`([^`]+)` more", re.S)


@dataclass(frozen=True)
class Family:
    pattern: str  # as written in the doc
    regex: re.Pattern[str]
    formula: str
    up_to: bool

    def count(self, values: dict[str, int]) -> int:
        return evaluate(self.formula, values)


def evaluate(formula: str, values: dict[str, int]) -> int:
    assert FORMULA.match(formula), f"not a count formula: {formula!r}"
    result = eval(formula, {"__builtins__": {}}, dict(values))
    assert isinstance(result, int)
    return result


def section() -> str:
    text = DOC.read_text()
    start = text.index("## Threads and loops")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def families() -> list[Family]:
    """The table rows: | `name pattern` | `count` | woken by | does |."""
    out = []
    for line in section().splitlines():
        match = re.match(r"^\| `([^`]+)` \| `(up to )?([^`]+)` \|", line)
        if match is None:
            continue
        pattern, up_to, formula = match.groups()
        parts = re.split(r"<[^>]+>", pattern)
        regex = re.compile(".+?".join(re.escape(p) for p in parts) + "$")
        out.append(Family(pattern, regex, formula, bool(up_to)))
    assert len(out) > 10, "doc/launcher.md: the thread table was not found"
    return out


def test_totals_are_the_sums_of_the_rows() -> None:
    match = TOTALS.search(section())
    assert match, "doc/launcher.md: the totals sentence was not found"
    always, busy = match.groups()
    rows = families()
    for values in (SETUP, {"P": 5, "O": 2, "A": 1, "S": 2, "Q": 9, "W": 0, "M": 1},
                   {"P": 1, "O": 0, "A": 0, "S": 1, "Q": 1, "W": 1, "M": 0}):
        fixed = sum(f.count(values) for f in rows if not f.up_to)
        extra = sum(f.count(values) for f in rows if f.up_to)
        assert evaluate(always, values) == fixed, f"`{always}` at {values}: rows say {fixed}"
        assert evaluate(busy, values) == extra, f"`{busy}` at {values}: rows say {extra}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def launcher_threads(tmp_path: Path, zk_chroot: ZooKeeperChroot,
                     kazoo_client: KazooClient) -> Iterator[list[str]]:
    """The thread names of a busy-then-idle launcher with the SETUP above."""
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = h.start_clouds([{"name": "cloud1"}, {"name": "cloud2"}], clouds_yaml)
    launcher: Daemon | None = None
    try:
        p1 = h.provider("p1", "cloud1")
        p1["pools"].append({**p1["pools"][0], "name": "second"})
        config = h.write_config(tmp_path / "nodepool.yaml", zk_chroot,
                                [p1, h.provider("p2", "cloud2")],
                                labels=[{"name": "small", "min-ready": 3}, {"name": "big"}])
        cfg = yaml.safe_load(config.read_text())
        cfg["webapp"] = {"port": _free_port(), "listen_address": "127.0.0.1"}
        config.write_text(yaml.safe_dump(cfg))
        launcher = Daemon([str(BIN / "nodepool-launcher"), "-f", "-c", str(config),
                           "--clouds-yaml", str(clouds_yaml)], tmp_path / "launcher.log")
        launcher.wait_for("both providers' pools",
                          lambda: pool_providers(kazoo_client) == {"p1", "p2"})

        def min_ready() -> bool:
            nodes = h.all_nodes(kazoo_client).values()
            return sum(1 for n in nodes if n.get("state") == "ready") >= 3

        launcher.wait_for("min-ready nodes", min_ready, timeout=90)
        launcher.proc.send_signal(signal.SIGUSR2)
        launcher.wait_for("the SIGUSR2 thread dump", lambda: "Thread dump:" in launcher.output())
        assert launcher.stop() == 0, launcher.output()  # the dump is complete in the log now
        dump = launcher.output().split("Thread dump:", 1)[1]
        names = re.findall(r"^Thread: (.*) \(\d+\)$", dump, re.M)
        assert "MainThread" in names, dump
        yield names
    finally:
        if launcher is not None and launcher.proc.poll() is None:
            launcher.proc.kill()
            launcher.proc.wait()
        sim.stop()


@pytest.mark.slow
def test_every_launcher_thread_is_in_the_doc_with_its_count(
        launcher_threads: list[str]) -> None:
    rows = families()
    seen: Counter[str] = Counter()
    unknown, ambiguous = [], []
    for name in launcher_threads:
        matches = [f for f in rows if f.regex.match(name)]
        if not matches:
            unknown.append(name)
        elif len(matches) > 1:
            ambiguous.append(f"{name}: {[f.pattern for f in matches]}")
        else:
            seen[matches[0].pattern] += 1
    assert not unknown, f"threads missing from doc/launcher.md's thread table: {unknown}"
    assert not ambiguous, f"threads matching several rows of the table: {ambiguous}"
    wrong = []
    for family in rows:
        expected, got = family.count(SETUP), seen[family.pattern]
        if (got > expected) if family.up_to else (got != expected):
            wrong.append(f"{family.pattern}: {got} running, the doc says "
                         f"{'up to ' if family.up_to else ''}{family.formula} = {expected}")
    assert not wrong, "thread counts differ from doc/launcher.md:\n" + "\n".join(wrong)

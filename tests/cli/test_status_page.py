"""The status page as a browser renders it: headless Chromium loads `/` of a web app beside
an in-process launcher on simcloud that keeps min-ready nodes, and the rendered DOM shows
every node `nodepool list` shows, with its label and state."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nodepool_ng.cmd.admin import main as nodepool
from nodepool_ng.launcher.service import Launcher
from nodepool_ng.web.server import WebApp
from tests.launcher import harness as h
from tests.launcher.env import Env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (tools/setup-env.sh installs it)")


def chromium_args(tmp_path: Path) -> list[str]:
    """Headless Chromium as root in a container: no sandbox, no GPU, a private profile."""
    return [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}"]


def dump_dom(tmp_path: Path, url: str) -> str:
    result = subprocess.run([*chromium_args(tmp_path), "--dump-dom", url],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class NodeRows(HTMLParser):
    """The cell texts of every `<tr class="node" id="node-ID">`, by node id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("class") == "node" and (a.get("id") or "").startswith("node-"):
            self._row = self.rows.setdefault(str(a["id"])[len("node-"):], [])
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None


@pytest.fixture
def launcher(env: Env) -> Launcher:
    env.clouds([{"name": "cloud1"}, {"name": "cloud2"}])
    launcher = env.start(
        [h.provider("sim-a", "cloud1", labels=("small", "big")),
         h.provider("sim-b", "cloud2", labels=("small",))],
        labels=[{"name": "small", "min-ready": 2}, {"name": "big", "min-ready": 1}],
    )

    def settled() -> bool:
        states = [str(n.state) for n in launcher.zk.nodes()]
        return len(states) >= 3 and all(s == "ready" for s in states)

    # Every node ready: min-ready is met, so nothing changes while the test looks.
    h.wait_for("3 min-ready nodes, all ready", settled, timeout=60)
    return launcher


@pytest.fixture
def webapp(launcher: Launcher) -> Iterator[WebApp]:
    app = WebApp(lambda: launcher.zk_client, lambda: launcher.config, host="127.0.0.1",
                 port=0, launcher_status=launcher.provider_status)
    app.start()
    try:
        yield app
    finally:
        app.stop()


def test_page_shows_every_node_nodepool_list_shows(
    env: Env, launcher: Launcher, webapp: WebApp, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    webapp.cache.ttl = 600  # the page Chromium renders is the one read just below
    dom = dump_dom(tmp_path, f"http://127.0.0.1:{webapp.port}/")
    capsys.readouterr()
    assert nodepool(["-c", str(env.tmp_path / "nodepool.yaml"), "--json", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    rows = NodeRows()
    rows.feed(dom)

    assert len(listed) >= 3
    assert sorted(rows.rows) == sorted(str(n["id"]) for n in listed)
    for node in listed:
        cells = rows.rows[str(node["id"])]
        # Columns: id, label, state, age, address, ...
        assert cells[0] == node["id"]
        assert cells[1] == ", ".join(node["label"])
        assert cells[2] == node["state"]
        assert cells[4] == (node["public_ipv4"] or node["ipv6"] or ""), cells
    # The launcher's own view: both providers' clouds healthy, every pool listed.
    assert 'id="pool-sim-a-main"' in dom and 'id="pool-sim-b-main"' in dom
    assert dom.count('<span class="st st-healthy">healthy</span>') == 2

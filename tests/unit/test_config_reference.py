"""doc/config-reference.md is generated from the schemas and models: it must match them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "config_reference.py"


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_reference", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_committed_reference_matches_the_schema() -> None:
    tool = load_tool()
    assert tool.OUTPUT.read_text() == tool.render(), (
        "doc/config-reference.md is stale: regenerate it with "
        "`python tools/config_reference.py` and commit it")


def test_every_schema_key_is_in_the_reference() -> None:
    from nodepool_ng.config import schema

    text = (ROOT / "doc" / "config-reference.md").read_text()
    for key in ("zookeeper-timeout", "labels[].min-ready", "webapp.port",
                "providers[].pools[].labels[].flavor-name",
                "providers[].pools[].nodes[].max-parallel-jobs",
                "providers[].pools[].labels[].instance-type"):
        assert f"| `{key}` |" in text, key
    for marker in schema.TOP_LEVEL.schema:
        assert f"| `{getattr(marker, 'schema', marker)}` |" in text


def test_rows_carry_type_default_allowed_values_and_constraints() -> None:
    rows = {row.path: row for _t, _p, section in load_tool().sections() for row in section
            if _p == "main"}
    qos = rows["mqtt.qos"]
    assert (qos.type, qos.required, qos.default, qos.allowed) == ("int", False, "`0`",
                                                                  "`0`, `1`")
    port = rows["mqtt.port"]
    assert port.default == "`1883`" and "1-65535" in port.description
    assert rows["labels[].name"].required and rows["labels[].name"].default == ""
    assert rows["zookeeper-servers[].port"].default == "`2281`"


def test_check_exits_non_zero_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "config-reference.md"
    stale.write_text((ROOT / "doc" / "config-reference.md").read_text().replace(
        "| `zookeeper-timeout` |", "| `zookeeper-timeout-renamed` |"))
    result = subprocess.run([sys.executable, str(TOOL), "--check", "--output", str(stale)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "python tools/config_reference.py" in result.stderr
    fresh = tmp_path / "fresh.md"
    subprocess.run([sys.executable, str(TOOL), "--output", str(fresh)], check=True)
    assert subprocess.run([sys.executable, str(TOOL), "--check", "--output", str(fresh)],
                          check=False).returncode == 0


def test_a_description_of_no_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = load_tool()
    monkeypatch.setitem(tool.DESCRIPTIONS, "labels[].no-such-key", "text")
    with pytest.raises(SystemExit, match="no-such-key"):
        tool.render()

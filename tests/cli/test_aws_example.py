"""`nodepool config-validate` on the shipped AWS example (an OpenStack and an AWS provider):
the registry resolves `driver: aws`, and a broken AWS provider is named by its path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "nodepool-aws-example.yaml"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "nodepool"), "-c", str(path), "config-validate"],
                          capture_output=True, text=True, timeout=60)


def test_aws_example_is_valid() -> None:
    result = validate(EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout + result.stderr


def test_aws_provider_errors_name_their_path(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    index, aws = next((i, p) for i, p in enumerate(data["providers"])
                      if p.get("driver") == "aws")
    del aws["region-name"]
    bad = tmp_path / "nodepool.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = validate(bad)
    assert result.returncode != 0
    assert f"providers[{index}].region-name: required key not provided" in result.stderr

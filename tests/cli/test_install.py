"""`pip install` of the package alone (no extras) gives working console scripts.

A fresh venv without the system's or the suite's packages; pip may fetch the runtime
dependencies from the package index. Catches runtime imports of test-only packages (simcloud
once imported keystoneauth1.fixture, which needs `fixtures`).
"""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

import nodepool_ng

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("nodepool", "nodepool-launcher", "nodepool-builder", "nodepool-simcloud")

PROFILE = """\
clouds:
  - name: sim-one
    images: [{name: cirros}]
"""

GET_TOKEN = """\
import openstack
conn = openstack.connect(cloud="sim-one")
assert conn.auth_token, "no token"
print("servers:", len(list(conn.compute.servers())))
"""


def _source_copy(dest: Path) -> Path:
    """What pip needs to build the package, away from the shared working tree (an in-tree
    build would write build/ and egg-info there)."""
    shutil.copytree(REPO / "nodepool_ng", dest / "nodepool_ng",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    return dest


def _run(*argv: str | Path, timeout: float = 600, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, check=False, **kw)  # type: ignore[call-overload]


@pytest.mark.slow
def test_plain_pip_install_gives_working_console_scripts(tmp_path: Path) -> None:
    src = _source_copy(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    bin_dir = env_dir / "bin"
    installed = _run(bin_dir / "pip", "install", "-q", "--disable-pip-version-check", src)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # No test-only package may sneak in as a runtime dependency.
    leaked = _run(bin_dir / "python", "-c", "import fixtures")
    assert leaked.returncode != 0, "'fixtures' got installed as a runtime dependency"

    for script in SCRIPTS:
        result = _run(bin_dir / script, "--help", timeout=120)
        assert result.returncode == 0, f"{script} --help: {result.stderr[-3000:]}"
        assert "usage:" in result.stdout
        version = _run(bin_dir / script, "--version", timeout=120)
        assert version.returncode == 0, f"{script} --version: {version.stderr[-3000:]}"
        assert version.stdout.strip() == f"nodepool_ng {nodepool_ng.__version__}"

    profile = tmp_path / "simcloud.yaml"
    profile.write_text(PROFILE)
    clouds_yaml = tmp_path / "clouds.yaml"
    sim = subprocess.Popen(
        [str(bin_dir / "nodepool-simcloud"), "--config", str(profile),
         "--clouds-yaml", str(clouds_yaml)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert sim.stdout is not None
        seen = []
        for line in sim.stdout:  # ends when the process exits
            seen.append(line)
            if line.startswith("clouds.yaml written"):
                break
        assert clouds_yaml.exists(), "nodepool-simcloud did not start:\n" + "".join(seen)
        token = _run(bin_dir / "python", "-c", GET_TOKEN, timeout=120,
                     env={"OS_CLIENT_CONFIG_FILE": str(clouds_yaml), "PATH": str(bin_dir)})
        assert token.returncode == 0, token.stderr[-3000:]
        assert "servers: 0" in token.stdout
    finally:
        sim.terminate()
        sim.wait(30)

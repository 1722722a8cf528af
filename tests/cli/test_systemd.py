"""The systemd units in etc/systemd: valid (`systemd-analyze verify`), hardened
(`systemd-analyze security` at most 4.0 for the launcher and the builder, printed by
tools/systemd_security.py), `Type=notify` with a watchdog and a working reload, and simcloud
never writing the clouds.yaml the other units read.

The systemd-analyze tests skip, saying why, where the tool is missing; it works on unit
files without a running systemd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT_DIR = REPO / "etc" / "systemd"
BIN = Path(sys.executable).parent
DAEMONS = ("nodepool-launcher.service", "nodepool-launcher@.service", "nodepool-builder.service")
UNITS = (*DAEMONS, "nodepool-simcloud.service")
# The bar for the two daemons (systemd-analyze's scale: 0 safe .. 10 unsafe).
MAX_EXPOSURE = 4.0
# What the launcher and builder read: the real clouds.
SHARED_CLOUDS_YAML = "/etc/openstack/clouds.yaml"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed here")


def entries(unit: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file in order; repeated keys kept, comments dropped."""
    section = ""
    out = []
    for line in (UNIT_DIR / unit).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(unit: str, key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in entries(unit) if s == section and k == key]


def value(unit: str, key: str, section: str = "Service") -> str:
    found = values(unit, key, section)
    assert len(found) == 1, (unit, key, found)
    return found[0]


def test_every_unit_is_checked_here() -> None:
    assert sorted(p.name for p in UNIT_DIR.glob("*.service")) == sorted(UNITS)


# -- systemd-analyze ----------------------------------------------------------------------------


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, unit: str) -> None:
    # verify checks that ExecStart's program exists: point the copy at the installed
    # console scripts (the unit's path, /usr/local/bin, is where the install guide puts them).
    text = (UNIT_DIR / unit).read_text()
    assert "/usr/local/bin/nodepool" in text
    copy = tmp_path / unit
    copy.write_text(text.replace("/usr/local/bin/", f"{BIN}/"))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                            text=True, timeout=60, check=False)
    # verify exits 0 on unknown keys or bad values and only warns: its output must be empty.
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


@needs_analyze
def test_verify_reports_what_a_broken_unit_gets_wrong(tmp_path: Path) -> None:
    """The check above can fail: a misspelt type and an unknown key are reported."""
    bad = tmp_path / "bad.service"
    bad.write_text((UNIT_DIR / "nodepool-launcher.service").read_text()
                   .replace("/usr/local/bin/", f"{BIN}/")
                   .replace("Type=notify", "Type=notfy\nWatchdogSecs=1"))
    result = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert "notfy" in result.stderr and "WatchdogSecs" in result.stderr


def run_tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "tools" / "systemd_security.py"),
                           *map(str, args)], capture_output=True, text=True, timeout=120,
                          check=False)


def scores(output: str) -> dict[str, float]:
    out = {}
    for line in output.splitlines():
        match = re.match(r"(\S+)\s+(\d+\.\d)\s+\S+", line)
        assert match, line
        out[match.group(1)] = float(match.group(2))
    return out


@needs_analyze
def test_security_tool_rates_every_unit_and_daemons_are_at_most_4() -> None:
    result = run_tool()
    assert result.returncode == 0, result.stderr
    rated = scores(result.stdout)
    assert sorted(rated) == sorted(UNITS)
    for unit in DAEMONS:
        assert rated[unit] <= MAX_EXPOSURE, (unit, result.stdout)
    # The same bar through the tool's own check.
    strict = run_tool("--max", MAX_EXPOSURE, *(UNIT_DIR / u for u in DAEMONS))
    assert strict.returncode == 0, strict.stdout + strict.stderr


@needs_analyze
def test_security_tool_fails_a_unit_above_the_bar(tmp_path: Path) -> None:
    """What the units were before issue 11 (Type=simple, ProtectSystem=full only)."""
    weak = tmp_path / "weak.service"
    weak.write_text("[Service]\nType=simple\nUser=nodepool\nExecStart=/bin/true\n"
                    "NoNewPrivileges=true\nProtectSystem=full\n")
    result = run_tool("--max", MAX_EXPOSURE, weak)
    assert result.returncode == 1
    assert scores(result.stdout.replace("  (above 4)", ""))["weak.service"] > MAX_EXPOSURE


# -- what the units promise ---------------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_notify_and_runs_as_the_nodepool_user(unit: str) -> None:
    assert value(unit, "Type") == "notify"
    assert value(unit, "User") == "nodepool"
    assert value(unit, "Group") == "nodepool"
    # The console scripts stay in the foreground: their pid is systemd's MAINPID.
    exec_start = value(unit, "ExecStart")
    if unit != "nodepool-simcloud.service":
        assert " -f " in exec_start
    assert value(unit, "ProtectSystem") == "strict"
    assert value(unit, "PrivateTmp") == "yes"
    assert value(unit, "ProtectHome") == "yes"


def test_the_user_is_created_by_the_sysusers_file() -> None:
    line = next(ln for ln in (UNIT_DIR / "nodepool.sysusers.conf").read_text().splitlines()
                if ln.startswith("u "))
    assert line.split()[1] == "nodepool"
    # Its home is the units' state directory.
    assert "/var/lib/nodepool " in line
    for unit in DAEMONS:
        assert value(unit, "StateDirectory") == "nodepool"
        assert value(unit, "LogsDirectory") == "nodepool"


@pytest.mark.parametrize("unit", DAEMONS)
def test_daemon_has_a_watchdog_and_reloads_with_sighup(unit: str) -> None:
    assert int(value(unit, "WatchdogSec")) >= 60
    assert value(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert value(unit, "Restart") == "on-failure"  # a watchdog kill is a failure


def test_launcher_is_confined_to_what_it_uses() -> None:
    for unit in ("nodepool-launcher.service", "nodepool-launcher@.service"):
        assert value(unit, "NoNewPrivileges") == "yes"
        assert value(unit, "CapabilityBoundingSet") == ""
        assert value(unit, "RestrictAddressFamilies") == "AF_INET AF_INET6 AF_UNIX"
        assert values(unit, "SystemCallFilter")[0] == "@system-service"
        assert value(unit, "PrivateDevices") == "yes"


def test_builder_keeps_what_diskimage_builder_needs() -> None:
    unit = "nodepool-builder.service"
    # sudo is set-uid: no NoNewPrivileges; root under sudo mounts, chroots, makes devices.
    assert value(unit, "NoNewPrivileges") == "no"
    caps = set(value(unit, "CapabilityBoundingSet").split())
    assert {"CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_SETUID", "CAP_SETGID"} <= caps
    assert "CAP_NET_ADMIN" not in caps and "CAP_SYS_MODULE" not in caps
    assert values(unit, "SystemCallFilter") == ["@system-service @mount"]
    assert "block-loop rw" in values(unit, "DeviceAllow")
    assert value(unit, "DevicePolicy") == "closed"


def test_simcloud_does_not_write_the_clouds_yaml_the_other_units_read() -> None:
    unit = "nodepool-simcloud.service"
    args = value(unit, "ExecStart").split()
    written = args[args.index("--clouds-yaml") + 1]
    assert written != SHARED_CLOUDS_YAML
    # Its own state directory, the only place it may write.
    state = value(unit, "StateDirectory")
    assert written == f"/var/lib/{state}/clouds.yaml"
    assert state != "nodepool"
    # The others read the real clouds' file.
    for daemon in DAEMONS:
        assert f"OS_CLIENT_CONFIG_FILE={SHARED_CLOUDS_YAML}" in values(daemon, "Environment")
    # simcloud is loopback-only.
    assert value(unit, "IPAddressDeny") == "any"
    assert value(unit, "IPAddressAllow") == "localhost"

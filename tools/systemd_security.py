#!/usr/bin/env python3
"""Print `systemd-analyze security` exposure of each unit file (lower is better; 10 = none).

    tools/systemd_security.py                  # every unit in etc/systemd/
    tools/systemd_security.py UNIT.service ... # these files
    tools/systemd_security.py --max 4.0 etc/systemd/nodepool-launcher.service

Runs `systemd-analyze security --offline=yes FILE` on each file, so it needs no running
systemd and no installed unit. `--max` exits 1 when a unit scores above it; exit 2 when
systemd-analyze is missing or cannot rate a file.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

UNIT_DIR = Path(__file__).resolve().parents[1] / "etc" / "systemd"
OVERALL = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?) (\S+)")


class SecurityError(Exception):
    """systemd-analyze is missing or did not rate a unit."""


def unit_files(directory: Path = UNIT_DIR) -> list[Path]:
    return sorted(directory.glob("*.service"))


def exposure(unit: Path) -> tuple[float, str]:
    """The overall exposure (0.0-10.0) and its verdict (OK, EXPOSED, UNSAFE, ...)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        raise SecurityError("systemd-analyze not found")
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    match = OVERALL.search(result.stdout + result.stderr)
    if match is None:
        raise SecurityError(f"{unit}: no rating from systemd-analyze (exit "
                            f"{result.returncode}): {result.stderr.strip()[-500:]}")
    return float(match.group(2)), match.group(3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("units", nargs="*", type=Path,
                        help=f"unit files (default: {UNIT_DIR}/*.service)")
    parser.add_argument("--max", type=float, default=None,
                        help="exit 1 if a unit's exposure is above this")
    args = parser.parse_args(argv)
    status = 0
    for unit in args.units or unit_files():
        try:
            score, verdict = exposure(unit)
        except SecurityError as e:
            print(f"systemd_security: error: {e}", file=sys.stderr)
            return 2
        over = args.max is not None and score > args.max
        note = f"  (above {args.max:g})" if over else ""
        print(f"{unit.name:32} {score:4.1f} {verdict}{note}")
        if over:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

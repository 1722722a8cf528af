#!/usr/bin/env bash
# Install what nodepool_ng needs on a fresh Debian machine: system packages for the real
# components (ZooKeeper, Mosquitto, qemu-img, sshd, Chromium for the status page test) and a
# virtualenv with the project.
# Idempotent: a second run checks and does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the status page test renders the page headless (tests/cli/test_status_page.py).
APT_PACKAGES=(zookeeper mosquitto qemu-utils openssh-server openssh-client chromium)
# ZooKeeper needs a JRE; any java on the PATH will do, else Debian's default one.
command -v java >/dev/null 2>&1 || APT_PACKAGES+=(default-jre-headless)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV=${NODEPOOL_VENV:-.venv}
stamp="$VENV/.nodepool-ng-installed"
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing python packages into $VENV" >&2
    # (this machine's pip config names local mirrors that may be absent: drop that noise)
    "$VENV/bin/pip" install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
    "$VENV/bin/pip" install -q -e ".[test]" 2>&1 | { grep -v "^WARNING: Location" || true; }
    echo "$want" > "$stamp"
fi

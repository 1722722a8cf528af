#!/usr/bin/env bash
# Create the upstream virtualenvs the compatibility checks run (never part of nodepool_ng's
# own dependencies): Nodepool 11.0.0 and Zuul 14.3.0, each in its own venv OUTSIDE the tree.
#   tools/compat/setup-venvs.sh            # -> /opt/compat/{nodepool11,zuul14}
#   NODEPOOL_COMPAT_DIR=/somewhere tools/compat/setup-venvs.sh
# Idempotent: an existing venv with the right version is left alone.
set -euo pipefail
DIR=${NODEPOOL_COMPAT_DIR:-/opt/compat}
PY=${PYTHON:-python3.11}
mkdir -p "$DIR"

make_venv() {  # name package==version probe-module [extra packages...]
    local venv="$DIR/$1" pkg=$2 probe=$3
    shift 3
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import $probe" 2>/dev/null \
        && "$venv/bin/pip" show "${pkg%%==*}" 2>/dev/null | grep -x "Version: ${pkg##*==}" >/dev/null; then
        echo "$venv: $pkg present"
        return
    fi
    "$PY" -m venv "$venv"
    "$venv/bin/pip" install -q "$pkg" "$@"
    "$venv/bin/python" -c "import $probe"
    echo "$venv: $pkg installed"
}

# nodepool 11.0.0 imports cachetools (driver/statemachine.py) without declaring it.
make_venv nodepool11 nodepool==11.0.0 nodepool.driver.statemachine cachetools
make_venv zuul14 zuul==14.3.0 zuul.zk.nodepool

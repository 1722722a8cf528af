#!/usr/bin/env bash
# Run the upstream-compatibility checks (doc/compatibility.md): upstream Nodepool 11's
# launcher against simcloud, upstream's CLI and Zuul 14.3's client against our launcher, all
# on a TLS ZooKeeper. Creates the upstream venvs first unless NODEPOOL_COMPAT_SKIP_SETUP=1.
#   tools/compat/run.sh [pytest args]
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ "${NODEPOOL_COMPAT_SKIP_SETUP:-0}" != 1 ]; then
    bash tools/compat/setup-venvs.sh || exit 1
fi
VENV=${NODEPOOL_VENV:-.venv}
# -rs shows skip reasons: a missing venv must be visible, never a silent pass.
exec "$VENV/bin/pytest" -m upstream -rs tests/compat "$@"

#!/usr/bin/env bash
# The test command: set up (idempotent), then lint, type-check and run the whole suite
# against real ZooKeeper, simcloud, Mosquitto, qemu-img and sshd. Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup-env.sh || exit 1
VENV=${NODEPOOL_VENV:-.venv}
status=0
echo "== ruff"
"$VENV/bin/ruff" check nodepool_ng tests tools || status=1
echo "== mypy"
"$VENV/bin/mypy" || status=1
echo "== pytest"
"$VENV/bin/pytest" -n "${NODEPOOL_TEST_WORKERS:-2}" -m "not dib and not upstream" "$@"
rc=$?
# pytest exits 5 when it collected nothing: that is a failure here, never a pass.
[ "$rc" -eq 0 ] || status=1
exit $status

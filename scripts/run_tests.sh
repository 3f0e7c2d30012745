#!/usr/bin/env bash
# The README's test command: set up the environment, then run the default test selection
# (everything except the slow end-to-end tests, the MONAI Label tests and the GPU tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
set +e
"$ROOT/.venv/bin/python" -m pytest -q -m "not slow and not monailabel and not gpu" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then  # pytest: no tests collected (e.g. a filter matched nothing) is not a failure here
  echo "[tests] no tests collected"
  exit 0
fi
exit "$rc"

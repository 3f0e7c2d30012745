#!/usr/bin/env bash
# The README's main command: set up the environment, make the built-in synthetic data, run the quick benchmark
# (supervised-only, plain CPS and the full method at 10 % labels, plus the 100 % upper bound, one seed) and print
# the results table (also written to docs/results/synthetic_2d.md). About 10 minutes on 2 CPU cores.
# Extra arguments are passed to scripts/run_experiments.py (e.g. --protocol clean paper2d, --force).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
bash scripts/setup_env.sh
PY="$ROOT/.venv/bin/python"
DATA="$ROOT/work_dirs/default_data/synthetic_2d"
if [ ! -f "$DATA/datalist.json" ]; then
  "$PY" scripts/make_synthetic.py --out "$DATA" --spatial-dims 2 --num-cases 120 --image-size 64 --seed 0
else
  echo "[main] using the existing synthetic data in $DATA"
fi
"$PY" scripts/run_experiments.py --dataset "$DATA/datalist.json" --name synthetic_2d --profile quick \
  --methods supervised cps full upper --ratios 0.1 --seeds 0 "$@"
echo "[main] total wall time: $(( $(date +%s) - START )) s"

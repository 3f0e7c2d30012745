#!/usr/bin/env bash
# The README's main command: set up the environment, make the built-in synthetic data, run the quick benchmark
# (supervised-only, plain CPS and the full method at 10 % labels, plus the 100 % upper bound, one seed) and print
# the results table (also written to docs/results/synthetic_2d.md). About 6 minutes on 2 CPU cores: each run uses
# one thread and the four runs go side by side, one per core (JOBS, default: the number of cores, at most 4;
# the results are the same as one after the other).
# Extra arguments are passed to scripts/run_experiments.py (e.g. --protocol clean paper2d, --force, --jobs 1).
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
CORES=$(nproc 2>/dev/null || echo 1)
JOBS="${JOBS:-$(( CORES < 4 ? CORES : 4 ))}"
"$PY" scripts/run_experiments.py --dataset "$DATA/datalist.json" --name synthetic_2d --profile quick \
  --methods supervised cps full upper --ratios 0.1 --seeds 0 --jobs "$JOBS" "$@"
echo "[main] total wall time: $(( $(date +%s) - START )) s"

#!/usr/bin/env bash
# The README's main command: set up the environment, make the built-in synthetic data (200 cases at 32x32, the
# size the quick profile trains at), run the quick benchmark (supervised-only, two baselines on its UNet: mean
# teacher and two-UNet CPS, CPS on the diffusion backbone (cps_diffusion) and the full method at 10 % labels, plus
# the 100 % upper bound, split seeds 0 and 1) and print the results table with the spread across
# seeds, the paired differences and the fraction of the gap closed (also written to docs/results/synthetic_2d.md).
# Each run uses one thread and the runs go side by side, one per core (JOBS, default: the number of cores, at
# most 4; the results are the same as one after the other).
# Extra arguments are passed to scripts/run_experiments.py (e.g. --protocol clean paper2d, --force, --jobs 1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
bash scripts/setup_env.sh
PY="$ROOT/.venv/bin/python"
DATA="$ROOT/work_dirs/default_data/synthetic_2d"
# data made by an older version of this script (other size or count) is replaced
if ! "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(not (d.get('image_size') == [32, 32] and len(d['cases']) == 200))" "$DATA/datalist.json" 2>/dev/null; then
  rm -rf "$DATA"
  "$PY" scripts/make_synthetic.py --out "$DATA" --spatial-dims 2 --num-cases 200 --image-size 32 --seed 0
else
  echo "[main] using the existing synthetic data in $DATA"
fi
CORES=$(nproc 2>/dev/null || echo 1)
JOBS="${JOBS:-$(( CORES < 4 ? CORES : 4 ))}"
# --force: the demo always reflects the code checked out; runs left by an older version of the bundles are retrained
# (runs whose settings are unchanged are still reused).
"$PY" scripts/run_experiments.py --dataset "$DATA/datalist.json" --name synthetic_2d --profile quick \
  --methods supervised mean_teacher cps cps_diffusion full upper --ratios 0.1 --seeds 0 1 --jobs "$JOBS" --force "$@"
echo "[main] total wall time: $(( $(date +%s) - START )) s"

#!/usr/bin/env bash
# The GPU measurements behind docs/results/ph2_128.md and docs/performance.md, one part per call, so that each part
# fits a 10-minute slot on one H100/H200 (times below are H100 estimates from the runs already made).
#
#   bash scripts/gpu_checks.sh PART [PART ...]
#
# PART (in the order worth running):
#   ph2_20       PH2 128x128 at 20 % labels: full method, plain CPS, supervised, side by side (--jobs 3), ~5 min
#   baselines_1  issue #26 (not run yet; estimated from ph2_20, not measured): the comparison at 128x128, 10 %, seed 0,
#   baselines_2  first supervised, mean teacher, UA-MT, BCP, UniMatch (--jobs 5, ~6 min), then CPS, cps_diffusion,
#                full, full_fast, upper (--jobs 5, ~8 min) with every method of the registry in the report: run both
#                on one warm machine (the second call skips the runs the first made in $WORK), else the second
#                retrains them and overruns its slot
#   bench_2d     scripts/benchmark.py on the PH2-like 2D workload (every switch against eager fp32), ~4 min
#   precision    the full method at 10 % with bf16 autocast in phases 1 and 2 (compare with the fp32/TF32 run), ~5 min
#   p1_long      the full method at 10 % with the prototype's 1500 phase-1 iterations, ~6 min
#   no_pretrain  the full method at 10 % without phase 1 (ablation), ~4 min
#   seeds        full, cps_diffusion, supervised at 10 % for split seeds 1 and 2, side by side, ~9 min
#   speed        issue #16 (not run yet; sized for 8 min, --time-budget 400 stops starting cases): co-training R = 3,
#                PH2 128x128 and LA 96x96x80 batch 1+1, eager fp32 vs PyTorch defaults (tf32) vs fast vs
#                torch.compile vs CUDA graphs, TFLOP/s and share of the card's bf16 peak; then the LA 24 GB memory
#                switch (checkpoint_rounds) peak. Writes docs/performance_gpu_<card>.{json,log} ($OUT/docs/ on the
#                device tool)
#   fast_backbone issue #27 (not run yet; sized for 8 min, --time-budget 400 stops starting cases): the fast
#                backbone (backbone "fast") on PH2 128x128 and LA 96x96x80: one pass (fwd + bwd + Adam, bf16) of each
#                backbone against the supervised UNet of the same widths; supervised step against co-training R = 3
#                (today's backbone and the fast one), R = 3 and R = 1 with round_batch unlabeled; one-pass inference
#                of the supervised UNet and both deployables; TFLOP/s and share of the card's bf16 peak per case,
#                peak memory (LA R = 3 under 24 GB) and the ratios (targets: per pass and inference <= 1.5x,
#                co-training step <= 6x). Writes docs/performance_gpu_fast_backbone_<card>.{json,log} ($OUT/docs/
#                on the device tool)
#   la_8         issue #15 (not run yet; sized for 8 min on an H100/H200): LA at the native 0.625 mm grid, --profile la
#                (96x96x80 patches, channels 16-128), full method at 8 labels (first 8 of train.list), phase 1 400
#                iterations (batch 2), co-training 400 (R = 3, batch 1 + 1, bf16 + TF32 defaults; H100: ~0.13 s and
#                ~0.39 s per step in docs/performance.md), tested with la_uamt (112x112x80, strides 18/18/4) on the
#                native grid. Writes docs/results/la_gpu_<card>.{md,json,log} ($OUT/docs/results on the device tool).
#                Data: LA_DATA (prepared LA folder, default .devdata/la). The prepared copy is 245 MB, more than
#                one call may carry (64 MiB with the 3 MB working tree): `bash scripts/gpu_checks.sh pack_la` here
#                writes .devdata/la_parts/la.tar.part_aa ... _af (48 MiB each, from LA_SRC, default
#                /work/data/la); carry one part per device call in consecutive calls (the machine keeps ignored
#                paths between calls while it stays warm: 30 s idle at most), then run
#                `bash scripts/gpu_checks.sh unpack_la la_8` in the last call.
#
# Environment: DATA (prepared PH2 folder, default /work/data/ph2_128, else .devdata/ph2_128), RESULTS (where reports
# go, default $OUT/results on the device tool, else docs/results/gpu), WORK (training folders, default /tmp/gpu_work).
# Iteration budgets are those of the 10 % runs already reported (teacher_pretrain=400 cotrain=500 supervised=800),
# so every new number is comparable with the table in docs/results/ph2_128.md.
# Without monai in the environment and with wheels in .whl/ (the device tool's bare machine), they are installed
# into /tmp/site first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY="$ROOT/.venv/bin/python"
if ! "$PY" -c "import monai, ignite" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1
    export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_checks.sh: monai / pytorch-ignite are not installed (run scripts/setup_env.sh)" >&2; exit 1
  fi
fi
export PYTHONUNBUFFERED=1
DATA="${DATA:-}"
if [ -z "$DATA" ]; then
  for d in /work/data/ph2_128 .devdata/ph2_128; do [ -f "$d/datalist.json" ] && DATA="$d" && break; done
fi
case " $* " in  # the LA parts need no PH2
  *" ph2_20 "*|*" baselines_1 "*|*" baselines_2 "*|*" precision "*|*" p1_long "*|*" no_pretrain "*|*" seeds "*)
    [ -n "$DATA" ] && [ -f "$DATA/datalist.json" ] || { echo "gpu_checks.sh: no prepared PH2 (set DATA=<folder>; see docs/data.md)" >&2; exit 1; } ;;
esac
LA_DATA="${LA_DATA:-.devdata/la}"
RESULTS="${RESULTS:-${OUT:+$OUT/results}}"
RESULTS="${RESULTS:-docs/results/gpu}"
WORK="${WORK:-/tmp/gpu_work}"
mkdir -p "$RESULTS"
BUDGET=(--iterations teacher_pretrain=400 cotrain=500 supervised=800)
"$PY" -c "import torch; print('[gpu_checks]', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO GPU', torch.__version__)"

runner() {  # runner NAME ARGS... -> $RESULTS/NAME.{md,json,png}, log $RESULTS/NAME.log (a later --iterations wins)
  local name="$1"; shift
  "$PY" scripts/run_experiments.py --dataset "$DATA" --name "$name" --profile ph2 --results-dir "$RESULTS" \
    --work-dir "$WORK/$name" "${BUDGET[@]}" "$@" 2>&1 | grep -v -i warn | tee "$RESULTS/$name.log" \
    | grep -E "finished|runner|rror|^method|^(full|cps_diffusion|cps|supervised|upper)" || true
}

for part in "$@"; do
  echo "[gpu_checks] part $part: $(date -u +%H:%M:%S)"
  case "$part" in
    ph2_20)      runner ph2_128_r20 --methods full cps_diffusion supervised --ratios 0.2 --jobs 3 ;;
    precision)   runner ph2_128_bf16 --methods full --ratios 0.1 --override "teacher_pretrain:amp=true" \
                   --override "cotrain:amp=true" ;;
    p1_long)     runner ph2_128_p1long --methods full --ratios 0.1 \
                   --iterations teacher_pretrain=1500 cotrain=500 supervised=800 ;;
    no_pretrain) runner ph2_128_nopretrain --methods full --ratios 0.1 --no-pretrain ;;
    seeds)       runner ph2_128_seeds --methods full cps_diffusion supervised --ratios 0.1 --seeds 1 2 --jobs 6 ;;
    baselines_1) runner ph2_128_baselines --methods supervised mean_teacher uamt bcp unimatch --ratios 0.1 --jobs 5 ;;
    baselines_2) runner ph2_128_baselines --methods supervised mean_teacher uamt bcp unimatch cps cps_diffusion full \
                   full_fast upper --ratios 0.1 --jobs 5 ;;
    bench_2d)    "$PY" scripts/benchmark.py --only ph2 --time-budget 200 --output "$RESULTS/benchmark_2d.json" \
                   2>&1 | grep -v -i warn | tee "$RESULTS/benchmark_2d.log" | tail -40 ;;
    speed)       card="$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))")"
                 sdir="${OUT:+$OUT/docs}"; sdir="${sdir:-docs}"; mkdir -p "$sdir"
                 timeout 470 "$PY" scripts/benchmark.py --plan speed --time-budget 400 \
                   --output "$sdir/performance_gpu_$card.json" 2>&1 | grep -v -i warn \
                   | tee "$sdir/performance_gpu_$card.log" | tail -20 || true ;;
    fast_backbone) card="$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))")"
                 sdir="${OUT:+$OUT/docs}"; sdir="${sdir:-docs}"; mkdir -p "$sdir"
                 timeout 470 "$PY" scripts/benchmark.py --plan fast_backbone --time-budget 400 \
                   --output "$sdir/performance_gpu_fast_backbone_$card.json" 2>&1 | grep -v -i warn \
                   | tee "$sdir/performance_gpu_fast_backbone_$card.log" | tail -40 || true ;;
    pack_la)     src="${LA_SRC:-/work/data/la}"; mkdir -p .devdata/la_parts; rm -f .devdata/la_parts/la.tar.part_*
                 tar -C "$(dirname "$src")" -cf - --transform "s,^$(basename "$src"),la," "$(basename "$src")" \
                   | split -b 48m - .devdata/la_parts/la.tar.part_
                 ls -l .devdata/la_parts ;;
    unpack_la)   mkdir -p .devdata && cat .devdata/la_parts/la.tar.part_* | tar -C .devdata -xf - && ls .devdata/la ;;
    la_8)        [ -f "$LA_DATA/datalist.json" ] || { echo "gpu_checks.sh: no prepared LA at $LA_DATA (see la_8 above)" >&2; exit 1; }
                 card="$("$PY" -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))")"
                 ldir="${OUT:+$OUT/docs/results}"; ldir="${ldir:-docs/results}"; mkdir -p "$ldir"
                 timeout 480 "$PY" scripts/run_experiments.py --dataset "$LA_DATA" --name "la_gpu_$card" --profile la \
                   --methods full --ratios 0.1 --protocol la_uamt --results-dir "$ldir" --work-dir "$WORK/la_8" \
                   --iterations teacher_pretrain=400 cotrain=400 --override cotrain:batch_size=1 2>&1 | grep -v -i warn | tee "$ldir/la_gpu_$card.log" \
                   | grep -E "finished|runner|rror|^method|^full" || true ;;
    *) echo "gpu_checks.sh: unknown part '$part' (ph2_20 baselines_1 baselines_2 bench_2d precision p1_long no_pretrain seeds speed fast_backbone la_8 pack_la unpack_la)" >&2; exit 1 ;;
  esac
done
echo "[gpu_checks] done $(date -u +%H:%M:%S); results in $RESULTS"

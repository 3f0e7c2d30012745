#!/usr/bin/env python
"""Experiment runner: splits, training of every method, test evaluation, aggregation, tables and figures.

For a prepared dataset (a ``datalist.json`` holding every case under ``"cases"``, as written by
``scripts/prepare_*.py`` or ``make_synthetic_dataset``) and every labelled ratio and seed, the runner

1. writes the deterministic split ``<work_dir>/<dataset>/splits/datalist_r<ratio>_s<seed>.json``
   (``make_split`` + ``write_split``; the dataset folder itself is never modified);
2. runs the requested methods, each phase as ``python -m monai.bundle run`` in a subprocess on a *copy* of the
   bundle's ``configs/`` folder under ``<work_dir>/<dataset>/<method>/r<ratio>_s<seed>/<phase>/`` (the bundles
   derive ``bundle_root`` from the config file's folder, so models, logs and evaluation outputs land there and
   never inside ``bundles/``). Runner settings are written to ``configs/runner_overrides.json`` and stacked
   after the bundle's own files; ``command.sh`` in the same folder reruns the phase by hand;

   - ``supervised``: the supervised bundle on the labelled subset;
   - ``upper``: the supervised bundle at ratio 1.0 (fully supervised upper bound);
   - ``cps``: the cotrain bundle without phase 1 (``teacher_ckpt=""``) and ``rounds=0`` (plain CPS);
   - ``full``: teacher_pretrain (phase 1), then cotrain with its ``teacher.pt`` and ``rounds=R``. Phase 1 uses no
     label, so it is trained once per seed (under ``<work_dir>/<dataset>/phase1/``) and shared by every ratio and
     every ablation of ``R`` / ``round_mode`` of the call (``Experiment.run_phase1``).
     Ablations ``--rounds``, ``--round-mode`` and ``--no-pretrain`` change the method's folder name
     (e.g. ``full_R1``, ``full_chained``, ``full_nopretrain``), so ablations never overwrite the default;

3. evaluates every run on the ``test`` split with the bundle's ``evaluate.json`` under each ``--protocol``
   (``<phase>/eval/test_<protocol>/metrics.json``);
4. aggregates per (method, ratio) over seeds (mean ± std of per-case Dice, Jaccard, HD95, ASD, pooling the cases of
   all seeds; pooled Dice for protocols that define it), and writes ``<results_dir>/<dataset>.md``, ``.json``,
   ``<dataset>_dice_vs_ratio.png`` and ``<dataset>_qualitative.png``, and prints the table.

Resumable: a finished phase leaves ``runner_done.json`` (its settings fingerprint and wall time) and is skipped
on the next call; an interrupted phase is continued by the bundle's own resumable checkpoint. A phase whose
settings changed since its folder was made is refused (``--force`` deletes and reruns it).

Examples::

    python scripts/run_experiments.py --dataset work_dirs/default_data/synthetic_2d/datalist.json --profile quick \\
        --methods supervised cps full upper --ratios 0.1 --seeds 0
    python scripts/run_experiments.py --dataset /work/data/ph2_128/datalist.json --profile ph2 \\
        --methods supervised cps full upper --ratios 0.05 0.1 0.2 --seeds 0 1 2 --protocol paper2d clean
    python scripts/run_experiments.py ... --methods full --rounds 1 --round-mode chained   # ablation
    python scripts/run_experiments.py ... --override cotrain:max_epochs=50 --override "*:num_workers=0"
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"
PHASES = ("supervised", "teacher_pretrain", "cotrain")
METHODS = ("supervised", "upper", "cps", "full")
PROTOCOL_NAMES = ("clean", "paper2d", "la_uamt")
DONE_MARKER = "runner_done.json"
SETTINGS_FILE = "runner_settings.json"
OVERRIDES_FILE = "runner_overrides.json"
EVAL_OVERRIDES_FILE = "runner_eval_overrides.json"
DEFAULT_ROUNDS = 3
DEFAULT_ROUND_MODE = "independent"

# --------------------------------------------------------------------------------------------------------------
# Profiles. Budgets are given in training iterations and turned into epochs from the split sizes
# (``iterations_to_epochs``); ``warmup_frac`` / ``lr_step_frac`` set warmup_epochs / lr_step_epochs as fractions
# of max_epochs (METHOD.md reference: 20-epoch warm-up and x0.5 every 50 epochs of 200 -> 0.1 / 0.25);
# ``validations`` is the number of validation rounds per run (sets val_interval). Everything under
# ``bundle`` is passed to the bundle as is.
# --------------------------------------------------------------------------------------------------------------
_PAPER: dict[str, dict[str, Any]] = {
    # METHOD.md reference settings (prototype observations): 128x128, batch 8 labelled + 8 unlabelled, Adam lr 1e-3
    # for co-training, channels [32, 64, 128, 256], ~650 co-training iterations, ~1500 phase-1 iterations at batch 16.
    "supervised": {"iterations": 2000, "validations": 20, "warmup_frac": 0.1, "lr_step_frac": 0.25,
                   "bundle": {"roi_size": [128, 128], "batch_size": 8, "learning_rate": 1e-3, "num_workers": 4}},
    "teacher_pretrain": {"iterations": 1500, "validations": 10, "warmup_frac": 0.05, "lr_step_frac": 0.25,
                         "bundle": {"roi_size": [128, 128], "batch_size": 16, "learning_rate": 1e-3,
                                    "channels": [32, 64, 128, 256], "num_workers": 4}},
    "cotrain": {"iterations": 650, "epoch_length": 25, "validations": 13, "warmup_frac": 0.1, "lr_step_frac": 0.25,
                "bundle": {"roi_size": [128, 128], "batch_size": 8, "learning_rate": 1e-3,
                           "channels": [32, 64, 128, 256], "num_workers": 4}},
}
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # CPU minutes on the built-in synthetic data (64x64 images resized to 32x32, tiny networks).
    "quick": {
        "supervised": {"iterations": 1200, "validations": 6, "warmup_frac": 0.1, "lr_step_frac": 0.5,
                       "bundle": {"roi_size": [32, 32], "batch_size": 4, "learning_rate": 1e-3, "num_workers": 0,
                                  "val_batch_size": 8}},
        "teacher_pretrain": {"iterations": 180, "validations": 3, "warmup_frac": 0.1, "lr_step_frac": 0.5,
                             "bundle": {"roi_size": [32, 32], "batch_size": 8, "learning_rate": 1e-3,
                                        "channels": [16, 32, 64], "num_workers": 0}},
        "cotrain": {"iterations": 240, "epoch_length": 20, "validations": 6, "warmup_frac": 0.1, "lr_step_frac": 0.5,
                    "bundle": {"roi_size": [32, 32], "batch_size": 4, "learning_rate": 1e-3,
                               "channels": [16, 32, 64], "num_workers": 0}},
    },
    "paper": _PAPER,
    "ph2": copy.deepcopy(_PAPER),  # PH2 prepared at or resized to 128x128 (the prototype's setting)
    # Real PH2 on a CPU: images resized to 32x32, small backbones, about 25 CPU-minutes per ratio with --jobs 2.
    # Phase 1: 600 iterations, first LR halving after ~390 (warm-up included; the reference schedule halves after 525
    # of 1500); halving after 182 left a seed-0 teacher stuck on a non-lesion partition (docs/phase1/ph2_32/phase1.md).
    "ph2_cpu": {
        "supervised": {"iterations": 1000, "validations": 10, "warmup_frac": 0.1, "lr_step_frac": 0.25,
                       "bundle": {"roi_size": [32, 32], "batch_size": 8, "learning_rate": 1e-3, "num_workers": 0,
                                  "val_batch_size": 20}},
        "teacher_pretrain": {"iterations": 600, "validations": 6, "warmup_frac": 0.05, "lr_step_frac": 0.6,
                             "bundle": {"roi_size": [32, 32], "batch_size": 16, "learning_rate": 1e-3,
                                        "channels": [16, 32, 64], "num_workers": 0}},
        "cotrain": {"iterations": 400, "epoch_length": 25, "validations": 8, "warmup_frac": 0.1, "lr_step_frac": 0.25,
                    "bundle": {"roi_size": [32, 32], "batch_size": 8, "learning_rate": 1e-3,
                               "channels": [16, 32, 64], "num_workers": 0}},
    },
}
CPU_PROFILES = ("quick", "ph2_cpu")  # one OpenMP thread per bundle process unless --num-threads says otherwise


class RunnerError(RuntimeError):
    """A problem the user must fix (bad argument, failed phase, changed settings)."""


# --------------------------------------------------------------------------------------------------------------
# small pure helpers (unit-tested)
# --------------------------------------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``PHASE:KEY=VALUE`` (``PHASE`` in ``supervised``, ``teacher_pretrain``, ``cotrain`` or ``*``).

    ``VALUE`` is read as JSON when it parses (``50``, ``1e-3``, ``[32,32]``, ``true``, ``""``), else kept as a string.

    Args:
        text: the override as given on the command line.

    Returns:
        ``(phase, key, value)``.
    """
    m = re.fullmatch(r"\s*([A-Za-z_*]+)\s*:\s*([^=\s]+)\s*=(.*)", text, flags=re.S)
    if not m:
        raise RunnerError(f"--override {text!r}: expected PHASE:KEY=VALUE, e.g. cotrain:max_epochs=50.")
    phase, key, raw = m.group(1), m.group(2), m.group(3).strip()
    if phase != "*" and phase not in PHASES:
        raise RunnerError(f"--override {text!r}: unknown phase {phase!r}; use one of {list(PHASES)} or '*'.")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return phase, key, value


def overrides_for(phase: str, overrides: Sequence[tuple[str, str, Any]]) -> dict[str, Any]:
    """The user overrides that apply to ``phase`` (``*`` first, then phase-specific), in command-line order.

    Args:
        phase: a phase name.
        overrides: parsed overrides from ``parse_override``.
    """
    out: dict[str, Any] = {}
    for p, k, v in overrides:
        if p == "*":
            out[k] = v
    for p, k, v in overrides:
        if p == phase:
            out[k] = v
    return out


def ratio_tag(ratio: float) -> str:
    """``0.1 -> '0.1'``, ``1.0 -> '1'`` (the ``%g`` form used in split file names)."""
    return f"{float(ratio):g}"


def method_name(method: str, rounds: int = DEFAULT_ROUNDS, round_mode: str = DEFAULT_ROUND_MODE,
                pretrain: bool = True) -> str:
    """Folder / table name of a method, with the ablation settings that differ from the default.

    Args:
        method: ``supervised``, ``upper``, ``cps`` or ``full``.
        rounds: diffusion rounds ``R`` of the full method.
        round_mode: ``independent`` or ``chained``.
        pretrain: whether the full method runs phase 1.
    """
    if method != "full":
        return method
    name = "full"
    if rounds != DEFAULT_ROUNDS:
        name += f"_R{rounds}"
    if round_mode != DEFAULT_ROUND_MODE:
        name += f"_{round_mode}"
    if not pretrain:
        name += "_nopretrain"
    return name


def iterations_to_epochs(iterations: int, num_items: int, batch_size: int, drop_last: bool) -> int:
    """Epochs needed for at least ``iterations`` optimiser steps over ``num_items`` items.

    Args:
        iterations: wanted number of iterations.
        num_items: dataset length.
        batch_size: batch size.
        drop_last: whether the loader drops the last incomplete batch (only when the dataset exceeds one batch).
    """
    if num_items < 1:
        raise RunnerError(f"cannot train on an empty dataset (batch_size {batch_size}).")
    per_epoch = num_items // batch_size if (drop_last and num_items > batch_size) else math.ceil(num_items / batch_size)
    return max(1, math.ceil(iterations / max(1, per_epoch)))


def checkpoint_interval_overrides(config: Mapping[str, Any], interval: int) -> dict[str, Any]:
    """Ids that make every ``ResumableCheckpoint`` of a bundle config save every ``interval`` epochs.

    The handler is found by its ``_target_`` (top-level ids and entries of ``train#handlers``), so the override
    follows the config if its handler list changes. Saving the full state every epoch costs seconds per epoch on
    small CPU runs; saving at the validation interval keeps runs resumable at a fraction of the cost.

    Args:
        config: the bundle's ``train.json`` content.
        interval: save interval in epochs (>= 1).
    """
    def is_ckpt(x: Any) -> bool:
        return isinstance(x, Mapping) and str(x.get("_target_", "")).endswith("ResumableCheckpoint")

    out: dict[str, Any] = {}
    for k, v in config.items():
        if is_ckpt(v):
            out[f"{k}#save_interval_epochs"] = int(interval)
    handlers = (config.get("train") or {}).get("handlers")
    if isinstance(handlers, list):
        for i, h in enumerate(handlers):
            if is_ckpt(h):
                out[f"train#handlers#{i}#save_interval_epochs"] = int(interval)
    return out


def fingerprint(obj: Any) -> str:
    """Short stable hash of a JSON-serialisable object.

    Args:
        obj: the object.
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_splits(datalist: Path, out_dir: Path, ratios: Sequence[float], seeds: Sequence[int],
                 val_fraction: float = 0.1, test_fraction: float = 0.3) -> dict[tuple[float, int], Path]:
    """Write one deterministic split per (ratio, seed) into ``out_dir`` (paths rewritten relative to it).

    Args:
        datalist: the dataset's ``datalist.json`` (with ``"cases"``).
        out_dir: folder for ``datalist_r<ratio>_s<seed>.json``.
        ratios: labelled ratios in (0, 1].
        seeds: split seeds.
        val_fraction: validation fraction (``make_split``).
        test_fraction: test fraction (``make_split``).

    Returns:
        ``{(ratio, seed): path}``.
    """
    from custom_components.data.splits import make_split, split_filename, write_split

    out: dict[tuple[float, int], Path] = {}
    for r in ratios:
        for s in seeds:
            split = make_split(datalist, labeled_ratio=float(r), seed=int(s), val_fraction=val_fraction,
                               test_fraction=test_fraction)
            out[(float(r), int(s))] = write_split(split, datalist.parent, out_dir / split_filename(r, s))
    return out


# --------------------------------------------------------------------------------------------------------------
# aggregation and reports (unit-tested with fake metrics files)
# --------------------------------------------------------------------------------------------------------------
def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _mean_std(values: Sequence[Any]) -> dict[str, Any]:
    v = _finite(values)
    if not v:
        return {"mean": None, "std": None, "n": 0}
    m = sum(v) / len(v)
    return {"mean": m, "std": math.sqrt(sum((x - m) ** 2 for x in v) / len(v)), "n": len(v)}


def _group_of(summary: Mapping[str, Any]) -> str:
    groups = list(summary.get("metrics", {}))
    if not groups:
        raise RunnerError("metrics.json summary has no 'metrics' entry.")
    return "mean" if "mean" in groups else groups[0]


def aggregate(runs: Sequence[Mapping[str, Any]], protocol: str) -> list[dict[str, Any]]:
    """Aggregate per (method, ratio) over seeds from each run's ``metrics.json`` under ``protocol``.

    Per-case values of every seed are pooled: Dice/Jaccard/HD95/ASD mean ± std (population std; NaN cases left out);
    ``seed_dice`` lists each seed's mean Dice; ``pooled_dice`` / ``pooled_jaccard`` are the means over seeds of the
    protocol's pooled scores (``None`` when the protocol does not pool).

    Args:
        runs: run records with ``method``, ``ratio``, ``seed``, ``metrics`` (``{protocol: path of metrics.json}``),
            optional ``train_time_s``, ``selection`` (``{"network", "threshold", "dice"}``).
        protocol: protocol name.

    Returns:
        one row per (method, ratio), in first-seen order.
    """
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for r in runs:
        if protocol in (r.get("metrics") or {}):
            groups.setdefault((str(r["method"]), float(r["ratio"])), []).append(r)
    rows = []
    for (method, ratio), items in groups.items():
        cases: dict[str, list[Any]] = {m: [] for m in ("dice", "jaccard", "hd95", "asd")}
        seed_dice, pooled_d, pooled_j, unit, n_cases = [], [], [], set(), 0
        for it in sorted(items, key=lambda x: int(x["seed"])):
            path = Path(it["metrics"][protocol])
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise RunnerError(f"{path}: cannot read metrics ({e}).") from e
            if data.get("protocol") != protocol:
                raise RunnerError(f"{path}: written under protocol {data.get('protocol')!r}, expected {protocol!r}.")
            summary = data["summary"]
            g = _group_of(summary)
            for m in cases:
                cases[m] += [row.get(f"{m}_{g}") for row in data["per_case"]]
            seed_dice.append(summary["metrics"][g]["dice"]["mean"])
            unit.add(summary.get("distance_unit", ""))
            n_cases += len(data["per_case"])
            pooled = summary.get("pooled") or {}
            if pooled:
                pooled_d.append(sum(_finite([p.get("dice") for p in pooled.values()])) / max(1, len(pooled)))
                pooled_j.append(sum(_finite([p.get("jaccard") for p in pooled.values()])) / max(1, len(pooled)))
        times = _finite([it.get("train_time_s") for it in items])
        sels = [it.get("selection") for it in items if it.get("selection")]
        rows.append({
            "method": method,
            "ratio": ratio,
            "protocol": protocol,
            "seeds": sorted(int(it["seed"]) for it in items),
            "num_labeled": sorted({it.get("num_labeled") for it in items if it.get("num_labeled") is not None}),
            "num_test_cases": n_cases,
            "distance_unit": ",".join(sorted(u for u in unit if u)),
            **{m: _mean_std(v) for m, v in cases.items()},
            "seed_dice": seed_dice,
            "pooled_dice": (sum(pooled_d) / len(pooled_d)) if pooled_d else None,
            "pooled_jaccard": (sum(pooled_j) / len(pooled_j)) if pooled_j else None,
            "train_time_s": _mean_std(times),
            "selection": sels,
        })
    return rows


def _pct(stat: Mapping[str, Any]) -> str:
    return "n/a" if stat.get("mean") is None else f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def _num(stat: Mapping[str, Any]) -> str:
    return "n/a" if stat.get("mean") is None else f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def _ratio_label(row: Mapping[str, Any]) -> str:
    n = row.get("num_labeled") or []
    return f"{100 * row['ratio']:g} %" + (f" ({'/'.join(str(x) for x in n)})" if n else "")


def format_markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of aggregated rows (one protocol).

    Args:
        rows: rows from ``aggregate`` (same protocol).
    """
    if not rows:
        return "(no finished runs)\n"
    pooled = any(r.get("pooled_dice") is not None for r in rows)
    unit = rows[0].get("distance_unit") or "voxel"
    head = ["method", "labelled", "seeds", "test cases", "Dice (%)", "Jaccard (%)", f"HD95 ({unit})",
            f"ASD ({unit})"]
    if pooled:
        head += ["pooled Dice (%)", "pooled Jaccard (%)"]
    head += ["selected network @ threshold", "train time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in sorted(rows, key=lambda x: (x["ratio"], METHODS.index(x["method"].split("_")[0])
                                         if x["method"].split("_")[0] in METHODS else 99, x["method"])):
        cells = [r["method"], _ratio_label(r), ",".join(str(s) for s in r["seeds"]), str(r["num_test_cases"]),
                 _pct(r["dice"]), _pct(r["jaccard"]), _num(r["hd95"]), _num(r["asd"])]
        if pooled:
            cells += ["n/a" if r.get("pooled_dice") is None else f"{100 * r['pooled_dice']:.2f}",
                      "n/a" if r.get("pooled_jaccard") is None else f"{100 * r['pooled_jaccard']:.2f}"]
        sels = r.get("selection") or []
        cells.append(", ".join(f"{s.get('network')} @ {float(s.get('threshold', 0.5)):.2f}" for s in sels) or "-")
        t = r.get("train_time_s") or {}
        cells.append("n/a" if t.get("mean") is None else f"{t['mean']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_console_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text version of the table for the console.

    Args:
        rows: rows from ``aggregate``.
    """
    md = format_markdown_table(rows).strip().splitlines()
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in md if not ln.startswith("|---")]
    if len(cells) < 2:
        return "\n".join(md)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    out = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def write_markdown(path: Path, dataset: str, tables: Mapping[str, Sequence[Mapping[str, Any]]],
                   env: Mapping[str, Any], command: str, settings: Mapping[str, Any],
                   runs: Sequence[Mapping[str, Any]], figures: Sequence[str] = ()) -> Path:
    """Write the results page of one dataset.

    Args:
        path: output ``.md`` file.
        dataset: dataset name.
        tables: ``{protocol: rows from aggregate}``.
        env: hardware and library versions (``environment_info``).
        command: the exact command that produced the results.
        settings: profile, methods, ratios, seeds, splits, overrides.
        runs: per-run records (wall times, selection).
        figures: file names of figures next to the page.
    """
    from custom_components.metrics import get_protocol

    lines = [f"# Results: {dataset}", "",
             "Generated by `scripts/run_experiments.py`; every number below was measured by the command shown. "
             "Dice/Jaccard/HD95/ASD: mean ± std over the per-case values of all seeds' test cases (foreground; "
             "population std). Train time: wall time of all training phases of one run, mean over seeds "
             "(evaluation not included).", ""]
    lines += ["## Command", "", "```", command, "```", ""]
    lines += ["## Setting", ""]
    for k, v in settings.items():
        lines.append(f"- {k}: `{json.dumps(v) if not isinstance(v, str) else v}`")
    lines += ["", "## Hardware and software", ""]
    for k, v in env.items():
        lines.append(f"- {k}: {v}")
    lines.append("")
    for proto, rows in tables.items():
        p = get_protocol(proto)
        lines += [f"## Test results, protocol `{proto}`", "", f"Protocol: {p.description}", "",
                  format_markdown_table(rows)]
    lines += ["## Runs", "", "| method | ratio | seed | train time (s) | eval time (s) | selected | folder |",
              "|---|---|---|---|---|---|---|"]
    for r in runs:
        sel = r.get("selection") or {}
        seltxt = (f"{sel.get('network')} @ {float(sel.get('threshold', 0.5)):.2f} (val Dice "
                  f"{100 * float(sel.get('dice', float('nan'))):.2f}, epoch {sel.get('epoch')})") if sel else "-"
        tt = r.get("train_time_s")
        et = r.get("eval_time_s")
        ttxt = "n/a" if tt is None else f"{tt:.0f}" + (" (resumed: last part only)"
                                                        if r.get("train_time_covers_resumed_part_only") else "")
        lines.append(f"| {r['method']} | {ratio_tag(r['ratio'])} | {r['seed']} | {ttxt} | {'n/a' if et is None else f'{et:.0f}'} | {seltxt} | "
                     f"`{r.get('folder', '')}` |")
    lines.append("")
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{f}]({f})" for f in figures]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def environment_info() -> dict[str, str]:
    """Hardware (GPU name or CPU model, core count) and library versions."""
    import monai
    import numpy
    import torch

    info: dict[str, str] = {}
    if torch.cuda.is_available():
        info["device"] = f"GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    else:
        cpu = platform.processor() or ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        info["device"] = f"CPU: {cpu or 'unknown'} ({os.cpu_count()} logical cores visible)"
    try:
        import ignite

        ign = ignite.__version__
    except ImportError:  # pragma: no cover
        ign = "not installed"
    info["versions"] = (f"python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}, "
                        f"pytorch-ignite {ign}, numpy {numpy.__version__}")
    info["platform"] = platform.platform()
    return info


# --------------------------------------------------------------------------------------------------------------
# running bundles
# --------------------------------------------------------------------------------------------------------------
_EPOCH_END = re.compile(r"Epoch: (\d+)/(\d+), Iter: (\d+)/(\d+) -- (.*)")
_KEEP = ("Metrics --", "new best model", "Traceback", "Error", "ERROR", "NaN", "protocol:", "class", "---+")


def _console_line(line: str, prefix: str) -> str | None:
    """Shorten a bundle log line for the console (one line per epoch, validations, errors, tables)."""
    s = line.rstrip()
    m = _EPOCH_END.search(s)
    if m:
        if m.group(3) != m.group(4):
            return None
        terms = re.findall(r"(loss\w*|train_loss): ([-\d.eE+naif]+)", m.group(5))
        short = " ".join(f"{k}={v}" for k, v in terms[:4])
        return f"{prefix} epoch {m.group(1)}/{m.group(2)} {short}"
    if "Cannot find the metadata config file" in s or "logging.conf" in s:
        return None
    if "Metrics -- train_" in s:  # supervised training metric: one line per epoch is enough
        return None
    if any(k in s for k in _KEEP):
        return f"{prefix} {s.split(' - INFO - ')[-1][:200]}"
    return None


def run_bundle(config_files: Sequence[Path], log_path: Path, prefix: str, env: Mapping[str, str] | None = None,
               quiet: bool = False) -> float:
    """Run ``python -m monai.bundle run --config_file [...]`` in a subprocess; stream its output to ``log_path``.

    Args:
        config_files: the stacked config files (the first one's folder is the bundle root's ``configs``).
        log_path: log file (appended).
        prefix: console prefix.
        env: environment of the subprocess (default: this process's).
        quiet: print nothing but errors.

    Returns:
        wall time in seconds.
    """
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str([str(c) for c in config_files])]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tail: list[str] = []
    with open(log_path, "a") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                cwd=str(config_files[0].parent.parent), env=dict(env or os.environ))
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            tail = (tail + [line.rstrip()])[-40:]
            if not quiet:
                c = _console_line(line, prefix)
                if c:
                    print(c, flush=True)
        rc = proc.wait()
    if rc != 0:
        raise RunnerError(f"{prefix} failed (exit code {rc}); log: {log_path}\n  " + "\n  ".join(tail))
    return time.time() - t0


# relative cost of one run, to start the longest ones first when runs go in parallel
_COST = {"full": 3, "cps": 2, "supervised": 1, "upper": 1}


def run_tasks(fn: Callable[..., dict[str, Any]], tasks: Sequence[tuple[Any, ...]], jobs: int = 1
              ) -> list[dict[str, Any]]:
    """Run ``fn(*task)`` for every task, ``jobs`` at a time; results in the order of ``tasks``.

    Runs are independent (own folders, own subprocesses, own seeds), so running them side by side changes no result;
    it only fills a GPU (or the CPU cores) that one small run leaves idle. With ``jobs > 1`` the most expensive
    methods start first, a failed run does not stop the others (they finish and keep their outputs, so a rerun
    skips them), and every failure is reported at the end.

    Args:
        fn: the function running one task (``Experiment.run_one``).
        tasks: argument tuples; the first item is the method name.
        jobs: number of runs at a time (1: one after the other, stopping at the first failure).

    Raises:
        RunnerError: naming every failed run.
    """
    if jobs < 1:
        raise RunnerError(f"--jobs must be >= 1, got {jobs}.")
    if jobs == 1 or len(tasks) <= 1:
        return [fn(*t) for t in tasks]
    from concurrent.futures import ThreadPoolExecutor

    order = sorted(range(len(tasks)), key=lambda i: -_COST.get(str(tasks[i][0]), 1))  # stable: ties keep order
    print(f"[runner] {len(tasks)} runs, {min(jobs, len(tasks))} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=min(jobs, len(tasks)), thread_name_prefix="run") as pool:
        futures = {i: pool.submit(fn, *tasks[i]) for i in order}
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        errors: list[str] = []
        for i in order:
            try:
                results[i] = futures[i].result()
            except RunnerError as e:
                errors.append(f"{tasks[i][0]} ratio {tasks[i][1]} seed {tasks[i][2]}: {e}")
    if errors:
        raise RunnerError(f"{len(errors)} of {len(tasks)} runs failed (the others finished and are kept):\n"
                          + "\n".join(errors))
    return [r for r in results if r is not None]


class Experiment:
    """Plans and runs every (method, ratio, seed) of one dataset; see the module docstring.

    Args:
        args: the parsed command-line arguments.
        command: the command line, for the report.
    """

    def __init__(self, args: argparse.Namespace, command: str) -> None:
        self.args = args
        self.command = command
        self.datalist = Path(args.dataset).resolve()
        if self.datalist.is_dir():
            self.datalist = self.datalist / "datalist.json"
        if not self.datalist.is_file():
            raise RunnerError(f"{self.datalist}: datalist not found (give --dataset <dataset_dir>/datalist.json).")
        try:
            self.meta = json.loads(self.datalist.read_text())
        except json.JSONDecodeError as e:
            raise RunnerError(f"{self.datalist}: malformed JSON ({e}).") from e
        if not self.meta.get("cases"):
            raise RunnerError(f"{self.datalist}: no 'cases' list; give the dataset's datalist.json written by "
                              "scripts/prepare_*.py or make_synthetic_dataset, not a split.")
        self.name = args.name or self.datalist.parent.name
        self.work = Path(args.work_dir).resolve() / self.name
        self.results_dir = Path(args.results_dir).resolve()
        self.profile = copy.deepcopy(PROFILES[args.profile])
        for item in getattr(args, "iterations", None) or []:
            phase, _, n = item.partition("=")
            if phase not in self.profile or not n.isdigit() or int(n) < 1:
                raise RunnerError(f"--iterations {item!r}: expected PHASE=N with PHASE in {sorted(self.profile)} and N >= 1.")
            self.profile[phase]["iterations"] = int(n)
        self.overrides = [parse_override(o) for o in args.override]
        self.pretrain = not args.no_pretrain
        self.env = dict(os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        threads = args.num_threads if args.num_threads is not None else (1 if args.profile in CPU_PROFILES else 0)
        if threads == 0 and args.jobs > 1:  # runs side by side share the cores
            threads = max(1, (os.cpu_count() or 1) // args.jobs)
        if threads > 0:  # oversubscribed OpenMP threads slow small CPU runs down by 10x or more on shared cores
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                self.env.setdefault(var, str(threads))
        self.runs: list[dict[str, Any]] = []
        self.phase1_splits: dict[int, Path] = {}  # seed -> the split whose images (and probe labels) phase 1 uses
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- settings --------------------------------------------------------------------------------------------
    def data_overrides(self) -> dict[str, Any]:
        """Dataset-derived ids: spatial_dims, in_channels, num_classes from the datalist's metadata."""
        out = {}
        for k in ("spatial_dims", "in_channels", "num_classes"):
            if k in self.meta:
                out[k] = int(self.meta[k])
        return out

    def phase_settings(self, phase: str, split: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        """All ids passed to one phase's bundle: profile, dataset, iteration budget, method settings, user overrides.

        Args:
            phase: ``supervised``, ``teacher_pretrain`` or ``cotrain``.
            split: the loaded split datalist.
            extra: method-specific ids (teacher_ckpt, rounds, ...).
        """
        prof = self.profile[phase]
        s: dict[str, Any] = dict(prof["bundle"])
        s.update(self.data_overrides())
        s["seed"] = int(split["seed"])
        bs = int(s.get("batch_size", 8))
        n_lab, n_unl = len(split["labeled"]), len(split.get("unlabeled", []))
        if phase == "supervised":
            epochs = iterations_to_epochs(prof["iterations"], n_lab, bs, drop_last=False)
        elif phase == "teacher_pretrain":
            epochs = iterations_to_epochs(prof["iterations"], n_lab + n_unl, bs, drop_last=True)
        else:
            s["epoch_length"] = int(prof["epoch_length"])
            epochs = max(1, math.ceil(prof["iterations"] / s["epoch_length"]))
        s["max_epochs"] = epochs
        s["val_interval"] = max(1, epochs // max(1, int(prof["validations"])))
        s["warmup_epochs"] = max(1, round(prof["warmup_frac"] * epochs))
        s["lr_step_epochs"] = max(1, round(prof["lr_step_frac"] * epochs))
        s.update(extra)
        bundle = "supervised" if phase == "supervised" else phase
        train_cfg = json.loads((BUNDLES_DIR / bundle / "configs" / "train.json").read_text())
        s.update(checkpoint_interval_overrides(train_cfg, s["val_interval"]))
        user = overrides_for(phase, self.overrides)
        s.update(user)
        if "max_epochs" in user:  # keep validation and schedule consistent with a user-chosen length
            e = int(user["max_epochs"])
            s.setdefault("val_interval", 1)
            if "val_interval" not in user:
                s["val_interval"] = max(1, min(s["val_interval"], e))
            if "warmup_epochs" not in user:
                s["warmup_epochs"] = max(1, min(s["warmup_epochs"], e))
            if "lr_step_epochs" not in user:
                s["lr_step_epochs"] = max(1, min(s["lr_step_epochs"], e))
        for k in [k for k in s if k.endswith("#save_interval_epochs") and k not in user]:
            s[k] = max(1, min(int(s["val_interval"]), int(s["max_epochs"])))
        return s

    # -- one phase -------------------------------------------------------------------------------------------
    def config_list(self, phase_dir: Path, bundle: str, files: Sequence[str]) -> list[Path]:
        cfg = phase_dir / "configs"
        out = [cfg / f for f in files]
        if int(self.meta.get("spatial_dims", 2)) == 3 and (BUNDLES_DIR / bundle / "configs" / "profile_3d.json").is_file():
            out.insert(1, cfg / "profile_3d.json")
        return out

    def run_phase(self, phase_dir: Path, bundle: str, settings: Mapping[str, Any], label: str) -> dict[str, Any]:
        """Train one phase unless its marker says it is done with the same settings.

        Args:
            phase_dir: the phase's work folder (its ``configs/`` is a copy of the bundle's).
            bundle: bundle folder name under ``bundles/``.
            settings: ids for ``runner_overrides.json``.
            label: console prefix.

        Returns:
            the marker record (``wall_time_s``, ``fingerprint``, ...).
        """
        fp = fingerprint({"bundle": bundle, "settings": settings,
                          "configs": {p.name: p.read_text() for p in sorted((BUNDLES_DIR / bundle / "configs").glob("*.json"))}})
        marker, sfile = phase_dir / DONE_MARKER, phase_dir / SETTINGS_FILE
        if sfile.is_file():
            old = json.loads(sfile.read_text())
            if old.get("fingerprint") != fp:
                if not self.args.force:
                    raise RunnerError(
                        f"{phase_dir}: made with other settings or another version of bundles/{bundle}/configs "
                        f"(see {sfile}); rerun with --force to delete and retrain it, or use another --work-dir.")
                print(f"{label} settings changed: deleting {phase_dir}", flush=True)
                shutil.rmtree(phase_dir)
            elif marker.is_file():
                rec = json.loads(marker.read_text())
                print(f"{label} done earlier ({rec.get('wall_time_s', 0):.0f} s), skipped", flush=True)
                return rec
        phase_dir.mkdir(parents=True, exist_ok=True)
        if not (phase_dir / "configs").is_dir():  # a complete bundle folder: training makes its configs self-contained
            shutil.copytree(BUNDLES_DIR / bundle / "configs", phase_dir / "configs")
            shutil.copytree(BUNDLES_DIR / bundle / "docs", phase_dir / "docs", dirs_exist_ok=True)
            shutil.copy2(BUNDLES_DIR / bundle / "LICENSE", phase_dir / "LICENSE")
        (phase_dir / "configs" / OVERRIDES_FILE).write_text(json.dumps(settings, indent=2))
        sfile.write_text(json.dumps({"fingerprint": fp, "bundle": bundle, "settings": settings}, indent=2))
        files = self.config_list(phase_dir, bundle, ["train.json", OVERRIDES_FILE])
        self._write_command(phase_dir / "command.sh", files)
        print(f"{label} training: {settings.get('max_epochs')} epochs -> {phase_dir}", flush=True)
        resumed = (phase_dir / "models" / "train_state.pt").is_file()
        t = run_bundle(files, phase_dir / "train.log", label, self.env)
        rec = {"fingerprint": fp, "wall_time_s": t, "resumed": resumed, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
               "device": environment_info()["device"]}
        marker.write_text(json.dumps(rec, indent=2))
        print(f"{label} finished in {t:.0f} s", flush=True)
        return rec

    def evaluate_phase(self, phase_dir: Path, bundle: str, settings: Mapping[str, Any], protocol: str,
                       label: str) -> tuple[Path, float | None]:
        """Evaluate ``models/model.pt`` on the test split under ``protocol`` (skipped when already done).

        Args:
            phase_dir: the trained phase's folder.
            bundle: bundle name.
            settings: the phase's training ids (the network must be built the same way).
            protocol: protocol name.
            label: console prefix.

        Returns:
            the ``metrics.json`` path and the evaluation wall time (``None`` when skipped).
        """
        out_dir = phase_dir / "eval" / f"test_{protocol}"
        metrics = out_dir / "metrics.json"
        model = phase_dir / "models" / "model.pt"
        if not model.is_file():
            raise RunnerError(f"{model}: missing after training; see {phase_dir / 'train.log'}.")
        if metrics.is_file() and metrics.stat().st_mtime >= model.stat().st_mtime:
            try:
                if json.loads(metrics.read_text()).get("protocol") == protocol:
                    return metrics, None
            except json.JSONDecodeError:
                pass
        ev = {"eval_key": "test", "eval_protocol": protocol, "output_dir": str(out_dir)}
        (phase_dir / "configs" / EVAL_OVERRIDES_FILE).write_text(json.dumps(ev, indent=2))
        files = self.config_list(phase_dir, bundle, ["train.json", "evaluate.json", OVERRIDES_FILE,
                                                     EVAL_OVERRIDES_FILE])
        self._write_command(phase_dir / f"command_eval_{protocol}.sh", files)
        t = run_bundle(files, phase_dir / f"eval_{protocol}.log", f"{label} eval[{protocol}]", self.env)
        if not metrics.is_file():
            raise RunnerError(f"{metrics}: not written by the evaluation; see {phase_dir / f'eval_{protocol}.log'}.")
        return metrics, t

    @staticmethod
    def _write_command(path: Path, files: Sequence[Path]) -> None:
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str([str(f) for f in files])]
        path.write_text("#!/usr/bin/env bash\n# reruns this phase (resumes from models/train_state.pt if present)\n"
                        f"cd {shlex.quote(str(path.parent))}\n{shlex.join(cmd)}\n")

    def run_phase1(self, seed: int, split_path: Path, label: str) -> tuple[Path, dict[str, Any]]:
        """Phase 1 for ``seed``, trained once and shared by every ratio and ablation of the full method.

        Phase 1 never lets a label change the teacher, and every ratio of a seed trains on the same images (the
        labelled and unlabelled sets only divide the training split differently), so one teacher serves them all.
        Its datalist is the split of the smallest ratio of this call (``phase1_splits``); that ratio's labelled set
        is contained in every larger ratio's (nested splits), so the monitoring probe sees no label a run lacks.
        The folder ``<work>/phase1/<split>_<settings hash>/teacher_pretrain`` is shared; runs side by side wait
        for the one that trains it.

        Args:
            seed: split seed.
            split_path: the run's own split (used when no shared split was planned).
            label: console prefix of the run.

        Returns:
            the phase folder and its marker record.
        """
        tp_path = self.phase1_splits.get(int(seed), split_path)
        tp_split = json.loads(tp_path.read_text())
        settings = {"dataset_dir": str(self.datalist.parent), "datalist": str(tp_path),
                    **self.phase_settings("teacher_pretrain", tp_split, {})}
        tag = tp_path.stem.removeprefix("datalist_")
        phase_dir = self.work / "phase1" / f"{tag}_{fingerprint(settings)[:8]}" / "teacher_pretrain"
        with self._locks_guard:
            lock = self._locks.setdefault(phase_dir, threading.Lock())
        with lock:
            return phase_dir, self.run_phase(phase_dir, "teacher_pretrain", settings,
                                             f"{label}[phase 1 {phase_dir.parent.name}]")

    # -- one run ---------------------------------------------------------------------------------------------
    def run_one(self, method: str, ratio: float, seed: int, split_path: Path) -> dict[str, Any]:
        """Train and evaluate one (method, ratio, seed).

        Args:
            method: ``supervised``, ``upper``, ``cps`` or ``full``.
            ratio: labelled ratio of the split (1.0 for ``upper``).
            seed: split seed.
            split_path: the split datalist.
        """
        a = self.args
        split = json.loads(split_path.read_text())
        name = method_name(method, a.rounds, a.round_mode, self.pretrain)
        run_dir = self.work / name / f"r{ratio_tag(ratio)}_s{seed}"
        label = f"[{name} r={ratio_tag(ratio)} s={seed}]"
        data = {"dataset_dir": str(self.datalist.parent), "datalist": str(split_path)}
        times: list[float] = []
        resumed = False
        if method in ("supervised", "upper"):
            bundle, phase = "supervised", "supervised"
            settings = {**data, **self.phase_settings("supervised", split, {})}
        else:
            bundle, phase = "cotrain", "cotrain"
            extra: dict[str, Any] = {"teacher_ckpt": "", "rounds": 0}
            if method == "full":
                extra = {"rounds": int(a.rounds), "round_mode": a.round_mode, "teacher_ckpt": ""}
                if self.pretrain:
                    tp_dir, rec = self.run_phase1(seed, split_path, label)
                    times.append(rec["wall_time_s"])
                    resumed |= bool(rec.get("resumed"))
                    extra["teacher_ckpt"] = str(tp_dir / "models" / "teacher.pt")
                    extra["teacher_fingerprint"] = rec["fingerprint"]  # retrain phase 2 when phase 1 changed
            settings = {**data, **self.phase_settings("cotrain", split, extra)}
        rec = self.run_phase(run_dir / phase, bundle, settings, f"{label}[{phase}]")
        times.append(rec["wall_time_s"])
        resumed |= bool(rec.get("resumed"))
        run: dict[str, Any] = {"train_time_covers_resumed_part_only": resumed, "method": name, "base_method": method, "ratio": float(ratio), "seed": int(seed),
                               "num_labeled": len(split["labeled"]), "folder": str(run_dir),
                               "train_time_s": sum(times), "phase_times_s": times, "metrics": {}}
        sel = run_dir / phase / "models" / "model_selection.json"
        if sel.is_file():
            run["selection"] = json.loads(sel.read_text())
        eval_t = 0.0
        for proto in a.protocol:
            path, t = self.evaluate_phase(run_dir / phase, bundle, settings, proto, f"{label}[{phase}]")
            run["metrics"][proto] = str(path)
            eval_t += t or 0.0
        run["eval_time_s"] = eval_t or None
        (run_dir / "run.json").write_text(json.dumps(run, indent=2))
        return run

    # -- all -------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every requested (method, ratio, seed), then aggregate and write the reports."""
        a = self.args
        ratios = sorted({float(r) for r in a.ratios} | ({1.0} if "upper" in a.methods else set()))
        splits = write_splits(self.datalist, self.work / "splits", ratios, a.seeds, a.val_fraction, a.test_fraction)
        print(f"[runner] dataset {self.name}: {len(self.meta['cases'])} cases; splits in {self.work / 'splits'}",
              flush=True)
        if "full" in a.methods:  # one phase 1 per seed, monitored with the smallest ratio's (nested) labelled set
            r_min = min(float(r) for r in a.ratios)
            self.phase1_splits = {int(s): splits[(r_min, int(s))] for s in a.seeds}
        t_all = time.time()
        tasks = [(method, ratio, int(seed), splits[(ratio, int(seed))])
                 for seed in a.seeds for method in a.methods
                 for ratio in ([1.0] if method == "upper" else sorted(float(r) for r in a.ratios))]
        self.runs.extend(run_tasks(self.run_one, tasks, a.jobs))
        total = time.time() - t_all
        return self.report(total, splits)

    def report(self, total_s: float, splits: Mapping[tuple[float, int], Path]) -> dict[str, Any]:
        """Aggregate, write ``<dataset>.md/.json`` and figures, print the table.

        Args:
            total_s: wall time of this call's training and evaluation.
            splits: the split files.
        """
        a = self.args
        tables = {p: aggregate(self.runs, p) for p in a.protocol}
        self.results_dir.mkdir(parents=True, exist_ok=True)
        figures = []
        try:
            fig = self.plot(tables[a.protocol[0]])
            if fig:
                figures.append(fig.name)
        except Exception as e:  # noqa: BLE001 - a figure must not lose the measured table
            print(f"[runner] warning: Dice-vs-ratio plot failed: {type(e).__name__}: {e}", flush=True)
        try:
            fig = self.qualitative()
            if fig:
                figures.append(fig.name)
        except Exception as e:  # noqa: BLE001
            print(f"[runner] warning: qualitative figure failed: {type(e).__name__}: {e}", flush=True)
        env = environment_info()
        settings = {
            "dataset": str(self.datalist), "profile": a.profile, "methods": list(a.methods),
            "ratios": [float(r) for r in a.ratios], "seeds": [int(s) for s in a.seeds], "protocols": list(a.protocol),
            "rounds (full)": a.rounds, "round_mode (full)": a.round_mode, "phase 1 (full)": self.pretrain,
            "overrides": list(a.override), "profile settings": self.profile,
            "splits": {f"r{ratio_tag(r)}_s{s}": str(p) for (r, s), p in splits.items()},
            "wall time of this call (s)": round(total_s, 1),
        }
        md = write_markdown(self.results_dir / f"{self.name}.md", self.name, tables, env, self.command, settings,
                            self.runs, figures)
        payload = {"dataset": self.name, "command": self.command, "environment": env, "settings": settings,
                   "tables": tables, "runs": self.runs}
        (self.results_dir / f"{self.name}.json").write_text(json.dumps(payload, indent=2, default=str))
        for proto, rows in tables.items():
            print(f"\n[runner] test results, dataset {self.name}, protocol {proto} "
                  f"(mean ± std over per-case values):", flush=True)
            print(format_console_table(rows), flush=True)
        print(f"\n[runner] wrote {md}, {self.results_dir / (self.name + '.json')} and {len(figures)} figure(s); "
              f"total wall time {total_s:.0f} s", flush=True)
        return payload

    def plot(self, rows: Sequence[Mapping[str, Any]]) -> Path | None:
        """Dice vs labelled ratio (%), the ``upper`` runs as a dashed line."""
        from custom_components.visualize import plot_dice_vs_ratio

        res: dict[str, dict[float, Any]] = {}
        upper = None
        for r in rows:
            if r["dice"]["mean"] is None:
                continue
            if r["method"] == "upper":
                upper = 100 * r["dice"]["mean"]
                continue
            res.setdefault(r["method"], {})[100 * r["ratio"]] = {"mean": 100 * r["dice"]["mean"],
                                                                 "std": 100 * r["dice"]["std"]}
        if not res:
            return None
        return plot_dice_vs_ratio(res, self.results_dir / f"{self.name}_dice_vs_ratio.png",
                                  upper_bound={"fully supervised (upper)": upper} if upper is not None else None,
                                  title=f"{self.name}: test Dice ({rows[0]['protocol']})")

    def qualitative(self, num_cases: int | None = None) -> Path | None:
        """Image, pseudo-label (trained teacher), prediction (deployable model.pt), target for a few test cases.

        Uses the first finished co-training run of the full method (else of cps) at the smallest ratio.

        Args:
            num_cases: number of test cases (default ``--num-qualitative``).
        """
        import numpy as np
        import torch
        from monai.bundle import ConfigParser
        from monai.data import load_decathlon_datalist
        from monai.transforms import LoadImage, Resize, ScaleIntensity

        from custom_components.networks import load_teacher_weights

        n = self.args.num_qualitative if num_cases is None else num_cases
        cands = [r for r in self.runs if r["base_method"] in ("full", "cps")]
        cands.sort(key=lambda r: (r["base_method"] != "full", r["ratio"], r["seed"]))
        if not cands or n < 1:
            return None
        run = cands[0]
        phase_dir = Path(run["folder"]) / "cotrain"
        parser = ConfigParser()
        parser.read_config([str(p) for p in self.config_list(phase_dir, "cotrain", ["train.json", OVERRIDES_FILE])])
        parser["device"] = "$torch.device('cpu')"
        teacher = parser.get_parsed_content("network_def", instantiate=True)
        load_teacher_weights(teacher, phase_dir / "models" / "teacher.pt")
        deploy = parser.get_parsed_content("deployable_def", instantiate=True)
        deploy.load_state_dict(torch.load(phase_dir / "models" / "model.pt", map_location="cpu", weights_only=True))
        teacher.eval()
        deploy.eval()
        roi = [int(x) for x in parser["roi_size"]]
        split_path = parser["datalist"]
        cases = load_decathlon_datalist(split_path, True, "test")[:n]
        load = LoadImage(image_only=True, ensure_channel_first=True)
        img_tf, lab_tf = ScaleIntensity(minv=-1.0, maxv=1.0), Resize(roi, mode="nearest")
        resize_img = Resize(roi, mode="area")
        images, pseudo, pred, target, titles = [], [], [], [], []
        with torch.no_grad():
            for c in cases:
                x = resize_img(img_tf(load(c["image"]))).float().unsqueeze(0)
                y = lab_tf(load(c["label"]))
                p_t, _ = teacher.predict(x)
                p_d = deploy(x)
                images.append(np.asarray(x[0]))
                pseudo.append(p_t[0].argmax(0).numpy())
                pred.append(p_d[0].argmax(0).numpy())
                target.append(np.asarray(y[0]).round().astype(np.int64))
                titles.append(Path(str(c["image"])).name)
        from custom_components.visualize import qualitative_panel

        sel = run.get("selection") or {}
        cols = {"pseudo-label (teacher)": pseudo,
                f"prediction (model.pt: {sel.get('network', '?')} @ {float(sel.get('threshold', 0.5)):.2f})": pred,
                "target": target}
        return qualitative_panel(images, cols, self.results_dir / f"{self.name}_qualitative.png", titles=titles)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="the dataset's datalist.json (with 'cases') or its folder")
    p.add_argument("--name", default=None, help="dataset name in outputs (default: the dataset folder's name)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--ratios", nargs="+", type=float, default=[0.1], help="labelled ratios in (0, 1]")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="split seeds (also the training seeds)")
    p.add_argument("--protocol", nargs="+", choices=PROTOCOL_NAMES, default=["clean"],
                   help="evaluation protocol(s); the first one is plotted")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="diffusion rounds R of the full method")
    p.add_argument("--round-mode", choices=("independent", "chained"), default=DEFAULT_ROUND_MODE)
    p.add_argument("--no-pretrain", action="store_true", help="full method without phase 1 (ablation)")
    p.add_argument("--override", action="append", default=[], metavar="PHASE:KEY=VALUE",
                   help="bundle id for one phase (supervised, teacher_pretrain, cotrain, or * for all); "
                        "VALUE is JSON when it parses; repeatable")
    p.add_argument("--iterations", nargs="+", default=[], metavar="PHASE=N",
                   help="override the profile's iteration budget of a phase (e.g. cotrain=400 teacher_pretrain=300)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--work-dir", default=str(REPO_ROOT / "work_dirs"))
    p.add_argument("--results-dir", default=str(REPO_ROOT / "docs" / "results"))
    p.add_argument("--num-qualitative", type=int, default=4, help="test cases in the qualitative figure")
    p.add_argument("--num-threads", type=int, default=None,
                   help="OMP/MKL threads of each bundle process unless already set in the environment "
                        "(default: 1 for the CPU profiles quick and ph2_cpu, else torch's default or the cores / --jobs; "
                        "0 = torch's default)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained side by side (separate processes; one small 2D run leaves most of a GPU idle). "
                        "CPU threads per run default to the cores divided by --jobs")
    p.add_argument("--force", action="store_true", help="delete and rerun phases whose settings changed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        exit status (0 on success, 1 on a runner error).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if any(not 0.0 < r <= 1.0 for r in args.ratios):
        print(f"scripts/run_experiments.py: --ratios must be in (0, 1], got {args.ratios}.", file=sys.stderr)
        return 1
    if args.rounds < 0:
        print(f"scripts/run_experiments.py: --rounds must be >= 0, got {args.rounds}.", file=sys.stderr)
        return 1
    if args.jobs < 1:
        print(f"scripts/run_experiments.py: --jobs must be >= 1, got {args.jobs}.", file=sys.stderr)
        return 1
    command = "python scripts/run_experiments.py " + shlex.join(argv)
    try:
        Experiment(args, command).run()
    except RunnerError as e:
        print(f"scripts/run_experiments.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

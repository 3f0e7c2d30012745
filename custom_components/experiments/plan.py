"""A training plan made from the dataset (nnU-Net's idea, for semi-supervised training).

:func:`fingerprint` reads a prepared dataset (``datalist.json``: sizes, spacings, channels, intensities, class
fractions, the width of the thinnest labelled structure, labelled / unlabelled counts); :func:`machine` the
hardware; :func:`make_plan` turns both and a time budget into ``plan.json``: working resolution, patch size and
inference mode, batch, channel widths and iterations per phase, each with a ``reason``. :func:`make_plan` works on
plain dicts, so it is tested on synthetic fingerprints.

Rules (all tested):

- the working resolution is the native one divided by a factor ``>= 1`` (never upsampled), chosen so that the
  thinnest labelled structure stays at least ``MIN_WIDTH_PX`` pixels wide, and no coarser than needed to fit the
  image in ``WHOLE_IMAGE_LIMIT`` pixels per side;
- an image still larger than that limit at the working resolution is trained on patches (``roi_size``) and
  predicted with a sliding window;
- every compared method trains the same number of iterations; that number fits the time budget by the cost model
  :data:`COST_MODEL` (documented estimates, recorded in the plan) and doubles with the budget up to a cap.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COST_MODEL", "MIN_WIDTH_PX", "WHOLE_IMAGE_LIMIT", "PATCH_SIZE", "MAX_ITERATIONS", "PlanError",
           "bundle_ids", "fingerprint", "load_plan", "machine", "make_plan", "parse_duration", "plan_profile",
           "structure_width"]


class PlanError(ValueError):
    """A plan the runner cannot use (missing, malformed, or asking for what the bundles cannot do yet)."""

MIN_WIDTH_PX = 3.0
"""The thinnest labelled structure keeps at least this many pixels of width at the working resolution."""
WHOLE_IMAGE_LIMIT = {2: {"cpu": 256, "gpu": 512}, 3: {"cpu": 96, "gpu": 160}}
"""Largest side (pixels) trained and predicted whole; above it: patches and a sliding window."""
PATCH_SIZE = {2: {"cpu": 128, "gpu": 256}, 3: {"cpu": 64, "gpu": 96}}
"""Patch side when the working image is larger than :data:`WHOLE_IMAGE_LIMIT`."""
CHANNELS = {"cpu": [16, 32, 64], "gpu": [32, 64, 128, 256]}
MAX_ITERATIONS = 20000
MIN_ITERATIONS = 20
COST_MODEL = {
    "formula": "seconds per iteration = overhead_s + s_per_voxel * batch * patch_voxels * (channels[0] / 16)^2 "
               "* method_cost (one thread per run on a CPU, as the plan's profile sets); a run's time = iterations x "
               "that for its last phase + the shared phase 1 (pretrain_fraction x iterations x pretrain_cost); "
               "eval_reserve of the budget is kept for validation, evaluation and start-up",
    "cpu": {"overhead_s": 0.01, "s_per_voxel": 2e-6},
    "gpu": {"overhead_s": 0.02, "s_per_voxel": 3e-9},
    "method_cost": "the registry's Method.cost (supervised 1, cps 2, full 3)",
    "pretrain_fraction": 0.5,
    "pretrain_cost": 2.0,
    "eval_reserve": 0.2,
    "source": "cpu: measured 1.1e-6 s per voxel-sample for the supervised bundle's 2D UNet (16-32-64, 2 residual "
              "units) forward + backward + Adam step, batch 8 at 128x128, one thread on the 2-core development "
              "machine (shared), x2 for data loading and augmentation; gpu: a documented estimate (order of "
              "magnitude of an H100), not measured: the wall times of the first runs are the check",
}
_DEFAULT_METHODS = ("supervised", "cps", "full")


def parse_duration(text: str | float) -> float:
    """``"30m"`` / ``"2h"`` / ``"90s"`` / ``"1h30m"`` / a number of seconds -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", s)
    if not parts or "".join(n + u for n, u in parts) != s.replace(" ", ""):
        raise ValueError(f"time budget {text!r}: expected e.g. 30m, 2h, 1h30m or 90s.")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def structure_width(mask: np.ndarray) -> float | None:
    """Typical width (pixels) of the structures of a binary mask: 2 x the median of the Euclidean distance transform
    on its ridge (the pixels where the distance to the background is a local maximum: the medial axis), i.e. twice
    the median maximal inscribed radius. A 2-pixel-wide line gives 2; ``None`` for an empty mask."""
    from scipy import ndimage

    m = np.asarray(mask).astype(bool)
    if not m.any():
        return None
    dist = ndimage.distance_transform_edt(np.pad(m, 1))[tuple(slice(1, -1) for _ in m.shape)]
    ridge = m & (dist >= ndimage.maximum_filter(dist, size=3))
    return float(2.0 * np.median(dist[ridge]))


def fingerprint(datalist: str | Path, max_cases: int = 30) -> dict[str, Any]:
    """The dataset's fingerprint from a prepared ``datalist.json`` (``prepare_folder.py`` output: ``cases`` with
    masks, ``unlabeled`` without). Sizes, spacings and channels come from every sampled image; intensities, class
    fractions and structure widths from the labelled ones (at most ``max_cases`` of each list, evenly spaced).

    Returns:
        ``{"spatial_dims", "in_channels", "num_classes", "num_labeled", "num_unlabeled", "median_size",
        "median_spacing", "intensity": {"mean", "std", "p0.5", "p99.5"}, "class_fraction": {class: fraction},
        "structure_width_px": {class: median over cases of structure_width}}``.
    """
    from custom_components.data.datalist import _load, load_datalist

    data = load_datalist(datalist)
    lab, unl = list(data.get("cases", [])), list(data.get("unlabeled", []))
    if not lab:
        raise ValueError(f"{datalist}: no labelled case ('cases' list): the plan needs masks to measure structures.")

    def sample(lst: list) -> list:
        idx = np.unique(np.linspace(0, len(lst) - 1, min(len(lst), max_cases)).round().astype(int))
        return [lst[i] for i in idx] if lst else []

    sizes, spacings, channels, values = [], [], set(), []
    counts: dict[int, int] = {}
    widths: dict[int, list[float]] = {}
    for e in sample(lab) + sample(unl):
        img, meta = _load(e["image"], str(datalist))
        sizes.append(img.shape[1:])
        channels.add(int(img.shape[0]))
        pix = meta.get("pixdim")
        nd = img.ndim - 1
        spacings.append(list(np.asarray(pix, float).reshape(-1)[1:1 + nd]) if pix is not None and nd == 3
                        else [1.0] * nd)
        if "label" not in e:
            continue
        values.append(np.asarray(img, np.float32).reshape(-1)[:: max(1, img[0].size // 20000)])
        lbl = np.asarray(_load(e["label"], str(datalist))[0][0]).round().astype(np.int64)
        for c, n in zip(*np.unique(lbl, return_counts=True)):
            counts[int(c)] = counts.get(int(c), 0) + int(n)
        for c in np.unique(lbl):
            if c > 0:
                w = structure_width(lbl == c)
                if w is not None:
                    widths.setdefault(int(c), []).append(w)
    v = np.concatenate(values)
    total = sum(counts.values())
    return {
        "spatial_dims": len(sizes[0]),
        "in_channels": max(channels),
        "num_classes": int(data.get("num_classes", max(counts) + 1)),
        "num_labeled": len(lab),
        "num_unlabeled": len(unl),
        "median_size": [int(x) for x in np.median(np.asarray(sizes), 0)],
        "median_spacing": [float(x) for x in np.median(np.asarray(spacings), 0)],
        "intensity": {"mean": float(v.mean()), "std": float(v.std()), "p0.5": float(np.percentile(v, 0.5)),
                      "p99.5": float(np.percentile(v, 99.5))},
        "class_fraction": {str(c): n / total for c, n in sorted(counts.items())},
        "structure_width_px": {str(c): float(np.median(w)) for c, w in sorted(widths.items())},
    }


def machine() -> dict[str, Any]:
    """Cores, and the GPU and its memory when ``torch.cuda`` has one."""
    out: dict[str, Any] = {"cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                           else os.cpu_count() or 1, "gpu": None, "gpu_memory_gb": None}
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return out


def _mult16(x: float, up: bool) -> int:
    return max(16, int(16 * (math.ceil(x / 16) if up else math.floor(x / 16))))


def make_plan(fp: Mapping[str, Any], mach: Mapping[str, Any], time_budget_s: float,
              methods: Sequence[str] = _DEFAULT_METHODS, runs: int | None = None) -> dict[str, Any]:
    """The plan: working resolution, patches and inference, batch, widths and iterations, each with a ``reason``.

    Args:
        fp: a :func:`fingerprint` (``spatial_dims``, ``median_size``, ``structure_width_px``, ``num_labeled``, ...).
        mach: a :func:`machine` (``cores``, ``gpu``, ``gpu_memory_gb``).
        time_budget_s: wall time for all the runs of the comparison.
        methods: the compared methods (registry names); all train the same number of iterations.
        runs: training runs per method (default: the folds of cross-validation, ``min(5, num_labeled)``, with 20
            labelled cases or fewer, else 1).
    """
    from custom_components.data.splits import FEW_LABELS

    from .methods import get_method

    dims = int(fp["spatial_dims"])
    dev = "gpu" if mach.get("gpu") else "cpu"
    size = [int(s) for s in fp["median_size"]]
    widths = {c: float(w) for c, w in (fp.get("structure_width_px") or {}).items()}
    thin_c, thin = min(widths.items(), key=lambda kv: kv[1]) if widths else (None, None)
    limit, patch = WHOLE_IMAGE_LIMIT[dims][dev], PATCH_SIZE[dims][dev]
    f_allowed = max(1.0, thin / MIN_WIDTH_PX) if thin else 1.0
    f_wanted = max(1.0, max(size) / limit)
    factor = min(f_allowed, f_wanted)
    work = [max(1, math.ceil(s / factor)) for s in size]
    if factor == 1.0 and f_wanted > 1.0:
        why = (f"native resolution: the thinnest structure (class {thin_c}, {thin:.1f} px wide) would fall under "
               f"{MIN_WIDTH_PX:g} px if shrunk (never upsampled)")
    elif factor == 1.0:
        why = f"native resolution: the image ({'x'.join(map(str, size))}) already fits {limit} px per side"
    elif factor < f_wanted:
        why = (f"downscaled x{factor:.2f} (not more): the thinnest structure (class {thin_c}, {thin:.1f} px) keeps "
               f"{thin / factor:.1f} >= {MIN_WIDTH_PX:g} px")
    else:
        why = (f"downscaled x{factor:.2f} to fit {limit} px per side; the thinnest structure (class {thin_c}, "
               f"{thin:.1f} px) keeps {thin / factor:.1f} px" if thin else f"downscaled x{factor:.2f} to fit {limit} "
               "px per side (no labelled structure measured)")
    if max(work) > limit:
        roi = [_mult16(min(patch, w), up=False) if w >= 16 else 16 for w in work]
        inference = "sliding_window"
        why_roi = (f"the working image ({'x'.join(map(str, work))}) is larger than {limit} px: training on "
                   f"{'x'.join(map(str, roi))} patches, prediction with a sliding window of the same size")
    else:
        roi = [_mult16(w, up=True) for w in work]
        inference = "whole"
        why_roi = (f"whole image resized to {'x'.join(map(str, roi))} (the working size rounded up to a multiple "
                   "of 16, never coarser)")
    channels = CHANNELS[dev]
    voxels = math.prod(roi)
    mem_gb = 0.5 * float(mach.get("gpu_memory_gb") or 0) if dev == "gpu" else 2.0
    per_sample = voxels * sum(channels) * 4 * 2 * 4  # float32, forward + backward, ~4 networks' activations
    cap = {("cpu", 2): 8, ("gpu", 2): 16, ("cpu", 3): 2, ("gpu", 3): 4}[(dev, dims)]
    batch = int(max(1, min(cap, mem_gb * 2**30 // per_sample)))
    why_batch = (f"{batch}: activations of ~{per_sample / 2**20:.0f} MiB per sample within {mem_gb:.0f} GiB "
                 f"({'half the GPU memory' if dev == 'gpu' else 'CPU working memory'}), capped at "
                 f"{cap} on this device")
    n_lab = int(fp.get("num_labeled", 0))
    if runs is None:
        runs = min(5, n_lab) if 2 <= n_lab <= FEW_LABELS else 1
    cm = COST_MODEL[dev]
    t_iter = cm["overhead_s"] + cm["s_per_voxel"] * batch * voxels * (channels[0] / 16) ** 2
    costs = {m: float(get_method(m).cost) for m in methods}
    pretrain = any(get_method(m).pretrain for m in methods)
    per_iter = t_iter * (sum(costs.values()) + (COST_MODEL["pretrain_fraction"] * COST_MODEL["pretrain_cost"]
                                               if pretrain else 0.0))
    raw = (1 - COST_MODEL["eval_reserve"]) * float(time_budget_s) / (runs * per_iter)
    iters = int(min(MAX_ITERATIONS, max(MIN_ITERATIONS, 10 * math.floor(raw / 10))))
    capped = raw > MAX_ITERATIONS
    terms = " + ".join(f"{m} {c:g}" for m, c in costs.items())
    why_it = (f"{iters} iterations for every method: {runs} run(s) x ({terms}"
              + (f" + phase 1 {COST_MODEL['pretrain_fraction'] * COST_MODEL['pretrain_cost']:g}" if pretrain else "")
              + f") x {t_iter:.4f} s per iteration fit {100 * (1 - COST_MODEL['eval_reserve']):.0f} % of "
              f"{time_budget_s:.0f} s" + (f" (capped at {MAX_ITERATIONS})" if capped else "")
              + (" (the budget is too small: at the minimum)" if raw < MIN_ITERATIONS else ""))
    n_pre = max(MIN_ITERATIONS, int(COST_MODEL["pretrain_fraction"] * iters))

    def phase(n: int, **extra: Any) -> dict[str, Any]:
        return {"iterations": n, "validations": 5, "warmup_frac": 0.1, "lr_step_frac": 0.5, **extra}

    return {
        "fingerprint": dict(fp),
        "machine": dict(mach),
        "time_budget_s": float(time_budget_s),
        "methods": list(methods),
        "runs_per_method": runs,
        "resolution": {"native_size": size, "downscale": round(factor, 4), "working_size": work,
                       "thinnest_structure_px": thin, "thinnest_at_working_px": None if thin is None
                       else round(thin / factor, 2), "reason": why},
        "patch": {"roi_size": roi, "inference": inference, "reason": why_roi},
        "batch_size": {"value": batch, "reason": why_batch},
        "channels": {"value": channels, "reason": f"{dev.upper()} widths: {channels}"},
        "iterations": {"value": iters, "reason": why_it,
                       "budgets": {"supervised": phase(iters), "teacher_pretrain": phase(n_pre),
                                   "cotrain": phase(iters, epoch_length=20)}},
        "cost_model": {**COST_MODEL, "seconds_per_iteration": t_iter, "device": dev},
    }


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read a ``plan.json`` written by ``scripts/plan_dataset.py`` (``PlanError`` naming the file otherwise)."""
    import json

    p = Path(path)
    if not p.is_file():
        raise PlanError(f"{p}: no plan; make it with: python scripts/plan_dataset.py {p.parent} --time-budget 30m")
    try:
        plan = json.loads(p.read_text())
        plan["patch"]["roi_size"], plan["iterations"]["budgets"]  # noqa: B018 - the keys the runner reads
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise PlanError(f"{p}: not a plan written by scripts/plan_dataset.py ({type(e).__name__}: {e}).") from e
    return plan


def bundle_ids(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle ids a plan sets in every phase (``roi_size``, ``batch_size``, ``channels``): what a named
    profile's ``bundles/<phase>/configs/profiles/<name>.json`` sets.

    Raises:
        PlanError: a 2D plan with patches and a sliding window (the 2D bundles resize whole images to ``roi_size``;
            patch training in 2D is not wired yet). 3D bundles train on patches and predict with a sliding window.
    """
    dims = int(plan["fingerprint"]["spatial_dims"])
    if plan["patch"]["inference"] == "sliding_window" and dims == 2:
        raise PlanError(f"the plan trains 2D patches of {plan['patch']['roi_size']} with a sliding window "
                        f"({plan['patch']['reason']}); the 2D bundles resize whole images, so this is not wired yet: "
                        "use a named profile with --override '*:roi_size=[...]' meanwhile.")
    return {"roi_size": [int(x) for x in plan["patch"]["roi_size"]], "batch_size": int(plan["batch_size"]["value"]),
            "channels": [int(x) for x in plan["channels"]["value"]]}


def plan_profile(plan: Mapping[str, Any]) -> Any:
    """The runner's :class:`~custom_components.experiments.budget.Profile` named ``auto`` from a plan's budgets."""
    from .budget import PhaseBudget, Profile
    from .methods import PHASES

    b = plan["iterations"]["budgets"]
    return Profile("auto", {ph: PhaseBudget(**b[ph]) for ph in PHASES},
                   num_threads=None if (plan.get("machine") or {}).get("gpu") else 1,
                   description="settings planned from the dataset (plan.json)",
                   spatial_dims=int(plan["fingerprint"]["spatial_dims"]))

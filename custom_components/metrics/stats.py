"""Statistics over seeds and paired comparisons of methods, for the experiment runner's tables.

- :func:`seed_spread`: the mean over seeds of each seed's mean score, and its spread across seeds (sample std,
  ``ddof = 1``; 0 for a single seed);
- :func:`paired_bootstrap`: the mean paired per-case difference of two methods on the *same* test cases (same seed,
  same image) with a seeded percentile bootstrap interval (``scipy.stats.bootstrap``, ``paired=True``: case indices
  resampled with replacement);
- :func:`gap_closed`: the fraction of the reference-to-upper-bound gap a method closes;
- :func:`compare_rows`: all of the above for the runner's aggregated rows of one ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats

__all__ = ["seed_spread", "paired_bootstrap", "gap_closed", "compare_rows"]


def seed_spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean over seeds and spread across seeds (sample standard deviation; 0 for one seed).

    Args:
        values: one score per seed (e.g. each seed's mean test Dice); NaN and ``None`` are left out.
    """
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def paired_bootstrap(
    a: Mapping[str, float], b: Mapping[str, float], num_samples: int = 10000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Mean paired difference ``a - b`` over the cases both have, with a percentile bootstrap interval.

    Args:
        a: case id -> score of the method (ids must identify the same test case in ``b``, e.g. ``"<seed>/<case>"``).
        b: case id -> score of the reference method.
        num_samples: bootstrap resamples.
        seed: seed of the resampling (the interval is a deterministic function of the inputs and the seed).
        level: coverage of the interval.

    Returns:
        ``{"mean_diff", "ci_low", "ci_high", "n", "level"}`` (``None`` values when no case is shared).

    Raises:
        ValueError: ``level`` not in (0, 1) or ``num_samples < 1``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    keys = sorted(k for k in a if k in b and _finite(a[k]) and _finite(b[k]))
    if not keys:
        return {"mean_diff": None, "ci_low": None, "ci_high": None, "n": 0, "level": level}
    av = np.array([float(a[k]) for k in keys], dtype=np.float64)
    bv = np.array([float(b[k]) for k in keys], dtype=np.float64)
    d = av - bv
    if len(d) == 1:  # one case: every resample is that case (scipy needs two observations)
        lo = hi = float(d[0])
    else:
        res = scipy.stats.bootstrap(
            (av, bv), _mean_difference, paired=True, vectorized=True, n_resamples=num_samples,
            confidence_level=level, method="percentile", rng=np.random.default_rng(seed),
        )
        lo, hi = res.confidence_interval
    return {"mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": len(d), "level": level}


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def gap_closed(score: float | None, reference: float | None, upper: float | None) -> float | None:
    """``(score - reference) / (upper - reference)``: 0 = no better than the reference, 1 = the upper bound.

    ``None`` when a score is missing or the upper bound is not above the reference (the fraction means nothing then).

    Args:
        score: the method's score.
        reference: the reference's score (supervised-only at the same ratio).
        upper: the upper bound's score (fully supervised).
    """
    if score is None or reference is None or upper is None or not upper > reference:
        return None
    return (float(score) - float(reference)) / (float(upper) - float(reference))


def compare_rows(
    rows: Sequence[dict[str, Any]],
    references: Sequence[str] = ("supervised", "cps", "cps_diffusion"),
    upper: str = "upper",
    gap_reference: str = "supervised",
    num_samples: int = 10000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Add seed statistics and paired comparisons to the runner's aggregated rows (in place; returned).

    Each row needs ``method``, ``ratio``, ``seed_dice`` (one mean Dice per seed) and ``case_dice`` (``"<seed>/<case>"``
    -> Dice). Adds ``dice_over_seeds`` (:func:`seed_spread`), ``paired`` (reference name -> :func:`paired_bootstrap`
    of the row against the reference at the same ratio; the reference's own row is left out) and ``gap_closed``
    (of the seed means, between ``gap_reference`` at the row's ratio and ``upper``, whatever ratio it has).

    Args:
        rows: rows of one protocol.
        references: methods to compare every row with.
        upper: name of the upper-bound method.
        gap_reference: the lower end of the gap.
        num_samples: bootstrap resamples.
        seed: bootstrap seed.
    """
    by_key = {(r["method"], float(r["ratio"])): r for r in rows}
    for r in rows:
        r["dice_over_seeds"] = seed_spread(r.get("seed_dice") or [])
    uppers = [r for r in rows if r["method"] == upper]
    up = uppers[0]["dice_over_seeds"]["mean"] if uppers else None
    for r in rows:
        r["paired"] = {}
        for ref in references:
            other = by_key.get((ref, float(r["ratio"])))
            if other is None or other is r:
                continue
            r["paired"][ref] = paired_bootstrap(r.get("case_dice") or {}, other.get("case_dice") or {},
                                                num_samples=num_samples, seed=seed)
        low = by_key.get((gap_reference, float(r["ratio"])))
        r["gap_closed"] = None if r["method"] in (upper, gap_reference) or low is None else gap_closed(
            r["dice_over_seeds"]["mean"], low["dice_over_seeds"]["mean"], up)
    return rows


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False

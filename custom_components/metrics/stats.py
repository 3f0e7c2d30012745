"""Statistics over seeds and paired comparisons of methods, for the experiment runner's tables.

- :func:`seed_spread`: the mean over seeds of each seed's mean score, and its spread across seeds (sample std,
  ``ddof = 1``; 0 for a single seed);
- :func:`paired_bootstrap`: the mean paired per-case difference of two methods on the *same* test cases (same seed,
  same image) with a seeded percentile bootstrap interval (``scipy.stats.bootstrap``, ``paired=True``: case indices
  resampled with replacement);
- :func:`gap_closed`: the fraction of the reference-to-upper-bound gap a method closes;
- :func:`compare_rows`: all of the above for the runner's aggregated rows of one ratio;
- :func:`format_interval` / :func:`format_spread`: the printed forms, which say "n too small" instead of an
  interval or a spread from fewer than :data:`MIN_CASES` cases (an interval from 1-4 cases is noise that looks
  like evidence).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats

__all__ = ["MIN_CASES", "TOO_SMALL", "seed_spread", "paired_bootstrap", "gap_closed", "compare_rows",
           "interval_ok", "format_interval", "format_spread"]

MIN_CASES = 5
"""Fewest cases an interval or a spread is printed from."""
TOO_SMALL = "n too small"


def interval_ok(n: Any) -> bool:
    """Whether ``n`` cases are enough to print an interval or a spread (``n >= MIN_CASES``)."""
    return n is not None and int(n) >= MIN_CASES


def format_interval(pb: Mapping[str, Any] | None, scale: float = 100.0, digits: int = 2) -> str:
    """``"+1.23 [+0.10, +2.40]"`` for a :func:`paired_bootstrap` result; ``"+1.23 (n = 4: n too small)"`` from
    fewer than :data:`MIN_CASES` paired cases; ``"-"`` without a shared case.

    Args:
        pb: the result of :func:`paired_bootstrap` (or ``None``).
        scale: factor applied to the numbers (100: Dice points).
        digits: decimals.
    """
    if not pb or pb.get("mean_diff") is None:
        return "-"
    f = f"{{:+.{digits}f}}"
    mean = f.format(scale * pb["mean_diff"])
    n = pb.get("n_cases", pb.get("n"))
    if not interval_ok(n) or pb.get("ci_low") is None:
        return f"{mean} (n = {n}: {TOO_SMALL})"
    return f"{mean} [{f.format(scale * pb['ci_low'])}, {f.format(scale * pb['ci_high'])}]"


def format_spread(stat: Mapping[str, Any] | None, n_cases: Any, scale: float = 100.0, digits: int = 2) -> str:
    """``"mean ± std"`` of a :func:`seed_spread`; ``"mean (n = 4: n too small)"`` when the scores come from fewer
    than :data:`MIN_CASES` test cases; ``"n/a"`` without a value.

    Args:
        stat: ``{"mean", "std"}``.
        n_cases: number of test cases behind the scores (per seed).
        scale: factor applied to the numbers.
        digits: decimals.
    """
    if not stat or stat.get("mean") is None:
        return "n/a"
    mean = f"{scale * stat['mean']:.{digits}f}"
    if not interval_ok(n_cases):
        return f"{mean} (n = {n_cases}: {TOO_SMALL})"
    return f"{mean} ± {scale * stat['std']:.{digits}f}"


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
    a: Mapping[str, float], b: Mapping[str, float], num_samples: int = 10000, seed: int = 0, level: float = 0.95,
    min_cases: int = MIN_CASES,
) -> dict[str, Any]:
    """Mean paired difference ``a - b`` over the cases both have, with a percentile bootstrap interval.

    Args:
        a: case id -> score of the method (ids must identify the same test case in ``b``, e.g. ``"<seed>/<case>"``).
        b: case id -> score of the reference method.
        num_samples: bootstrap resamples.
        seed: seed of the resampling (the interval is a deterministic function of the inputs and the seed).
        level: coverage of the interval.
        min_cases: fewest shared cases an interval is computed from (below: ``ci_low`` / ``ci_high`` are ``None``).

    Returns:
        ``{"mean_diff", "ci_low", "ci_high", "n", "n_cases", "level"}``: ``n`` pairs, ``n_cases`` distinct test
        cases (the part of an id after ``"<seed>/"``); ``None`` values when no case is shared; ``ci_low`` /
        ``ci_high`` are ``None`` from fewer than ``min_cases`` distinct cases: no interval, "n too small").

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
    n_cases = len({k.split("/", 1)[-1] for k in keys})  # distinct test cases: seeds of one image are not new cases
    if n_cases < min_cases:
        return {"mean_diff": float(d.mean()), "ci_low": None, "ci_high": None, "n": len(d), "n_cases": n_cases,
                "level": level}
    if len(d) == 1:  # one case: every resample is that case (scipy needs two observations)
        lo = hi = float(d[0])
    else:
        res = scipy.stats.bootstrap(
            (av, bv), _mean_difference, paired=True, vectorized=True, n_resamples=num_samples,
            confidence_level=level, method="percentile", rng=np.random.default_rng(seed),
        )
        lo, hi = res.confidence_interval
    return {"mean_diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": len(d), "n_cases": n_cases,
            "level": level}


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

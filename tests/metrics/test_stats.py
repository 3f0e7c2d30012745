"""Tests for ``custom_components.metrics.stats``: spread over seeds, the paired bootstrap interval (known answers),
the fraction of the gap closed and the runner-row comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from custom_components.metrics.stats import (
    TOO_SMALL,
    compare_rows,
    format_interval,
    format_spread,
    gap_closed,
    paired_bootstrap,
    seed_spread,
)


def test_seed_spread_is_the_sample_std_across_seeds() -> None:
    s = seed_spread([0.5, 0.7, float("nan")])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(math.sqrt(0.02)) and s["n"] == 2
    assert seed_spread([0.4]) == {"mean": 0.4, "std": 0.0, "n": 1}
    assert seed_spread([])["mean"] is None


def test_bootstrap_of_a_constant_difference_is_that_difference() -> None:
    a = {f"0/c{i}": 0.8 + 0.01 * i for i in range(10)}
    b = {k: v - 0.05 for k, v in a.items()}
    r = paired_bootstrap(a, b, num_samples=500, seed=3)
    assert r["mean_diff"] == pytest.approx(0.05)
    assert r["ci_low"] == pytest.approx(0.05) and r["ci_high"] == pytest.approx(0.05) and r["n"] == 10


def test_bootstrap_two_cases_known_distribution() -> None:
    """Differences {0, 1}: resampled means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the 95 % percentile
    interval is exactly [0, 1] and the 50 % one is [0.5, 0.5]."""
    a, b = {"0/x": 1.0, "0/y": 2.0}, {"0/x": 1.0, "0/y": 1.0}
    wide = paired_bootstrap(a, b, num_samples=20000, seed=0, min_cases=1)
    assert wide["mean_diff"] == pytest.approx(0.5)
    assert wide["ci_low"] == pytest.approx(0.0) and wide["ci_high"] == pytest.approx(1.0)
    narrow = paired_bootstrap(a, b, num_samples=20000, seed=0, level=0.5, min_cases=1)
    assert narrow["ci_low"] == pytest.approx(0.5) and narrow["ci_high"] == pytest.approx(0.5)


def test_bootstrap_matches_the_normal_interval_for_many_cases_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    d = rng.normal(0.03, 0.1, 400)
    a = {f"1/c{i}": 0.5 + x for i, x in enumerate(d)}
    b = {f"1/c{i}": 0.5 for i in range(400)}
    b["1/only_in_b"] = 0.9  # unpaired cases are left out
    r = paired_bootstrap(a, b, num_samples=20000, seed=7)
    se = d.std(ddof=0) / math.sqrt(len(d))
    assert r["n"] == 400 and r["mean_diff"] == pytest.approx(d.mean())
    assert r["ci_low"] == pytest.approx(d.mean() - 1.96 * se, abs=0.15 * se)
    assert r["ci_high"] == pytest.approx(d.mean() + 1.96 * se, abs=0.15 * se)
    assert paired_bootstrap(a, b, num_samples=2000, seed=7) == paired_bootstrap(a, b, num_samples=2000, seed=7)
    assert paired_bootstrap(a, b, num_samples=2000, seed=7) != paired_bootstrap(a, b, num_samples=2000, seed=8)
    assert paired_bootstrap({"a": 1.0}, {"b": 1.0})["mean_diff"] is None
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, b, level=1.5)


def test_gap_closed() -> None:
    assert gap_closed(0.7, 0.5, 0.9) == pytest.approx(0.5)
    assert gap_closed(0.5, 0.5, 0.9) == pytest.approx(0.0)
    assert gap_closed(0.95, 0.5, 0.9) == pytest.approx(1.125)
    assert gap_closed(0.7, 0.6, 0.55) is None  # upper bound below the reference: no gap to close
    assert gap_closed(None, 0.5, 0.9) is None


def test_compare_rows_pairs_by_seed_and_case() -> None:
    def row(method, ratio, per_seed):
        case = {f"{s}/c{i}": v for s, vals in per_seed.items() for i, v in enumerate(vals)}
        return {"method": method, "ratio": ratio, "seed_dice": [float(np.mean(v)) for v in per_seed.values()],
                "case_dice": case}

    rows = [row("supervised", 0.1, {0: [0.5, 0.6, 0.55, 0.55, 0.55], 1: [0.4, 0.5, 0.45, 0.45, 0.45]}),
            row("cps", 0.1, {0: [0.6, 0.7, 0.65, 0.65, 0.65], 1: [0.5, 0.6, 0.55, 0.55, 0.55]}),
            row("full", 0.1, {0: [0.7] * 5, 1: [0.6] * 5}),
            row("upper", 1.0, {0: [0.9] * 5, 1: [0.8] * 5})]
    compare_rows(rows, num_samples=2000)
    sup, cps, full, up = rows
    assert (sup["dice_over_seeds"]["mean"] == pytest.approx(0.5)
            and sup["dice_over_seeds"]["std"] == pytest.approx(math.sqrt(0.005)))
    assert cps["paired"]["supervised"]["mean_diff"] == pytest.approx(0.1)
    assert cps["paired"]["supervised"]["ci_low"] == pytest.approx(0.1)  # the same +0.1 on every case
    assert "cps" not in cps["paired"] and "supervised" not in sup["paired"]
    assert full["paired"]["cps"]["mean_diff"] == pytest.approx(0.05)
    assert up["paired"] == {}  # no reference at ratio 1
    assert cps["gap_closed"] == pytest.approx((0.6 - 0.5) / (0.85 - 0.5))
    assert sup["gap_closed"] is None and up["gap_closed"] is None


@pytest.mark.parametrize("n", [1, 4, 5])
def test_no_interval_from_fewer_than_five_cases(n: int) -> None:
    """1 or 4 paired cases: the mean difference but no interval, printed "n too small"; 5: an interval."""
    a = {f"0/c{i}": 0.6 + 0.05 * i for i in range(n)}
    b = {k: 0.5 for k in a}
    r = paired_bootstrap(a, b, num_samples=500, seed=0)
    assert r["n"] == r["n_cases"] == n
    assert r["mean_diff"] == pytest.approx(float(np.mean([v - 0.5 for v in a.values()])))
    text = format_interval(r)
    spread = format_spread(seed_spread([0.6, 0.7]), n_cases=n)
    if n < 5:
        assert r["ci_low"] is None and r["ci_high"] is None
        assert TOO_SMALL in text and "[" not in text
        assert TOO_SMALL in spread and "±" not in spread and spread.startswith("65.00")
    else:
        assert r["ci_low"] <= r["mean_diff"] <= r["ci_high"]
        assert TOO_SMALL not in text and text.startswith(f"{100 * r['mean_diff']:+.2f} [")
        assert spread == "65.00 ± 7.07"
    two_seeds = paired_bootstrap({f"{s}/{k[2:]}": v for k in a for s, v in ((0, a[k]), (1, a[k]))},
                                 {f"{s}/{k[2:]}": 0.5 for k in a for s in (0, 1)}, num_samples=100)
    assert two_seeds["n"] == 2 * n and two_seeds["n_cases"] == n  # two seeds of one image are one case
    assert (two_seeds["ci_low"] is None) == (n < 5)
    assert format_interval({"mean_diff": None}) == "-" and format_spread({"mean": None}, 10) == "n/a"

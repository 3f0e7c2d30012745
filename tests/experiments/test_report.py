"""``custom_components.experiments.report``: aggregation over seeds and the results page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from custom_components.experiments import report as rx
from custom_components.experiments.environment import REPO_ROOT, relative_path


# ---------------------------------------------------------------------------------------------- aggregation, reports
def _fake_metrics(path: Path, protocol: str, dice: list[float | None], pooled: float | None = None) -> Path:
    rows = [{"case": f"c{i}", "protocol": protocol, "distance_unit": "voxel", "dice_class1": d,
             "jaccard_class1": None if d is None else d / (2 - d), "hd95_class1": 2.0 * (i + 1),
             "asd_class1": 1.0, "flags": ""} for i, d in enumerate(dice)]
    finite = [d for d in dice if d is not None]
    summary = {"protocol": protocol, "num_cases": len(rows), "distance_unit": "voxel",
               "metrics": {"class1": {"dice": {"mean": sum(finite) / len(finite), "std": 0.0, "n": len(finite)},
                                      "jaccard": {}, "hd95": {}, "asd": {}}}}
    if pooled is not None:
        summary["pooled"] = {"class1": {"dice": pooled, "jaccard": pooled / (2 - pooled)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"protocol": protocol, "per_case": rows, "summary": summary}))
    return path


def test_aggregate_pools_cases_of_all_seeds(tmp_path):
    m0 = _fake_metrics(tmp_path / "s0.json", "paper2d", [0.8, 0.6], pooled=0.7)
    m1 = _fake_metrics(tmp_path / "s1.json", "paper2d", [1.0, None], pooled=0.9)
    runs = [
        {"method": "full", "ratio": 0.1, "seed": 0, "num_labeled": 7, "metrics": {"paper2d": str(m0)},
         "train_time_s": 10.0, "selection": {"network": "teacher", "threshold": 0.46, "dice": 0.8}},
        {"method": "full", "ratio": 0.1, "seed": 1, "num_labeled": 7, "metrics": {"paper2d": str(m1)},
         "train_time_s": 30.0, "selection": {"network": "student", "threshold": 0.5, "dice": 0.7}},
    ]
    (row,) = rx.aggregate(runs, "paper2d")
    assert row["seeds"] == [0, 1] and row["num_test_cases"] == 4 and row["num_labeled"] == [7]
    assert row["dice"]["n"] == 3  # the NaN (None) case is left out
    assert row["dice"]["mean"] == pytest.approx(0.8)
    assert row["dice"]["std"] == pytest.approx(math.sqrt((0.0 + 0.04 + 0.04) / 3))
    assert row["seed_dice"] == [pytest.approx(0.7), pytest.approx(1.0)]
    assert row["pooled_dice"] == pytest.approx(0.8)
    assert row["hd95"]["mean"] == pytest.approx(3.0)
    assert row["train_time_s"]["mean"] == pytest.approx(20.0)
    assert rx.aggregate(runs, "clean") == []  # no run evaluated under clean


def test_aggregate_rejects_wrong_protocol_file(tmp_path):
    m = _fake_metrics(tmp_path / "s0.json", "clean", [0.5])
    with pytest.raises(rx.ReportError, match="expected 'paper2d'"):
        rx.aggregate([{"method": "cps", "ratio": 0.1, "seed": 0, "metrics": {"paper2d": str(m)}}], "paper2d")


def test_markdown_report(tmp_path):
    m = _fake_metrics(tmp_path / "a.json", "paper2d", [0.5, 0.7], pooled=0.61)
    u = _fake_metrics(tmp_path / "b.json", "paper2d", [0.9, 0.9], pooled=0.9)
    runs = [
        {"method": "upper", "ratio": 1.0, "seed": 0, "metrics": {"paper2d": str(u)}, "train_time_s": 5.0,
         "eval_time_s": 1.0, "folder": "w/upper"},
        {"method": "cps", "ratio": 0.1, "seed": 0, "metrics": {"paper2d": str(m)}, "train_time_s": 7.0,
         "eval_time_s": None, "folder": "w/cps", "selection": {"network": "teacher", "threshold": 0.44,
                                                               "dice": 0.6, "epoch": 3}},
    ]
    rows = rx.aggregate(runs, "paper2d")
    table = rx.format_markdown_table(rows)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| method | labelled |") and "pooled Dice (%)" in lines[0]
    assert lines[2].startswith("| cps | 10 %") and "60.00 ± 10.00" in lines[2] and "61.00" in lines[2]
    assert "teacher @ 0.44" in lines[2]
    assert lines[3].startswith("| upper | 100 %") and "90.00 ± 0.00" in lines[3]
    env = {"device": "CPU: test", "versions": "x"}
    md = rx.write_markdown(tmp_path / "res" / "fake.md", "fake", {"paper2d": rows}, env, "python run --x",
                           {"profile": "quick", "seeds": [0]}, runs, ["fake_dice_vs_ratio.png"])
    text = md.read_text()
    for needle in ("# Results: fake", "python run --x", "protocol `paper2d`", "CPU: test", "pooled over all",
                   "![fake_dice_vs_ratio.png](fake_dice_vs_ratio.png)", "| cps | 0.1 | 0 | 7 | n/a | teacher @ 0.44"):
        assert needle in text, needle
    assert "## Warnings" not in text
    runs[1]["warnings"] = ["degenerate result: the selected model predicts 98.0 % foreground on validation, "
                           "the validation labels have 6.0 %."]
    text = rx.write_markdown(tmp_path / "res" / "fake.md", "fake", {"paper2d": rows}, env, "python run --x",
                             {"profile": "quick", "seeds": [0]}, runs).read_text()
    assert "## Warnings" in text and "- cps r0.1 s0: degenerate result: the selected model predicts 98.0 %" in text
    console = rx.format_console_table(rows)
    assert "cps" in console.splitlines()[2] and "|" in console and "---" not in console.splitlines()[0]




def test_runs_table_and_paths_are_relative_to_the_repository(tmp_path):
    m = _fake_metrics(tmp_path / "a.json", "clean", [0.5])
    folder = REPO_ROOT / "work_dirs" / "x" / "cps" / "r0.1_s0"
    runs = [{"method": "cps", "ratio": 0.1, "seed": 0, "metrics": {"clean": str(m)}, "train_time_s": 1.0,
             "folder": str(folder)}]
    md = rx.write_markdown(tmp_path / "x.md", "x", {"clean": rx.aggregate(runs, "clean")}, {}, "cmd", {}, runs)
    text = md.read_text()
    assert "`work_dirs/x/cps/r0.1_s0`" in text and str(REPO_ROOT) not in text
    assert relative_path(REPO_ROOT / "docs") == "docs"
    assert relative_path(REPO_ROOT.parent / "data" / "d.json") == "../data/d.json"


def test_runs_table_names_a_threshold_chosen_again_under_the_test_window(tmp_path):
    m = _fake_metrics(tmp_path / "a.json", "la_uamt", [0.5])
    runs = [{"method": "cps", "ratio": 0.1, "seed": 0, "metrics": {"la_uamt": str(m)}, "train_time_s": 1.0,
             "selection": {"network": "student", "threshold": 0.88, "dice": 0.67, "epoch": 4},
             "test_thresholds": {"la_uamt": {"threshold": 0.42, "dice": 0.7}}}]
    text = rx.write_markdown(tmp_path / "x.md", "x", {"la_uamt": rx.aggregate(runs, "la_uamt")}, {}, "cmd", {},
                             runs).read_text()
    assert "student @ 0.88 (test window: 0.42)" in text  # the table's cell
    assert "`la_uamt`: threshold 0.42 chosen again on validation with the test window (val Dice 70.00)" in text
def _fake_multiclass_metrics(path: Path, per_class: dict[str, list[float | None]]) -> Path:
    names = list(per_class)
    n = len(next(iter(per_class.values())))
    rows = []
    for i in range(n):
        row = {"case": f"c{i}", "protocol": "clean", "distance_unit": "voxel", "flags": ""}
        for c in names:
            row.update({f"dice_{c}": per_class[c][i], f"jaccard_{c}": 0.0, f"hd95_{c}": 1.0, f"asd_{c}": 1.0})
        vals = [per_class[c][i] for c in names if per_class[c][i] is not None]
        row.update({"dice_mean": sum(vals) / len(vals), "jaccard_mean": 0.0, "hd95_mean": 1.0, "asd_mean": 1.0})
        rows.append(row)
    stat = {"mean": 0.0, "std": 0.0, "n": n}
    summary = {"protocol": "clean", "num_cases": n, "distance_unit": "voxel",
               "metrics": {g: {"dice": stat, "jaccard": {}, "hd95": {}, "asd": {}} for g in names + ["mean"]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"protocol": "clean", "per_case": rows, "summary": summary}))
    return path


def test_multiclass_table_has_the_mean_and_every_foreground_class(tmp_path):
    # class "rare" absent from case 1 (None = empty in both: left out); never predicted where present (0.0)
    m = _fake_multiclass_metrics(tmp_path / "m.json", {"lesion": [0.8, 0.6], "core": [0.5, 0.7], "rare": [0.0, None]})
    (row,) = rx.aggregate([{"method": "full", "ratio": 0.1, "seed": 0, "metrics": {"clean": str(m)}}], "clean")
    assert row["dice"]["mean"] == pytest.approx(((0.8 + 0.5 + 0.0) / 3 + (0.6 + 0.7) / 2) / 2)
    assert row["class_dice"]["lesion"]["mean"] == pytest.approx(0.7)
    assert row["class_dice"]["rare"] == {"mean": 0.0, "std": 0.0, "n": 1}
    lines = rx.format_markdown_table([row]).strip().splitlines()
    assert "Dice per class (%)" in lines[0]
    assert "lesion 70.0, core 60.0, rare 0.0" in lines[2]
    binary = _fake_metrics(tmp_path / "b.json", "clean", [0.5])
    (brow,) = rx.aggregate([{"method": "cps", "ratio": 0.1, "seed": 0, "metrics": {"clean": str(binary)}}], "clean")
    assert brow["class_dice"] == {} and "Dice per class" not in rx.format_markdown_table([brow])




def test_table_has_seed_spread_gap_closed_and_paired_intervals(tmp_path):
    from custom_components.metrics.stats import compare_rows

    runs = []
    per = {"supervised": ([0.5, 0.6, 0.5, 0.6, 0.55], [0.4, 0.5, 0.4, 0.5, 0.45]),
           "cps": ([0.6, 0.7, 0.6, 0.7, 0.65], [0.5, 0.6, 0.5, 0.6, 0.55]), "upper": ([0.9] * 5, [0.8] * 5)}
    for method, seeds in per.items():
        for seed, dice in enumerate(seeds):
            m = _fake_metrics(tmp_path / f"{method}{seed}.json", "clean", dice)
            runs.append({"method": method, "ratio": 1.0 if method == "upper" else 0.1, "seed": seed,
                         "metrics": {"clean": str(m)},
                         "selection": {"network": "x", "threshold": 0.5, "dice": 0.5, "epoch": 1,
                                       "curve": {"thresholds": [0.1, 0.5, 0.9], "dice": [0.2, 0.5, 0.4]}}})
    rows = compare_rows(rx.aggregate(runs, "clean"), num_samples=500)
    cps = next(r for r in rows if r["method"] == "cps")
    assert len(cps["case_dice"]) == 10 and cps["case_dice"]["0/c1"] == 0.7 and cps["case_dice"]["1/c0"] == 0.5
    table = rx.format_markdown_table(rows).strip().splitlines()
    assert "Dice over seeds (%)" in table[0] and "gap closed" in table[0] and "Δ Dice vs supervised" in table[0]
    line = next(ln for ln in table if ln.startswith("| cps "))
    # seed means 0.65 / 0.55 -> 60.00 ± 7.07; gap (0.6 - 0.5) / (0.85 - 0.5) = 29 %; +10 on every case
    assert "60.00 ± 7.07" in line and "29 %" in line and "+10.00 [+10.00, +10.00]" in line
    md = rx.write_markdown(tmp_path / "r.md", "fake", {"clean": rows}, {"device": "CPU"}, "cmd", {}, runs).read_text()
    assert "## Threshold sweep on validation" in md and "| cps | 0.1 | 0 | 0.50 |" in md
    # the one-line verdict at the top of the page: cps +10 on every case beats supervised; upper has no pair
    assert rx.headline(rows) == ("cps beats supervised at 10 % labelled (+10.0 [+10.0, +10.0] Dice points, "
                                 "2 seed(s)).")
    assert md.index("## In one line") < md.index("## Command") and "**Test Dice, protocol `clean`: cps beats" in md
    for r in rows:  # a difference whose interval holds 0 is no win
        if r["method"] == "cps":
            r["paired"]["supervised"].update(mean_diff=0.01, ci_low=-0.02, ci_high=0.04)
    assert "cps is within noise of supervised" in rx.headline(rows)


@pytest.mark.parametrize("n", [1, 4, 5])
def test_no_interval_and_no_verdict_from_fewer_than_five_test_cases(tmp_path, n):
    """A table and the one-line verdict from n test cases: n = 1 or 4 print "n too small" (no interval, no spread,
    no "beats"; a warning at the top of the page); n = 5 prints the interval and the verdict."""
    from custom_components.metrics.stats import TOO_SMALL, compare_rows

    runs = []
    for method, base in (("supervised", 0.5), ("full", 0.7)):  # full: +20 on every case
        for seed in (0, 1):
            m = _fake_metrics(tmp_path / f"{method}{seed}.json", "clean", [base + 0.01 * i - 0.05 * seed
                                                                           for i in range(n)])
            runs.append({"method": method, "ratio": 1.0, "seed": seed, "num_labeled": 2 if n == 1 else 4,
                         "metrics": {"clean": str(m)}})
    rows = compare_rows(rx.aggregate(runs, "clean"), num_samples=500)
    line = next(ln for ln in rx.format_markdown_table(rows).splitlines() if ln.startswith("| full "))
    verdict = rx.headline(rows)
    md = rx.write_markdown(tmp_path / "r.md", "fake", {"clean": rows}, {}, "cmd", {}, runs).read_text()
    if n < 5:
        assert line.count(TOO_SMALL) == 2 and "[" not in line and "±" not in line.split("|")[9]
        assert "beats" not in verdict and TOO_SMALL in verdict and "[" not in verdict
        assert "cannot be compared with supervised" in verdict
        assert "## Warning: little evidence" in md and f"{n} test case(s) per seed" in md
    else:
        assert TOO_SMALL not in line and "+20.00 [+20.00, +20.00]" in line and "69.50 ± 3.54" in line
        assert verdict.startswith("full beats supervised") and TOO_SMALL not in md
    assert ("only 2 labelled case(s) trained (fewer than 3)" in md) == (n == 1)


def test_dice_vs_time_has_one_point_per_method_and_ratio_with_its_mean_time(tmp_path):
    """Issue 26: the comparison's Dice-vs-training-time figure; a row without a training time is left out."""
    runs = []
    for method, ratio, times, dice in (("full", 0.1, (10.0, 30.0), [0.8, 0.6]), ("supervised", 0.1, (2.0, 4.0), [0.5]),
                                       ("supervised", 0.05, (1.0, 1.0), [0.4]), ("cps", 0.1, (None, None), [0.7])):
        for seed, t in enumerate(times):
            m = _fake_metrics(tmp_path / f"{method}_{ratio}_{seed}.json", "clean", dice)
            runs.append({"method": method, "ratio": ratio, "seed": seed, "metrics": {"clean": str(m)},
                         **({"train_time_s": t} if t is not None else {})})
    rows = [r for m in ("full", "supervised", "cps") for r in rx.aggregate(runs, "clean") if r["method"] == m]
    pts = {(p["method"], p["ratio"]): p for p in rx.dice_vs_time_points(rows)}
    assert set(pts) == {("full", 0.1), ("supervised", 0.1), ("supervised", 0.05)}
    assert pts[("full", 0.1)]["time_s"] == pytest.approx(20.0) and pts[("full", 0.1)]["dice"] == pytest.approx(70.0)
    assert pts[("supervised", 0.05)]["dice"] == pytest.approx(40.0)
    png = rx.dice_vs_time_figure(rows, tmp_path / "t.png", "t")
    assert png is not None and png.stat().st_size > 0
    assert rx.dice_vs_time_figure([r for r in rows if r["method"] == "cps"], tmp_path / "none.png", "t") is None

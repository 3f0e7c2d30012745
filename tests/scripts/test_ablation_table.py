"""``scripts/ablation_table.py``: one page from the runs of several runner calls in one work folder, paired against
supervised-only and plain CPS on the seeds both have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_loader import load_script

from custom_components.errors import run_cli

ablation_table = load_script("ablation_table")


def _run(work: Path, method: str, ratio: float, seed: int, dice: list[float]) -> None:
    folder = work / method / f"r{ratio:g}_s{seed}"
    rows = [{"case": f"c{i}", "dice_class1": d, "jaccard_class1": d, "hd95_class1": 1.0, "asd_class1": 1.0}
            for i, d in enumerate(dice)]
    summary = {"protocol": "clean", "distance_unit": "voxel",
               "metrics": {"class1": {"dice": {"mean": sum(dice) / len(dice)}}}}
    metrics = folder / "cotrain" / "eval" / "test_clean" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"protocol": "clean", "per_case": rows, "summary": summary}))
    (folder / "run.json").write_text(json.dumps({"method": method, "base_method": method.split("_")[0],
                                                 "ratio": ratio, "seed": seed, "metrics": {"clean": str(metrics)},
                                                 "train_time_s": 10.0}))


def test_page_merges_the_ablations_of_separate_calls(tmp_path, capsys):
    work = tmp_path / "ph2"
    for s in (0, 1, 2):
        _run(work, "supervised", 0.1, s, [0.5, 0.6, 0.7])
        _run(work, "cps_diffusion", 0.1, s, [0.6, 0.7, 0.8])
        _run(work, "upper", 1.0, s, [0.9, 0.9, 0.9])
    _run(work, "full_R1", 0.1, 0, [0.7, 0.8, 0.9])  # one seed finished
    _run(work, "full_R1", 0.2, 0, [0.1, 0.1, 0.1])  # another ratio: left out
    page = tmp_path / "abl.md"
    methods = ["supervised", "cps_diffusion", "full_R1", "full_nopretrain", "upper"]
    assert run_cli(ablation_table.main, ["--work-dir", str(work), "--ratio", "0.1", "--methods", *methods,
                                         "--page", str(page)]) == 0
    md = page.read_text()
    assert "- `full_R1`: seeds 0" in md and "- `full_nopretrain`: seeds none finished" in md
    rows = {r["method"]: r for r in json.loads(page.with_suffix(".json").read_text())["rows"]}
    assert set(rows) == {"supervised", "cps_diffusion", "full_R1", "upper"}
    r1 = rows["full_R1"]
    assert r1["seeds"] == [0] and r1["paired"]["supervised"]["n"] == 3  # paired on seed 0's cases only
    assert r1["paired"]["supervised"]["mean_diff"] == pytest.approx(0.2)
    assert r1["paired"]["cps_diffusion"]["mean_diff"] == pytest.approx(0.1)
    assert r1["gap_closed"] == pytest.approx((0.8 - 0.6) / (0.9 - 0.6))
    assert "| full_R1 | 10 % | 0 | 3 |" in md


def test_references_add_a_paired_column_per_reference(tmp_path, capsys):
    """``--references ... full``: every row is also paired against the full method (what removing a part costs)."""
    work = tmp_path / "ph2"
    for s in (0, 1):
        _run(work, "supervised", 0.1, s, [0.5, 0.6, 0.7])
        _run(work, "cps", 0.1, s, [0.6, 0.7, 0.8])
        _run(work, "full", 0.1, s, [0.7, 0.8, 0.9])
        _run(work, "full_R1", 0.1, s, [0.65, 0.75, 0.85])
    page = tmp_path / "abl.md"
    assert run_cli(ablation_table.main, ["--work-dir", str(work), "--ratio", "0.1", "--methods", "supervised", "cps",
                                         "full", "full_R1", "--references", "supervised", "cps", "full",
                                         "--page", str(page)]) == 0
    md = page.read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| method |"))
    assert header.index("Δ Dice vs supervised") < header.index("Δ Dice vs cps") < header.index("Δ Dice vs full")
    rows = {r["method"]: r for r in json.loads(page.with_suffix(".json").read_text())["rows"]}
    assert rows["full_R1"]["paired"]["full"]["mean_diff"] == pytest.approx(-0.05)
    assert "full" not in rows["full"]["paired"]  # no row is compared with itself


def test_no_finished_run_is_an_error_naming_the_folder(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    assert run_cli(ablation_table.main, ["--work-dir", str(tmp_path / "w"), "--ratio", "0.1", "--methods", "cps",
                                         "--page", str(tmp_path / "p.md")]) == 2
    assert str(tmp_path / "w") in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "p.md").exists()

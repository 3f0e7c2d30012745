"""``scripts/phase1_report.py`` on tiny synthetic data: the report, its monitor curve and its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from script_loader import load_script

from custom_components.data import make_split, make_synthetic_dataset, write_split

ROOT = Path(__file__).resolve().parents[2]


def test_phase1_report_writes_table_monitor_curve_and_figures(tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_cases=24, image_size=32, seed=0, name="tiny_lesions")
    split = write_split(make_split(data / "datalist.json", 0.25, 0), data)
    out = tmp_path / "report"
    cmd = [sys.executable, str(ROOT / "scripts" / "phase1_report.py"), "--dataset-dir", str(data), "--datalist",
           str(split), "--epochs", "2", "--validations", "2", "--probe-steps", "3", "--roi", "16", "16",
           "--channels", "8", "16", "--batch-size", "4", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]

    md = (out / "phase1.md").read_text()
    assert md.startswith("# Phase 1 on tiny_lesions: pretrained vs untrained teacher")
    assert "| untrained (same init) |" in md and "| pretrained (phase 1) |" in md
    payload = json.loads((out / "phase1.json").read_text())
    # one monitor row per validation run of the bundle (val_interval = epochs // validations = 1)
    assert [v["epoch"] for v in payload["validation"]] == [1, 2]
    assert payload["validation"][1]["iteration"] > payload["validation"][0]["iteration"] > 0
    for v in payload["validation"]:
        assert 0.0 <= v["val_best_assignment_dice"] <= 1.0 and 0.0 <= v["val_frac_class1"] <= 1.0
        assert "val_rec_gain_blank" in v and "val_rec_gain_shuffled" in v  # the label-free measure, every round
    for row in ("untrained (same init)", "pretrained (phase 1)"):
        assert isinstance(payload[row]["rec_gain_blank"], float) and isinstance(
            payload[row]["rec_gain_shuffled"], float)
    assert "reconstruction gain" in md
    assert len(payload["history"]["loss_cyc"]) == 2
    assert md.count("\n| 1 | ") == 1 and md.count("\n| 2 | ") == 1  # the monitor table in the report
    for png in ("phase1_loss.png", "phase1_masks.png", "phase1_validation.png"):
        assert (out / png).stat().st_size > 1000, png


def test_score_runs_ranks_finished_phase1_folders(tmp_path, capsys):
    """``--score-runs`` trains nothing: it scores finished folders (one tiny run of this script, listed twice) and
    writes the ranking page with the measures of each run and the per-dataset rank correlations."""
    from custom_components.errors import run_cli

    data = tmp_path / "data"
    make_synthetic_dataset(data, spatial_dims=2, num_cases=16, image_size=16, seed=0, name="tiny_lesions")
    split = write_split(make_split(data / "datalist.json", 0.25, 0), data)
    cmd = [sys.executable, str(ROOT / "scripts" / "phase1_report.py"), "--dataset-dir", str(data), "--datalist",
           str(split), "--epochs", "1", "--validations", "1", "--probe-steps", "2", "--roi", "16", "16",
           "--channels", "8", "16", "--batch-size", "4", "--work-dir", str(tmp_path / "a"), "--out",
           str(tmp_path / "a" / "report"), "--seed", "3"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    folder = tmp_path / "a" / "teacher_pretrain"
    assert json.loads((folder / "configs" / "report_overrides.json").read_text())["max_epochs"] == 1
    mtimes = {p: p.stat().st_mtime for p in folder.rglob("*")}
    module = load_script("phase1_report")
    out = tmp_path / "ranking"
    assert run_cli(module.main, ["--score-runs", str(folder), str(folder), "--probe-steps", "2", "--out",
                                 str(out)]) == 0
    assert {p: p.stat().st_mtime for p in folder.rglob("*")} == mtimes  # scored, not retrained
    payload = json.loads((out / "ranking.json").read_text())
    assert [r["max_epochs"] for r in payload["runs"]] == [1, 1]
    for r in payload["runs"]:
        assert r["dataset"] == "tiny_lesions" and 0.0 <= r["best_assignment_dice"] <= 1.0
        assert isinstance(r["rec_gain_blank"], float) and isinstance(r["found_lesion"], bool)
        assert len(r["history"]) == 1  # the bundle's monitor, read back from report/phase1.json
    assert payload["runs"][0]["rec_gain_blank"] == payload["runs"][1]["rec_gain_blank"]  # seeded: same folder
    assert payload["across_runs"]["tiny_lesions"]["rec_gain_blank vs best_assignment_dice"]["n"] == 2
    md = (out / "ranking.md").read_text()
    assert md.count("| tiny_lesions |") >= 2 and (out / "ranking.png").stat().st_size > 1000
    capsys.readouterr()
    assert run_cli(module.main, ["--score-runs", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2
    assert "not a finished phase-1 folder" in capsys.readouterr().err.strip().splitlines()[-1]

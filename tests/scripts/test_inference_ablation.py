"""``scripts/inference_ablation.py`` on a tiny stand-in for a trained co-training run: every setting is evaluated
from a copy (the run folder is only read), with its own validation threshold, and the page compares it with the
default one pass."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from script_loader import load_script

from custom_components.networks import MaskPathwaySegmenter

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "inference_ablation.py"


def _fake_run(run_dir: Path, data: Path, seed: int) -> Path:
    """A run folder as the runner leaves it: run.json, cotrain/configs (+ runner_overrides.json), models/."""
    phase = run_dir / "cotrain"
    shutil.copytree(ROOT / "bundles" / "cotrain" / "configs", phase / "configs")
    ids = {"dataset_dir": str(data), "datalist": str(data / "datalist.json"), "channels": [8, 16],
           "norm_num_groups": 4, "num_workers": 0, "roi_size": [16, 16], "val_batch_size": 2, "seed": seed,
           "check_datalist_files": False}
    (phase / "configs" / "runner_overrides.json").write_text(json.dumps(ids))
    torch.manual_seed(seed)
    net = MaskPathwaySegmenter(2, 3, 2, channels=[8, 16], norm_num_groups=4)
    with torch.no_grad():  # MONAI zero-initialises the output layer: perturb so that the settings differ
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    (phase / "models").mkdir(parents=True)
    torch.save(net.state_dict(), phase / "models" / "model.pt")
    (phase / "models" / "model_selection.json").write_text(json.dumps({"network": "teacher", "threshold": 0.5,
                                                                         "epoch": 1}))
    (run_dir / "run.json").write_text(json.dumps({"method": "full", "base_method": "full", "ratio": 0.1,
                                                  "seed": seed, "folder": str(run_dir)}))
    return run_dir


def test_inference_ablation_page_from_copies(tiny_dataset_2d, tmp_path):
    data = tiny_dataset_2d(num_cases=8, size=(20, 28))
    runs = [_fake_run(tmp_path / "work" / "full" / f"r0.1_s{s}", data, s) for s in (0, 1)]
    before = {p: p.stat().st_mtime for r in runs for p in r.rglob("*")}
    page = tmp_path / "results" / "ablation.md"
    cmd = [sys.executable, str(SCRIPT), "--runs", *map(str, runs), "--out", str(tmp_path / "out"), "--page",
           str(page), "--timesteps", "500", "--draws", "2", "--ddim-steps", "2", "--repeats", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p: p.stat().st_mtime for r in runs for p in r.rglob("*")} == before  # the runs are only read

    md = page.read_text()
    payload = json.loads(page.with_suffix(".json").read_text())
    names = ["one pass t=500", "ensemble 2 t=500", "DDIM 2 steps"]
    assert [s["name"] for s in payload["settings"]] == names
    rows = {r["method"]: r for r in payload["rows"]}
    assert rows["one pass t=500"]["paired"] == {}  # the reference
    for name in names[1:]:
        assert rows[name]["paired"]["one pass t=500"]["n"] == 4  # 2 test cases x 2 seeds, paired
        assert f"| {name} | " in md
    assert rows["one pass t=500"]["seeds"] == [0, 1] and rows["one pass t=500"]["num_test_cases"] == 4
    assert all(t["per_image_s"] > 0 for t in payload["timing"].values())
    for s in (0, 1):
        for name in names:
            out = tmp_path / "out" / f"full_r0.1_s{s}" / "cotrain" / "eval" / name.replace(" ", "_").replace("=", "")
            setting = json.loads((out / "setting.json").read_text())
            assert 0.0 < setting["threshold"] < 1.0 and setting["images"] == 2
            assert len(json.loads((out / "metrics.json").read_text())["per_case"]) == 2
    # the settings are really different networks: DDIM's test Dice per case differs from the one pass
    case = {n: rows[n]["case_dice"] for n in names}
    assert case["DDIM 2 steps"] != case["one pass t=500"]
    # a second call on the same --out keeps what is finished; --only-finished evaluates nothing new
    again = tmp_path / "results" / "again.md"
    res = subprocess.run([*cmd[:cmd.index("--page") + 1], str(again), *cmd[cmd.index("--page") + 2:],
                          "--ddim-steps", "2", "3", "--only-finished"], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    kept = json.loads(again.with_suffix(".json").read_text())
    assert [s["name"] for s in kept["settings"]] == names  # DDIM 3 steps was never evaluated: not on the page
    assert {r["method"]: r["case_dice"] for r in kept["rows"]} == case
    assert "evaluations kept from an earlier call on --out: 6" in again.read_text()


def test_a_run_that_did_not_finish_is_named(tmp_path, capsys):
    from custom_components.errors import run_cli

    module = load_script("inference_ablation")
    run = tmp_path / "full" / "r0.1_s0"
    (run / "cotrain" / "configs").mkdir(parents=True)
    code = run_cli(module.main, ["--runs", str(run), "--out", str(tmp_path / "o"), "--page", str(tmp_path / "p.md")])
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(run) in last and "not a finished co-training run" in last and "run.json" in last
    assert not (tmp_path / "p.md").exists()

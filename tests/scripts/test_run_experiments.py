"""The command line scripts/run_experiments.py (the logic is tested in tests/experiments/): argument checks and
one end-to-end run on tiny synthetic data (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_loader import load_script

from custom_components.experiments.runner import DONE_MARKER

ROOT = Path(__file__).resolve().parents[2]


rx = load_script("run_experiments")



@pytest.mark.parametrize("args, msg", [(["--ratios", "0"], "--ratios must be in (0, 1]"),
                                       (["--jobs", "0"], "--jobs must be >= 1"),
                                       (["--override", "max_epochs=5"], "expected PHASE:KEY=VALUE"),
                                       (["--iterations", "cotrain=x"], "expected PHASE=N")])
def test_main_rejects_bad_arguments_last_on_stderr(cases_datalist, tmp_path, capsys, args, msg):
    dl = cases_datalist(tmp_path)
    assert rx.main(["--dataset", str(dl), "--work-dir", str(tmp_path), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert msg in err[-1] and err[-1].startswith("scripts/run_experiments.py:")


def test_arguments_become_typed_settings(tmp_path):
    ns = rx.build_parser().parse_args(["--dataset", "d.json", "--no-pretrain", "--override", "cotrain:rounds=1",
                                       "--iterations", "cotrain=40", "--protocol", "clean", "paper2d"])
    s = rx.settings_from_args(ns)
    assert s.pretrain is False and s.overrides == [("cotrain", "rounds", 1)] and s.iterations == {"cotrain": 40}
    assert list(s.protocols) == ["clean", "paper2d"] and isinstance(s.dataset, Path)
    cmd = rx.command_line(["--dataset", str(ROOT / "work_dirs" / "d" / "datalist.json"), "--seeds", "0"])
    assert cmd == "python scripts/run_experiments.py --dataset work_dirs/d/datalist.json --seeds 0"


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_end_to_end_tiny(tmp_path):
    from custom_components.data import make_synthetic_dataset

    dl = make_synthetic_dataset(tmp_path / "syn", num_cases=24, image_size=16, seed=0)
    res = tmp_path / "res"
    argv = ["--dataset", str(dl), "--name", "tiny", "--work-dir", str(tmp_path / "wd"), "--results-dir", str(res),
            "--methods", "supervised", "cps_diffusion", "full", "upper", "--ratios", "0.25", "--seeds", "0",
            "--protocol", "clean", "paper2d", "--rounds", "1", "--num-qualitative", "2", "--jobs", "2",
            "--override", "*:max_epochs=1", "--override", "*:roi_size=[16,16]", "--override", "cotrain:epoch_length=2",
            "--override", "cotrain:channels=[8,16]", "--override", "teacher_pretrain:channels=[8,16]",
            "--override", "supervised:network_def#channels=[4,8,16,32]"]
    assert rx.main(argv) == 0
    payload = json.loads((res / "tiny.json").read_text())
    methods = [r["method"] for r in payload["tables"]["clean"]]
    assert methods == ["supervised", "cps_diffusion", "full_R1", "upper"]  # the requested order, whatever finished
    # first
    assert all(r["dice"]["n"] > 0 for r in payload["tables"]["paper2d"])
    assert all(r["pooled_dice"] is not None for r in payload["tables"]["paper2d"])
    assert (res / "tiny.md").is_file() and (res / "tiny_dice_vs_ratio.png").is_file()
    assert (res / "tiny_qualitative.png").is_file()
    full = tmp_path / "wd" / "tiny" / "full_R1" / "r0.25_s0"
    (phase1,) = (tmp_path / "wd" / "tiny" / "phase1").glob("r0.25_s0_*/teacher_pretrain")
    assert (phase1 / "models" / "teacher.pt").is_file()
    assert (full / "cotrain" / "models" / "model.pt").is_file()
    assert (full / "cotrain" / "eval" / "test_paper2d" / "metrics.json").is_file()
    assert not list((ROOT / "bundles").glob("*/models"))  # nothing written inside bundles/
    mtime = (full / "cotrain" / DONE_MARKER).stat().st_mtime
    assert rx.main(argv) == 0  # resumable: everything is skipped
    assert (full / "cotrain" / DONE_MARKER).stat().st_mtime == mtime

"""Tests of scripts/run_experiments.py: pure logic (fast) and one end-to-end run on tiny synthetic data (slow)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("run_experiments", ROOT / "scripts" / "run_experiments.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


rx = _load()


# ---------------------------------------------------------------------------------------------- overrides, names
def test_parse_override_json_and_string_values():
    assert rx.parse_override("cotrain:max_epochs=50") == ("cotrain", "max_epochs", 50)
    assert rx.parse_override("*:roi_size=[32, 32]") == ("*", "roi_size", [32, 32])
    assert rx.parse_override("supervised:learning_rate=1e-3") == ("supervised", "learning_rate", 1e-3)
    assert rx.parse_override("cotrain:teacher_ckpt=") == ("cotrain", "teacher_ckpt", "")
    assert rx.parse_override("cotrain:round_mode=chained") == ("cotrain", "round_mode", "chained")
    assert rx.parse_override("supervised:network_def#channels=[8,16]") == ("supervised", "network_def#channels", [8, 16])
    assert rx.parse_override("cotrain:use_ce=true") == ("cotrain", "use_ce", True)


@pytest.mark.parametrize(
    "text, msg",
    [("max_epochs=5", "expected PHASE:KEY=VALUE"), ("cotrain:max_epochs", "expected PHASE:KEY=VALUE"),
     ("pseudo:max_epochs=5", "unknown phase 'pseudo'")],
)
def test_parse_override_rejects(text, msg):
    with pytest.raises(rx.RunnerError, match=msg):
        rx.parse_override(text)


def test_overrides_for_phase_specific_wins_over_star():
    ovs = [rx.parse_override(t) for t in ("cotrain:max_epochs=7", "*:max_epochs=2", "*:num_workers=0")]
    assert rx.overrides_for("cotrain", ovs) == {"max_epochs": 7, "num_workers": 0}
    assert rx.overrides_for("supervised", ovs) == {"max_epochs": 2, "num_workers": 0}


def test_method_name_marks_ablations():
    assert rx.method_name("cps") == "cps"
    assert rx.method_name("full") == "full"
    assert rx.method_name("full", rounds=1) == "full_R1"
    assert rx.method_name("full", round_mode="chained", pretrain=False) == "full_chained_nopretrain"


def test_iterations_to_epochs():
    assert rx.iterations_to_epochs(300, 7, 4, drop_last=False) == 150  # 2 batches per epoch
    assert rx.iterations_to_epochs(180, 72, 8, drop_last=True) == 20  # 9 per epoch
    assert rx.iterations_to_epochs(10, 3, 8, drop_last=True) == 10  # dataset smaller than a batch: 1 per epoch
    with pytest.raises(rx.RunnerError, match="empty dataset"):
        rx.iterations_to_epochs(10, 0, 8, drop_last=False)


def test_profiles_have_every_phase_and_budget():
    for name, prof in rx.PROFILES.items():
        assert set(prof) == set(rx.PHASES), name
        for phase, p in prof.items():
            assert p["iterations"] > 0 and "roi_size" in p["bundle"] and "batch_size" in p["bundle"], (name, phase)
    paper = rx.PROFILES["paper"]
    assert paper["cotrain"]["bundle"]["roi_size"] == [128, 128]
    assert paper["cotrain"]["bundle"]["learning_rate"] == 1e-3
    assert 600 <= paper["cotrain"]["iterations"] <= 700
    assert paper["teacher_pretrain"]["bundle"]["batch_size"] == 16 and paper["teacher_pretrain"]["iterations"] == 1500


# ---------------------------------------------------------------------------------------------- splits, settings
def _cases_datalist(tmp_path: Path, n: int = 20) -> Path:
    ds = tmp_path / "ds"
    ds.mkdir()
    cases = [{"image": f"imagesTr/case_{i:03d}.png", "label": f"labelsTr/case_{i:03d}.png"} for i in range(n)]
    p = ds / "datalist.json"
    p.write_text(json.dumps({"name": "fake", "spatial_dims": 2, "num_classes": 2, "in_channels": 3, "cases": cases}))
    return p


def test_write_splits_deterministic_and_relative_to_dataset(tmp_path):
    dl = _cases_datalist(tmp_path)
    out = tmp_path / "work" / "splits"
    a = rx.write_splits(dl, out, [0.1, 1.0], [0, 1])
    first = {k: p.read_text() for k, p in a.items()}
    b = rx.write_splits(dl, out, [0.1, 1.0], [0, 1])
    assert {k: p.read_text() for k, p in b.items()} == first
    assert sorted(p.name for p in a.values()) == sorted(
        ["datalist_r0.1_s0.json", "datalist_r0.1_s1.json", "datalist_r1_s0.json", "datalist_r1_s1.json"])
    s = json.loads(a[(0.1, 0)].read_text())
    img = (out / s["labeled"][0]["image"]).resolve()
    assert img == (dl.parent / "imagesTr" / Path(s["labeled"][0]["image"]).name).resolve()
    assert all("label" not in e for e in s["unlabeled"])
    assert json.loads(a[(1.0, 0)].read_text())["unlabeled"] == []
    assert a[(0.1, 0)].read_text() != a[(0.1, 1)].read_text()


def _args(tmp_path: Path, dl: Path, **kw) -> argparse.Namespace:
    argv = ["--dataset", str(dl), "--work-dir", str(tmp_path / "wd"), "--results-dir", str(tmp_path / "res")]
    for o in kw.pop("override", []):
        argv += ["--override", o]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", *([str(x) for x in v] if isinstance(v, list) else [str(v)])]
    return rx.build_parser().parse_args(argv)


def test_phase_settings_budget_and_overrides(tmp_path):
    dl = _cases_datalist(tmp_path, 40)
    exp = rx.Experiment(_args(tmp_path, dl, override=["cotrain:max_epochs=3", "*:num_workers=1"]), "cmd")
    split = json.loads(rx.write_splits(dl, tmp_path / "sp", [0.25], [0])[(0.25, 0)].read_text())
    n_lab = len(split["labeled"])
    sup = exp.phase_settings("supervised", split, {})
    assert sup["max_epochs"] == math.ceil(rx.PROFILES["quick"]["supervised"]["iterations"] / math.ceil(n_lab / 4))
    assert sup["in_channels"] == 3 and sup["num_classes"] == 2 and sup["spatial_dims"] == 2
    assert sup["num_workers"] == 1 and sup["seed"] == 0
    co = exp.phase_settings("cotrain", split, {"rounds": 3, "teacher_ckpt": ""})
    assert co["max_epochs"] == 3 and co["epoch_length"] == 20 and co["rounds"] == 3
    assert co["val_interval"] <= 3 and co["warmup_epochs"] <= 3
    assert co["channels"] == [16, 32, 64] and co["roi_size"] == [32, 32]


def test_experiment_rejects_split_datalist(tmp_path):
    p = tmp_path / "datalist.json"
    p.write_text(json.dumps({"labeled": [], "validation": []}))
    with pytest.raises(rx.RunnerError, match="no 'cases' list"):
        rx.Experiment(_args(tmp_path, p), "cmd")


def test_main_rejects_bad_ratio(tmp_path, capsys):
    dl = _cases_datalist(tmp_path)
    assert rx.main(["--dataset", str(dl), "--ratios", "0", "--work-dir", str(tmp_path)]) == 1
    assert "--ratios must be in (0, 1]" in capsys.readouterr().err


def test_run_phase_refuses_changed_settings(tmp_path):
    dl = _cases_datalist(tmp_path)
    exp = rx.Experiment(_args(tmp_path, dl), "cmd")
    phase = tmp_path / "phase"
    phase.mkdir()
    (phase / rx.SETTINGS_FILE).write_text(json.dumps({"fingerprint": "0000"}))
    with pytest.raises(rx.RunnerError, match="made with other settings"):
        exp.run_phase(phase, "supervised", {"max_epochs": 1}, "[t]")


def test_run_phase_skips_finished(tmp_path):
    dl = _cases_datalist(tmp_path)
    exp = rx.Experiment(_args(tmp_path, dl), "cmd")
    phase = tmp_path / "phase"
    phase.mkdir()
    settings = {"max_epochs": 1}
    fp = rx.fingerprint({"bundle": "supervised", "settings": settings, "configs": {
        p.name: p.read_text() for p in sorted((rx.BUNDLES_DIR / "supervised" / "configs").glob("*.json"))}})
    (phase / rx.SETTINGS_FILE).write_text(json.dumps({"fingerprint": fp}))
    (phase / rx.DONE_MARKER).write_text(json.dumps({"fingerprint": fp, "wall_time_s": 12.0}))
    assert exp.run_phase(phase, "supervised", settings, "[t]")["wall_time_s"] == 12.0  # no subprocess started


# ---------------------------------------------------------------------------------------------- runs side by side
def test_run_tasks_runs_side_by_side_and_keeps_task_order():
    import threading

    barrier = threading.Barrier(2, timeout=20)  # both runs must be in flight at once, or the barrier breaks
    started: list[str] = []

    def fn(method, ratio, seed):
        started.append(method)
        barrier.wait()
        return {"method": method, "ratio": ratio, "seed": seed}

    tasks = [("supervised", 0.1, 0), ("full", 0.1, 0)]
    out = rx.run_tasks(fn, tasks, jobs=2)
    assert [r["method"] for r in out] == ["supervised", "full"]  # the order of the tasks, not of completion
    assert started[0] == "full"  # the most expensive method starts first
    lone = threading.Barrier(2, timeout=0.5)
    with pytest.raises(threading.BrokenBarrierError):  # one at a time: the first run waits for a partner in vain
        rx.run_tasks(lambda *t: lone.wait(), tasks, jobs=1)


def test_run_tasks_failure_lets_the_others_finish_and_names_every_failure():
    done: list[str] = []

    def fn(method, ratio, seed):
        if method in ("cps", "upper"):
            raise rx.RunnerError(f"{method} exploded")
        done.append(method)
        return {"method": method}

    tasks = [("cps", 0.1, 0), ("supervised", 0.1, 0), ("upper", 1.0, 0), ("full", 0.1, 0)]
    with pytest.raises(rx.RunnerError, match="2 of 4 runs failed") as e:
        rx.run_tasks(fn, tasks, jobs=2)
    assert "cps ratio 0.1 seed 0: cps exploded" in str(e.value) and "upper ratio 1.0 seed 0" in str(e.value)
    assert sorted(done) == ["full", "supervised"]
    done.clear()
    with pytest.raises(rx.RunnerError, match="cps exploded"):  # one at a time: stops at the first failure
        rx.run_tasks(fn, tasks, jobs=1)
    assert done == []


def test_threads_per_run_share_the_cores(tmp_path, monkeypatch):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(rx.os, "cpu_count", lambda: 16)
    dl = _cases_datalist(tmp_path)
    assert rx.Experiment(_args(tmp_path, dl, profile="ph2", jobs=4), "cmd").env["OMP_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in rx.Experiment(_args(tmp_path, dl, profile="ph2"), "cmd").env  # torch decides
    for prof in rx.CPU_PROFILES:  # small CPU runs: one thread each, side by side or not
        assert rx.Experiment(_args(tmp_path, dl, profile=prof, jobs=2), "cmd").env["MKL_NUM_THREADS"] == "1"
    assert rx.Experiment(_args(tmp_path, dl, profile="ph2", jobs=4, num_threads=3), "cmd").env["OMP_NUM_THREADS"] == "3"


def test_phase1_is_shared_by_every_ratio_and_trained_one_run_at_a_time(tmp_path, monkeypatch):
    import threading
    import time

    dl = _cases_datalist(tmp_path, 40)
    exp = rx.Experiment(_args(tmp_path, dl, methods=["full"], ratios=[0.2, 0.1], jobs=2), "cmd")
    calls: list[tuple[str, Path, dict]] = []
    inside = {"now": 0, "max": 0}
    guard = threading.Lock()

    def fake_run_phase(phase_dir, bundle, settings, label):
        with guard:
            calls.append((bundle, phase_dir, dict(settings)))
            inside["now"] += bundle == "teacher_pretrain"
            inside["max"] = max(inside["max"], inside["now"])
        phase_dir.mkdir(parents=True, exist_ok=True)
        time.sleep(0.3)  # the two runs overlap here
        with guard:
            inside["now"] -= bundle == "teacher_pretrain"
        return {"wall_time_s": 1.0, "fingerprint": f"fp-{bundle}"}

    monkeypatch.setattr(exp, "run_phase", fake_run_phase)
    monkeypatch.setattr(exp, "evaluate_phase", lambda *a, **k: (tmp_path / "metrics.json", 0.0))
    monkeypatch.setattr(exp, "report", lambda total, splits: exp.runs)
    runs = exp.run()

    assert [r["ratio"] for r in runs] == [0.1, 0.2]
    p1 = [c for c in calls if c[0] == "teacher_pretrain"]
    assert len(p1) == 2 and p1[0][1] == p1[1][1]  # both runs ask for the same phase-1 folder ...
    assert inside["max"] == 1  # ... one at a time (the second finds it done in the real run_phase)
    assert p1[0][1].parent.parent == exp.work / "phase1" and p1[0][1].parent.name.startswith("r0.1_s0_")
    assert Path(p1[0][2]["datalist"]).name == "datalist_r0.1_s0.json"  # the smallest ratio's nested labelled set
    ckpts = {c[2]["teacher_ckpt"] for c in calls if c[0] == "cotrain"}
    assert ckpts == {str(p1[0][1] / "models" / "teacher.pt")}
    cot = {Path(c[2]["datalist"]).name for c in calls if c[0] == "cotrain"}
    assert cot == {"datalist_r0.1_s0.json", "datalist_r0.2_s0.json"}  # phase 2 keeps each ratio's own split


def test_main_rejects_bad_jobs(tmp_path, capsys):
    dl = _cases_datalist(tmp_path)
    assert rx.main(["--dataset", str(dl), "--jobs", "0", "--work-dir", str(tmp_path)]) == 1
    assert "--jobs must be >= 1" in capsys.readouterr().err


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
    with pytest.raises(rx.RunnerError, match="expected 'paper2d'"):
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


def test_console_line_filter():
    assert rx._console_line("x - INFO - Epoch: 2/5, Iter: 3/9 -- loss: 1.0", "[p]") is None
    line = rx._console_line("x - INFO - Epoch: 2/5, Iter: 9/9 -- loss: 1.0 loss_cps: 0.5 ", "[p]")
    assert line == "[p] epoch 2/5 loss=1.0 loss_cps=0.5"
    assert rx._console_line("2026 - INFO - Epoch[2] Metrics -- val_dice: 0.5", "[p]") == "[p] Epoch[2] Metrics -- val_dice: 0.5"


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_end_to_end_tiny(tmp_path):
    from custom_components.data import make_synthetic_dataset

    dl = make_synthetic_dataset(tmp_path / "syn", num_cases=24, image_size=16, seed=0)
    res = tmp_path / "res"
    argv = ["--dataset", str(dl), "--name", "tiny", "--work-dir", str(tmp_path / "wd"), "--results-dir", str(res),
            "--methods", "supervised", "cps", "full", "upper", "--ratios", "0.25", "--seeds", "0",
            "--protocol", "clean", "paper2d", "--rounds", "1", "--num-qualitative", "2", "--jobs", "2",
            "--override", "*:max_epochs=1", "--override", "*:roi_size=[16,16]", "--override", "cotrain:epoch_length=2",
            "--override", "cotrain:channels=[8,16]", "--override", "teacher_pretrain:channels=[8,16]",
            "--override", "supervised:network_def#channels=[4,8,16,32]"]
    assert rx.main(argv) == 0
    payload = json.loads((res / "tiny.json").read_text())
    methods = [r["method"] for r in payload["tables"]["clean"]]
    assert methods == ["supervised", "cps", "full_R1", "upper"]  # the requested order, whatever finished first
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
    mtime = (full / "cotrain" / rx.DONE_MARKER).stat().st_mtime
    assert rx.main(argv) == 0  # resumable: everything is skipped
    assert (full / "cotrain" / rx.DONE_MARKER).stat().st_mtime == mtime

"""The few-label protocol of issue 25 in the runner: cross-validation folds, pooled scores, no interval from n < 5,
the recommended model and the model delivered for prediction (bundle subprocesses replaced by fakes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custom_components.experiments import report
from custom_components.experiments import runner as rx
from custom_components.experiments.runner import Experiment, RunnerError, RunnerSettings


def _dataset(cases_datalist, tmp_path: Path, n: int, n_pool: int = 5, **meta) -> Path:
    dl = cases_datalist(tmp_path, n)
    data = json.loads(dl.read_text())
    data["unlabeled"] = [{"image": f"imagesUn/scan_{i:02d}.png"} for i in range(n_pool)]
    data.update(meta)
    dl.write_text(json.dumps(data))
    return dl


def _case(entry: dict) -> str:
    return Path(entry["image"]).name.split(".")[0]


def _fake_experiment(tmp_path: Path, dl: Path, monkeypatch, gain: float, **kw) -> tuple[Experiment, list]:
    """An ``Experiment`` whose phases write only what the runner reads: a bundle folder (configs, model) per phase,
    and per test case a Dice of 0.5 + 0.02 * case index for supervised-only, that plus ``gain`` for the others."""
    kw.setdefault("methods", ["supervised", "full", "upper"])
    exp = Experiment(RunnerSettings(dataset=dl, work_dir=tmp_path / "wd", results_dir=tmp_path / "res",
                                    num_qualitative=0, **kw), "cmd")
    calls: list[tuple[str, Path, dict]] = []

    def fake_run_phase(phase_dir, bundle, settings, label, method_files=()):
        calls.append((bundle, phase_dir, dict(settings)))
        (phase_dir / "configs").mkdir(parents=True, exist_ok=True)
        (phase_dir / "configs" / "inference.json").write_text("{}")
        (phase_dir / "models").mkdir(exist_ok=True)
        (phase_dir / "models" / "model.pt").write_bytes(b"weights")
        (phase_dir / "models" / "train_state.pt").write_bytes(b"state")
        (phase_dir / "train.log").write_text("log")
        split = json.loads(Path(settings["datalist"]).read_text())
        sel = ({"selection": "last", "network": "x", "threshold": 0.5, "dice": None, "epoch": 3}
               if split["selection"] == "last" else {"network": "x", "threshold": 0.5, "dice": 0.7, "epoch": 3})
        (phase_dir / "models" / "model_selection.json").write_text(json.dumps(sel))
        return {"wall_time_s": 1.0, "fingerprint": f"fp-{phase_dir}"}

    def fake_evaluate(phase_dir, bundle, protocol, label):
        settings = next(st for b, d, st in calls if d == phase_dir)
        split = json.loads(Path(settings["datalist"]).read_text())
        extra = 0.0 if "/supervised/" in phase_dir.as_posix() else gain
        rows = [{"case": _case(e), "dice_mean": 0.5 + 0.02 * int(_case(e).split("_")[1]) + extra}
                for e in split["test"]]
        out = phase_dir / "eval" / f"test_{protocol}" / "metrics.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        mean = sum(r["dice_mean"] for r in rows) / len(rows)
        out.write_text(json.dumps({"protocol": protocol, "per_case": rows,
                                   "summary": {"metrics": {"mean": {"dice": {"mean": mean}}}}}))
        return out, 0.5

    monkeypatch.setattr(exp, "run_phase", fake_run_phase)
    monkeypatch.setattr(exp, "evaluate_phase", fake_evaluate)
    return exp, calls


def test_cv_tests_every_labelled_case_once_and_never_an_unlabelled_image(cases_datalist, tmp_path, monkeypatch,
                                                                          capsys):
    dl = _dataset(cases_datalist, tmp_path, 7)
    exp, calls = _fake_experiment(tmp_path, dl, monkeypatch, gain=0.05)
    assert exp.cv_folds == 5  # automatic: 7 labelled cases, no official test split
    payload = exp.run()
    out = capsys.readouterr().out
    assert "5-fold cross-validation over the labelled cases" in out and "'upper'] left out" in out

    all_cases = sorted(_case(c) for c in json.loads(dl.read_text())["cases"])
    pool = {e["image"] for e in json.loads(dl.read_text())["unlabeled"]}
    for method in ("supervised", "full"):
        folds = [json.loads(Path(st["datalist"]).read_text()) for b, d, st in calls
                 if d.parent.parent.name == method and d.parent.name.startswith("cv")]
        tested = sorted(_case(e) for f in folds for e in f["test"])
        assert tested == all_cases  # every labelled case exactly once
        for f in folds:
            assert not {_case(e) for e in f["test"]} & {_case(e) for e in f["labeled"] + f["validation"]}
            assert sorted(Path(e["image"]).name for e in f["unlabeled"]) == sorted(Path(p).name for p in pool)
            assert not {Path(e["image"]).name for e in f["test"]} & {Path(p).name for p in pool}
            assert f["selection"] == "last" and f["validation"] == []  # 5 training cases: a carve-out of 1 < 3
    # phase 1: one per fold, on that fold's split (never on its test images), monitored on the labelled cases
    p1 = [(d, st) for b, d, st in calls if b == "teacher_pretrain" and "all_s" not in d.parent.name]
    assert len({d for d, _ in p1}) == 5 and all(st["val_key"] == "labeled" for _, st in p1)
    assert {Path(st["datalist"]).name for _, st in p1} == {f"datalist_cv5_f{i}_s0.json" for i in range(5)}
    assert not any(d.parent.name == "upper" for _, d, _ in calls)

    rows = {r["method"]: r for r in payload["tables"]["clean"]}
    assert set(rows) == {"supervised", "full"}
    sup = rows["supervised"]
    expected = [0.5 + 0.02 * i for i in range(7)]
    assert sup["num_test_cases"] == 7 and sup["cv"] == 5 and len(sup["seed_dice"]) == 1
    assert sup["seed_dice"][0] == pytest.approx(sum(expected) / 7)  # pooled over the folds, every case once
    paired = rows["full"]["paired"]["supervised"]
    assert paired["n_cases"] == 7 and paired["mean_diff"] == pytest.approx(0.05)
    assert paired["ci_low"] == pytest.approx(0.05) and paired["ci_high"] == pytest.approx(0.05)

    rec = payload["recommendation"]
    assert rec["method"] == "full" and rec["cross_validated"] and rec["score"] == pytest.approx(sum(expected) / 7
                                                                                                + 0.05)
    # the delivered model: the full method retrained on all 7 labelled cases (its own phase 1 too), copied whole
    final = [(b, d, st) for b, d, st in calls if d.parent.name.startswith("all_s0")]
    assert [b for b, _, _ in final] == ["teacher_pretrain", "cotrain"]
    all_split = json.loads(Path(final[1][2]["datalist"]).read_text())
    assert sorted(_case(e) for e in all_split["labeled"] + all_split["validation"]) == all_cases
    assert all_split["test"] == [] and len(all_split["unlabeled"]) == 5
    delivered = exp.work / "recommended"
    assert (delivered / "configs" / "inference.json").is_file() and (delivered / "models" / "model.pt").is_file()
    assert not (delivered / "models" / "train_state.pt").exists() and not (delivered / "train.log").exists()
    assert json.loads((delivered / "recommended.json").read_text())["method"] == "full"
    md = (tmp_path / "res" / "ds.md").read_text()
    section = md.split("## Recommended model")[1].split("##")[0]
    assert "**full**" in section and "+5.00 [+5.00, +5.00]" in section and "retrained on all 7 labelled" in section
    assert "/wd/ds/recommended/configs/inference.json --input_dir" in section  # the predict command uses it
    assert "5-fold CV (5/6 labelled per fold)" in md or "5-fold CV (6/5 labelled per fold)" in md
    assert "last checkpoint, no validation" in md


def test_supervised_only_is_recommended_when_it_scores_best(cases_datalist, tmp_path, monkeypatch):
    dl = _dataset(cases_datalist, tmp_path, 6)
    exp, calls = _fake_experiment(tmp_path, dl, monkeypatch, gain=-0.03, methods=["supervised", "full"])
    rec = exp.run()["recommendation"]
    assert rec["method"] == "supervised" and rec["vs_supervised"] is None
    assert [b for b, d, _ in calls if d.parent.name.startswith("all_s0")] == ["supervised"]  # no phase 1 for it
    assert json.loads((exp.work / "recommended" / "recommended.json").read_text())["method"] == "supervised"


def test_four_labelled_cases_four_folds_and_no_interval(cases_datalist, tmp_path, monkeypatch):
    dl = _dataset(cases_datalist, tmp_path, 4)
    exp, calls = _fake_experiment(tmp_path, dl, monkeypatch, gain=0.05, methods=["supervised", "full"])
    payload = exp.run()
    full = next(r for r in payload["tables"]["clean"] if r["method"] == "full")
    assert full["num_test_cases"] == 4 and full["cv"] == 4
    pb = full["paired"]["supervised"]
    assert pb["n_cases"] == 4 and pb["ci_low"] is None and pb["ci_high"] is None
    md = (tmp_path / "res" / "ds.md").read_text()
    assert "+5.00 (n = 4: n too small)" in md.split("## Recommended model")[1].split("##")[0]
    assert "4 test case(s) per seed (fewer than 5)" in md and "already tested once" in md  # the evidence warning
    assert "fewer than 3" not in md  # 3 labelled cases train per fold: enough not to warn


def test_cv_is_automatic_only_with_few_labels_and_no_official_test(cases_datalist, tmp_path):
    def folds(n: int, n_pool: int = 5, **kw) -> int:
        sub = tmp_path / f"d{n}_{n_pool}_{len(kw)}_{kw.get('cv')}"
        meta = kw.pop("meta", {})
        return Experiment(RunnerSettings(dataset=_dataset(cases_datalist, sub, n, n_pool, **meta),
                                         work_dir=tmp_path / "w", **kw), "cmd").cv_folds

    assert folds(20) == 5 and folds(21) == 0
    assert folds(12, n_pool=0) == 0  # every image has a mask: ratio splits hide labels (a benchmark set)
    assert folds(8, meta={"official_test": ["case_000"]}) == 0  # test on the official split instead
    assert folds(40, cv=3) == 3 and folds(8, cv=0) == 0
    with pytest.raises(RunnerError, match="--cv must be 0"):
        RunnerSettings(dataset=tmp_path, cv=1)


def test_with_a_test_split_the_recommendation_uses_validation_never_the_test_set():
    """Two methods: the test Dice prefers b, the validation Dice prefers a; a is recommended."""
    rows = [{"method": "supervised", "base_method": "supervised", "ratio": 0.1, "dice": {"mean": 0.9},
             "dice_over_seeds": {"mean": 0.9}, "paired": {}, "case_dice": {}},
            {"method": "full", "base_method": "full", "ratio": 0.1, "dice": {"mean": 0.6},
             "dice_over_seeds": {"mean": 0.6}, "paired": {"supervised": {"mean_diff": -0.3}}, "case_dice": {}},
            {"method": "upper", "base_method": "upper", "ratio": 1.0, "dice": {"mean": 0.99},
             "dice_over_seeds": {"mean": 0.99}, "paired": {}, "case_dice": {}}]
    runs = [{"method": "supervised", "ratio": 0.1, "selection": {"dice": 0.5}},
            {"method": "full", "ratio": 0.1, "selection": {"dice": 0.8}},
            {"method": "upper", "ratio": 1.0, "selection": {"dice": 0.95}}]
    rec = report.recommend(rows, runs, cross_validated=False)
    assert rec["method"] == "full" and rec["score"] == pytest.approx(0.8) and "validation" in rec["basis"]
    assert rec["test_dice"] == pytest.approx(0.6)  # reported, not chosen on
    assert report.recommend(rows, runs, cross_validated=True)["method"] == "supervised"  # CV: the pooled score
    tie = [dict(r, dice_over_seeds={"mean": 0.7}) for r in rows[:2]]
    assert report.recommend(tie, runs, cross_validated=True)["method"] == "supervised"  # a tie: supervised-only


def test_write_folds_tags_and_the_all_labelled_split(cases_datalist, tmp_path):
    from custom_components.data.splits import make_all_labelled_split

    dl = _dataset(cases_datalist, tmp_path, 12)
    folds = rx.write_folds(dl, tmp_path / "sp", 5, [0, 1])
    assert list(folds)[:2] == ["cv5_f0_s0", "cv5_f1_s0"] and len(folds) == 10
    assert rx.split_tag(folds["cv5_f3_s1"]) == "cv5_f3_s1"
    f = json.loads(folds["cv5_f0_s0"].read_text())  # 12 cases: 9-10 train, 2 validation < 3: none
    assert f["selection"] == "last" and not f["validation"]
    full = make_all_labelled_split(dl, seed=0, val_fraction=0.2)  # 12 * 0.2 = 2.4 -> 2 < 3: none either
    assert full["selection"] == "last" and len(full["labeled"]) == 12 and full["test"] == []
    big = make_all_labelled_split(_dataset(cases_datalist, tmp_path / "b", 20), seed=0, val_fraction=0.2)
    assert big["selection"] == "best" and len(big["validation"]) == 4 and len(big["labeled"]) == 16

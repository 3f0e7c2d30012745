"""``custom_components.experiments.runner``: overrides, splits, phase settings, phases, runs side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from custom_components.experiments import runner as rx
from custom_components.experiments.budget import load_profile
from custom_components.experiments.runner import Experiment, RunnerError, RunnerSettings


# ---------------------------------------------------------------------------------------------- overrides
def test_parse_override_json_and_string_values():
    assert rx.parse_override("cotrain:max_epochs=50") == ("cotrain", "max_epochs", 50)
    assert rx.parse_override("*:roi_size=[32, 32]") == ("*", "roi_size", [32, 32])
    assert rx.parse_override("supervised:learning_rate=1e-3") == ("supervised", "learning_rate", 1e-3)
    assert rx.parse_override("cotrain:teacher_ckpt=") == ("cotrain", "teacher_ckpt", "")
    assert rx.parse_override("cotrain:round_mode=chained") == ("cotrain", "round_mode", "chained")
    assert rx.parse_override("supervised:network_def#channels=[8,16]") == (
        "supervised", "network_def#channels", [8, 16])
    assert rx.parse_override("cotrain:use_ce=true") == ("cotrain", "use_ce", True)


@pytest.mark.parametrize(
    "text, msg",
    [("max_epochs=5", "expected PHASE:KEY=VALUE"), ("cotrain:max_epochs", "expected PHASE:KEY=VALUE"),
     ("pseudo:max_epochs=5", "unknown phase 'pseudo'")],
)
def test_parse_override_rejects(text, msg):
    with pytest.raises(RunnerError, match=msg):
        rx.parse_override(text)


def test_overrides_for_phase_specific_wins_over_star():
    ovs = [rx.parse_override(t) for t in ("cotrain:max_epochs=7", "*:max_epochs=2", "*:num_workers=0")]
    assert rx.overrides_for("cotrain", ovs) == {"max_epochs": 7, "num_workers": 0}
    assert rx.overrides_for("supervised", ovs) == {"max_epochs": 2, "num_workers": 0}


# ---------------------------------------------------------------------------------------------- splits, settings

def test_write_splits_deterministic_and_relative_to_dataset(cases_datalist, tmp_path):
    dl = cases_datalist(tmp_path)
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


def _args(tmp_path: Path, dl: Path, **kw) -> RunnerSettings:
    kw["overrides"] = [rx.parse_override(o) for o in kw.pop("override", [])]
    return RunnerSettings(dataset=dl, work_dir=tmp_path / "wd", results_dir=tmp_path / "res", **kw)


def test_phase_settings_budget_and_overrides(cases_datalist, tmp_path):
    dl = cases_datalist(tmp_path, 40)
    exp = Experiment(_args(tmp_path, dl, override=["cotrain:max_epochs=3", "*:num_workers=1"]), "cmd")
    split = json.loads(rx.write_splits(dl, tmp_path / "sp", [0.25], [0])[(0.25, 0)].read_text())
    n_lab = len(split["labeled"])
    sup = exp.phase_settings("supervised", split, {})
    assert sup["max_epochs"] == math.ceil(load_profile("quick").phases["supervised"].iterations / math.ceil(n_lab / 4))
    assert sup["in_channels"] == 3 and sup["num_classes"] == 2 and sup["spatial_dims"] == 2
    assert sup["num_workers"] == 1 and sup["seed"] == 0
    co = exp.phase_settings("cotrain", split, {"rounds": 3, "teacher_ckpt": ""})
    assert co["max_epochs"] == 3 and co["epoch_length"] == 20 and co["rounds"] == 3
    assert co["val_interval"] <= 3 and co["warmup_epochs"] <= 3
    assert "channels" not in co and "roi_size" not in co  # the profile's bundle file carries those
    assert co["ckpt_interval"] == min(co["val_interval"], 3) and not any("#" in k for k in co)


def test_experiment_rejects_split_datalist(tmp_path):
    p = tmp_path / "datalist.json"
    p.write_text(json.dumps({"labeled": [], "validation": []}))
    with pytest.raises(RunnerError, match="no 'cases' list"):
        Experiment(_args(tmp_path, p), "cmd")


def test_run_phase_refuses_changed_settings(cases_datalist, tmp_path):
    dl = cases_datalist(tmp_path)
    exp = Experiment(_args(tmp_path, dl), "cmd")
    phase = tmp_path / "phase"
    phase.mkdir()
    (phase / rx.SETTINGS_FILE).write_text(json.dumps({"fingerprint": "0000"}))
    with pytest.raises(RunnerError, match="made with other settings"):
        exp.run_phase(phase, "supervised", {"max_epochs": 1}, "[t]")


def test_run_phase_skips_finished(cases_datalist, tmp_path):
    dl = cases_datalist(tmp_path)
    exp = Experiment(_args(tmp_path, dl), "cmd")
    phase = tmp_path / "phase"
    phase.mkdir()
    settings = {"max_epochs": 1}
    src = rx.BUNDLES_DIR / "supervised" / "configs"
    fp = rx.fingerprint({"bundle": "supervised", "profile": "quick", "settings": settings, "configs": {
        p.relative_to(src).as_posix(): p.read_text() for p in sorted(src.rglob("*.json"))}})
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
            raise RunnerError(f"{method} exploded")
        done.append(method)
        return {"method": method}

    tasks = [("cps", 0.1, 0), ("supervised", 0.1, 0), ("upper", 1.0, 0), ("full", 0.1, 0)]
    with pytest.raises(RunnerError, match="2 of 4 runs failed") as e:
        rx.run_tasks(fn, tasks, jobs=2)
    assert "cps ratio 0.1 seed 0: cps exploded" in str(e.value) and "upper ratio 1.0 seed 0" in str(e.value)
    assert sorted(done) == ["full", "supervised"]
    done.clear()
    with pytest.raises(RunnerError, match="cps exploded"):  # one at a time: stops at the first failure
        rx.run_tasks(fn, tasks, jobs=1)
    assert done == []


def test_threads_per_run_share_the_cores(cases_datalist, tmp_path, monkeypatch):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(rx.os, "cpu_count", lambda: 16)
    dl = cases_datalist(tmp_path)
    assert Experiment(_args(tmp_path, dl, profile="ph2", jobs=4), "cmd").env["OMP_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in Experiment(_args(tmp_path, dl, profile="ph2"), "cmd").env  # torch decides
    # quick (the main command's tiny runs; the budget file's num_threads): one thread each, whatever --jobs
    assert Experiment(_args(tmp_path, dl, profile="quick", jobs=2), "cmd").env["MKL_NUM_THREADS"] == "1"
    assert Experiment(_args(tmp_path, dl, profile="quick"), "cmd").env["OMP_NUM_THREADS"] == "1"
    # the real-data CPU profiles (ph2_cpu here; la_cpu's budget file alike): the cores shared by the runs side by
    # side, all of them for a run alone
    assert Experiment(_args(tmp_path, dl, profile="ph2_cpu", jobs=2), "cmd").env["MKL_NUM_THREADS"] == "8"
    assert "OMP_NUM_THREADS" not in Experiment(_args(tmp_path, dl, profile="ph2_cpu"), "cmd").env
    assert load_profile("la_cpu").num_threads is None
    assert Experiment(_args(tmp_path, dl, profile="ph2", jobs=4, num_threads=3), "cmd").env["OMP_NUM_THREADS"] == "3"


def test_phase1_is_shared_by_every_ratio_and_trained_one_run_at_a_time(cases_datalist, tmp_path, monkeypatch):
    import threading
    import time

    dl = cases_datalist(tmp_path, 40)
    exp = Experiment(_args(tmp_path, dl, methods=["full"], ratios=[0.2, 0.1], jobs=2), "cmd")
    calls: list[tuple[str, Path, dict]] = []
    inside = {"now": 0, "max": 0}
    guard = threading.Lock()

    def fake_run_phase(phase_dir, bundle, settings, label, method_files=()):
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


def test_console_line_filter():
    assert rx._console_line("x - INFO - Epoch: 2/5, Iter: 3/9 -- loss: 1.0", "[p]") is None
    line = rx._console_line("x - INFO - Epoch: 2/5, Iter: 9/9 -- loss: 1.0 loss_cps: 0.5 ", "[p]")
    assert line == "[p] epoch 2/5 loss=1.0 loss_cps=0.5"
    assert (rx._console_line("2026 - INFO - Epoch[2] Metrics -- val_dice: 0.5", "[p]")
            == "[p] Epoch[2] Metrics -- val_dice: 0.5")




# ---------------------------------------------------------------------------------------------- issue #15 runner points
def test_iterations_are_converted_with_the_batch_size_actually_used(cases_datalist, tmp_path):
    dl = cases_datalist(tmp_path, 40)
    split = json.loads(rx.write_splits(dl, tmp_path / "sp", [0.5], [0])[(0.5, 0)].read_text())
    n_lab = len(split["labeled"])
    prof = load_profile("quick").phases["supervised"]
    base = Experiment(_args(tmp_path, dl), "cmd").phase_settings("supervised", split, {})
    assert base["max_epochs"] == math.ceil(prof.iterations / math.ceil(n_lab / 4))  # quick.json: batch_size 4
    exp = Experiment(_args(tmp_path, dl, override=["supervised:batch_size=2"]), "cmd")
    s = exp.phase_settings("supervised", split, {})
    assert s["batch_size"] == 2 and s["max_epochs"] == math.ceil(prof.iterations / math.ceil(n_lab / 2))
    tp = Experiment(_args(tmp_path, dl, override=["*:batch_size=3"], iterations={"teacher_pretrain": 40}), "cmd")
    n_all = n_lab + len(split["unlabeled"])
    assert tp.phase_settings("teacher_pretrain", split, {})["max_epochs"] == math.ceil(40 / (n_all // 3))


def test_3d_runs_stack_profile_3d_and_validate_one_volume_at_a_time(cases_datalist, tmp_path):
    dl = cases_datalist(tmp_path, 20)
    meta = json.loads(dl.read_text())
    meta.update(spatial_dims=3, in_channels=1)
    dl.write_text(json.dumps(meta))
    exp = Experiment(_args(tmp_path, dl), "cmd")
    split = json.loads(rx.write_splits(dl, tmp_path / "sp", [0.25], [0])[(0.25, 0)].read_text())
    for phase in rx.PHASES:
        s = exp.phase_settings(phase, split, {})
        assert s["val_batch_size"] == 1 and s["spatial_dims"] == 3, phase
    files = [f.relative_to(tmp_path).as_posix() for f in
             exp.config_list(tmp_path / "p", "cotrain", ["train.json", "evaluate.json", rx.OVERRIDES_FILE])]
    assert files == ["p/configs/train.json", "p/configs/profile_3d.json", "p/configs/evaluate.json",
                     "p/configs/profiles/quick.json", f"p/configs/{rx.OVERRIDES_FILE}"]
    (tmp_path / "b").mkdir()
    two_d = Experiment(_args(tmp_path, cases_datalist(tmp_path / "b", 20)), "cmd")
    assert "val_batch_size" not in two_d.phase_settings("supervised", split, {})  # the profile's 8 stays in 2D


def test_settings_reject_bad_values(cases_datalist, tmp_path):
    dl = cases_datalist(tmp_path)
    for kw, msg in [({"ratios": [0]}, r"--ratios must be in \(0, 1\]"), ({"jobs": 0}, "--jobs must be >= 1"),
                    ({"methods": ["mt"]}, "unknown; registered"), ({"profile": "nope"}, "unknown; available"),
                    ({"rounds": -1}, "--rounds must be >= 0")]:
        with pytest.raises(RunnerError, match=msg):
            _args(tmp_path, dl, **kw)
    with pytest.raises(RunnerError, match="expected PHASE=N"):
        rx.parse_iterations(["cotrain=0"])


def test_a_registered_method_runs_its_phases_with_its_ids(cases_datalist, tmp_path, monkeypatch):
    """The docs/ARCHITECTURE.md example: one registry entry is all a new method needs."""
    from custom_components.experiments.methods import METHODS, Method

    monkeypatch.setitem(METHODS, "cps_pretrained", Method("cps_pretrained", bundle="cotrain", settings={"rounds": 0},
                                                          pretrain=True, cost=3))
    dl = cases_datalist(tmp_path, 40)
    exp = Experiment(_args(tmp_path, dl, methods=["cps_pretrained", "cps_diffusion"]), "cmd")
    calls = []

    def fake_run_phase(phase_dir, bundle, settings, label, method_files=()):
        calls.append((bundle, phase_dir.relative_to(exp.work).as_posix(), dict(settings)))
        phase_dir.mkdir(parents=True, exist_ok=True)
        return {"wall_time_s": 1.0, "fingerprint": "fp"}

    monkeypatch.setattr(exp, "run_phase", fake_run_phase)
    monkeypatch.setattr(exp, "evaluate_phase", lambda *a, **k: (tmp_path / "metrics.json", 0.0))
    monkeypatch.setattr(exp, "report", lambda total, splits: exp.runs)
    runs = exp.run()
    assert [r["method"] for r in runs] == ["cps_pretrained", "cps_diffusion"]
    (p1, co, cps) = calls
    assert p1[0] == "teacher_pretrain" and co[1] == "cps_pretrained/r0.1_s0/cotrain"
    assert co[2]["rounds"] == 0 and co[2]["teacher_ckpt"].endswith("teacher.pt")
    assert cps[2]["teacher_ckpt"] == "" and cps[2]["rounds"] == 0


def test_backbone_and_round_batch_reach_phase1_and_cotrain_and_mark_the_run(cases_datalist, tmp_path, monkeypatch):
    """``--backbone fast --round-batch unlabeled``: phase 1 and every co-training method get ``backbone``, the
    diffusion methods ``round_batch``; the run names say so; the default runs pass neither (same fingerprints)."""
    dl = cases_datalist(tmp_path, 40)

    def run(**kw):
        exp = Experiment(_args(tmp_path, dl, methods=["full", "cps_diffusion", "supervised"], **kw), "cmd")
        calls = []

        def fake_run_phase(phase_dir, bundle, settings, label, method_files=()):
            calls.append((bundle, phase_dir.relative_to(exp.work).as_posix(), dict(settings)))
            phase_dir.mkdir(parents=True, exist_ok=True)
            return {"wall_time_s": 1.0, "fingerprint": "fp"}

        monkeypatch.setattr(exp, "run_phase", fake_run_phase)
        monkeypatch.setattr(exp, "evaluate_phase", lambda *a, **k: (tmp_path / "metrics.json", 0.0))
        monkeypatch.setattr(exp, "report", lambda total, splits: exp.runs)
        return [r["method"] for r in exp.run()], calls

    names, calls = run(backbone="fast", round_batch="unlabeled")
    assert names == ["full_fast_unlabeled", "cps_diffusion_fast", "supervised"]
    by = {(b, d.split("/")[0]): st for b, d, st in calls}
    assert by[("teacher_pretrain", "phase1")]["backbone"] == "fast"
    assert by[("cotrain", "full_fast_unlabeled")]["backbone"] == "fast"
    assert by[("cotrain", "full_fast_unlabeled")]["round_batch"] == "unlabeled"
    cps_fast = by[("cotrain", "cps_diffusion_fast")]
    assert cps_fast["backbone"] == "fast" and "round_batch" not in cps_fast
    assert "backbone" not in by[("supervised", "supervised")]
    names, calls = run()
    assert names == ["full", "cps_diffusion", "supervised"]
    assert not [st for _, _, st in calls if "backbone" in st or "round_batch" in st]
    with pytest.raises(RunnerError, match="--backbone 'unet'"):
        _args(tmp_path, dl, backbone="unet")


# ---------------------------------------------------------------------------------------------- 3D: la_uamt, profiles
def _as_3d(dl: Path) -> Path:
    """Rewrite a ``cases_datalist`` as a 3D single-channel dataset."""
    meta = json.loads(dl.read_text())
    meta.update(spatial_dims=3, in_channels=1)
    dl.write_text(json.dumps(meta))
    return dl


def _evaluate_capturing(exp: Experiment, tmp_path: Path, bundle: str, protocol: str, monkeypatch) -> dict:
    """Run ``exp.evaluate_phase`` on a copy of ``bundle``'s configs with the bundle subprocess replaced by a parse of
    the stacked files the runner hands it; returns what the evaluation would have used."""
    import shutil

    from monai.bundle import ConfigParser

    phase_dir = tmp_path / "run" / bundle
    if not (phase_dir / "configs").is_dir():
        shutil.copytree(rx.BUNDLES_DIR / bundle / "configs", phase_dir / "configs")
        (phase_dir / "configs" / rx.OVERRIDES_FILE).write_text(json.dumps(exp.data_overrides()))
        (phase_dir / "models").mkdir(parents=True)
        (phase_dir / "models" / "model.pt").write_bytes(b"")
    seen: dict = {"calls": 0}

    def fake_run(files, log_path, prefix, env=None, quiet=False):
        parser = ConfigParser()
        parser.read_config([str(f) for f in files])
        seen["calls"] += 1
        seen["inferer"] = parser.get_parsed_content("validate#inferer")
        seen["threshold_source"] = parser.get_parsed_content("threshold_source")
        if bundle == "supervised":  # the logits -> probabilities step of the post-processing
            seen["softmax"] = parser.get_parsed_content("validate#postprocessing#transforms#0#softmax")
        out = Path(parser.get_parsed_content("output_dir"))
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"protocol": parser.get_parsed_content("eval_protocol")}))
        return 0.0

    monkeypatch.setattr(rx, "run_bundle", fake_run)
    seen["metrics"] = exp.evaluate_phase(phase_dir, bundle, protocol, "[t]")[0]
    return seen


@pytest.mark.parametrize("bundle", ["cotrain", "supervised"])
@pytest.mark.parametrize("profile,window,strides", [("la_cpu", (56, 56, 40), (9, 9, 2)),
                                                    ("la", (112, 112, 80), (18, 18, 4))])
def test_la_uamt_evaluation_uses_the_uamt_window(
    cases_datalist, tmp_path, monkeypatch, bundle, profile, window, strides
):
    from custom_components.inferers import UAMTSlidingWindowInferer

    exp = Experiment(_args(tmp_path, _as_3d(cases_datalist(tmp_path)), profile=profile, protocols=["la_uamt"]), "cmd")
    seen = _evaluate_capturing(exp, tmp_path, bundle, "la_uamt", monkeypatch)
    inf = seen["inferer"]
    assert isinstance(inf, UAMTSlidingWindowInferer), type(inf)
    assert inf.roi_size == window and inf.strides == strides
    # the supervised UNet's logits go through softmax per window (UA-MT) and not a second time afterwards; the
    # diffusion model's deployable already returns probabilities
    assert inf.apply_softmax is (bundle == "supervised")
    if bundle == "supervised":
        assert seen["softmax"] is False
    # the threshold is chosen again on validation under this window, not taken from training's cheaper window
    assert seen["threshold_source"] == "validation"
    # the same evaluation again is skipped; clean on the same run evaluates with the profile's validation window
    assert _evaluate_capturing(exp, tmp_path, bundle, "la_uamt", monkeypatch)["calls"] == 0
    clean = _evaluate_capturing(exp, tmp_path, bundle, "clean", monkeypatch)
    assert not isinstance(clean["inferer"], UAMTSlidingWindowInferer)
    assert clean["threshold_source"] == "selection"
    assert clean.get("softmax", True) is True


def test_la_uamt_refuses_2d_data_and_3d_profiles_refuse_2d(cases_datalist, tmp_path):
    exp = Experiment(_args(tmp_path, cases_datalist(tmp_path), protocols=["la_uamt"]), "cmd")
    with pytest.raises(RunnerError, match="3D protocol"):
        exp.eval_ids("la_uamt")
    with pytest.raises(RunnerError, match="made for 3D data"):
        Experiment(_args(tmp_path, tmp_path / "ds" / "datalist.json", profile="la_cpu"), "cmd")


def test_seed_ratios_restrict_a_seed_and_alternate_seeds_among_equal_runs(cases_datalist, tmp_path):
    dl = cases_datalist(tmp_path, 40)
    exp = Experiment(_args(tmp_path, dl, methods=["supervised", "full", "upper"], ratios=[0.1, 0.2], seeds=[0, 1],
                           seed_ratios={1: [0.2]}), "cmd")
    splits = rx.write_splits(dl, exp.work / "splits", [0.1, 0.2, 1.0], [0, 1])
    runs = [(m, r, s) for m, r, s, _ in exp.tasks(splits)]
    assert runs == [("supervised", 0.1, 0), ("supervised", 0.2, 0), ("full", 0.1, 0), ("full", 0.2, 0),
                    ("upper", 1.0, 0), ("supervised", 0.2, 1), ("full", 0.2, 1)]
    order: list = []
    rx.run_tasks(lambda *t: order.append(t[:3]) or {}, [t for t in exp.tasks(splits)], jobs=2)
    assert set(order[:2]) == {("full", 0.1, 0), ("full", 0.2, 1)}  # the two phase-1 runs start together
    with pytest.raises(RunnerError, match="seed-ratios"):
        RunnerSettings(dataset=dl, seeds=[0], ratios=[0.1], seed_ratios={1: [0.1]})


def test_a_methods_phase1_settings_give_it_its_own_phase1(cases_datalist, tmp_path, monkeypatch):
    """``full`` and ``full_fast`` in one call: each phase 2 starts from a teacher of its own backbone (two phase-1
    folders); ``full_paper`` (no phase-1 settings) shares ``full``'s phase 1; ``full`` passes no ``backbone`` id."""
    dl = cases_datalist(tmp_path, 40)
    exp = Experiment(_args(tmp_path, dl, methods=["full", "full_fast", "full_paper"]), "cmd")
    calls = []

    def fake_run_phase(phase_dir, bundle, settings, label, method_files=()):
        calls.append((bundle, phase_dir.relative_to(exp.work).as_posix(), dict(settings)))
        phase_dir.mkdir(parents=True, exist_ok=True)
        return {"wall_time_s": 1.0, "fingerprint": phase_dir.as_posix()}

    monkeypatch.setattr(exp, "run_phase", fake_run_phase)
    monkeypatch.setattr(exp, "evaluate_phase", lambda *a, **k: (tmp_path / "metrics.json", 0.0))
    monkeypatch.setattr(exp, "report", lambda total, splits: exp.runs)
    assert sorted(r["method"] for r in exp.run()) == ["full", "full_fast", "full_paper"]
    p1 = {d: st for b, d, st in calls if b == "teacher_pretrain"}
    co = {d.split("/")[0]: st for b, d, st in calls if b == "cotrain"}
    assert len(p1) == 2 and sorted(str(st.get("backbone")) for st in p1.values()) == ["None", "fast"]
    fast_p1 = next(d for d, st in p1.items() if st.get("backbone") == "fast")
    assert co["full_fast"]["teacher_ckpt"] == str(exp.work / fast_p1 / "models" / "teacher.pt")
    assert co["full_fast"]["backbone"] == "fast" and co["full_fast"]["round_batch"] == "unlabeled"
    assert "backbone" not in co["full"] and co["full"]["teacher_ckpt"] == co["full_paper"]["teacher_ckpt"]
    assert co["full"]["rounds"] == 1 and (co["full_paper"]["rounds"], co["full_paper"]["round_batch"]) == (3, "all")


def test_phase1_ratio_lets_an_ablation_reuse_an_earlier_calls_phase1(cases_datalist, tmp_path, monkeypatch):
    """A table at 5/10/20 % trains phase 1 on the 5 % split; an ablation at 10 % alone with ``--phase1-ratio 0.05``
    asks for the same folder (same split, same settings hash) instead of training a phase 1 of its own."""
    dl = cases_datalist(tmp_path, 40)

    def phase1_dirs(**kw) -> list[Path]:
        exp = Experiment(_args(tmp_path, dl, methods=["full"], **kw), "cmd")
        calls: list[Path] = []

        def fake_run_phase(phase_dir, bundle, settings, label, method_files=()):
            if bundle == "teacher_pretrain":
                calls.append(phase_dir)
            phase_dir.mkdir(parents=True, exist_ok=True)
            return {"wall_time_s": 1.0, "fingerprint": f"fp-{bundle}"}

        monkeypatch.setattr(exp, "run_phase", fake_run_phase)
        monkeypatch.setattr(exp, "evaluate_phase", lambda *a, **k: (tmp_path / "metrics.json", 0.0))
        monkeypatch.setattr(exp, "report", lambda total, splits: exp.runs)
        exp.run()
        return calls

    table = phase1_dirs(ratios=[0.05, 0.1, 0.2])
    assert len(set(table)) == 1 and table[0].parent.name.startswith("r0.05_s0_")
    assert phase1_dirs(ratios=[0.1], rounds=1, phase1_ratio=0.05) == [table[0]]
    assert phase1_dirs(ratios=[0.1], rounds=1)[0] != table[0]  # without it: the 10 % split, another phase 1
    with pytest.raises(RunnerError, match=r"--phase1-ratio 0.2: must be in \(0, 0.1\]"):
        RunnerSettings(dataset=dl, ratios=[0.1], phase1_ratio=0.2)


def test_run_phase_after_the_data_was_re_prepared_refuses_or_retrains(cases_datalist, tmp_path, monkeypatch):
    """Issue 28: the same settings on re-prepared data (same file names, new contents) is not 'done earlier'."""
    import os

    dl = cases_datalist(tmp_path)
    split = rx.write_splits(dl, tmp_path / "sp", [1.0], [0])[(1.0, 0)]
    for e in json.loads(split.read_text())["labeled"][:1]:  # the split names files: make one exist
        f = split.parent / e["image"]
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"old image")
    exp = Experiment(_args(tmp_path, dl), "cmd")
    phase, settings = tmp_path / "phase", {"max_epochs": 1, "datalist": str(split)}
    calls = []
    monkeypatch.setattr(rx, "run_bundle", lambda files, log, label, env=None: calls.append(1) or 3.0)
    assert exp.run_phase(phase, "supervised", settings, "[t]")["data_fingerprint"]
    assert exp.run_phase(phase, "supervised", settings, "[t]")["wall_time_s"] == 3.0 and len(calls) == 1  # skipped
    f.write_bytes(b"a re-prepared image")
    os.utime(f, ns=(1, 1))
    with pytest.raises(RunnerError, match=r"phase: trained on other data: .*datalist_r1_s0\.json or the files it "
                                          r"lists changed since .*--force"):
        exp.run_phase(phase, "supervised", settings, "[t]")
    exp.settings.force = True
    exp.run_phase(phase, "supervised", settings, "[t]")
    assert len(calls) == 2  # retrained


def test_dataset_warnings_are_carried_into_every_run(cases_datalist, tmp_path, monkeypatch):
    """A dataset prepared with --allow-empty-classes keeps its warning in datalist.json; the runner repeats it."""
    dl = cases_datalist(tmp_path, 40)
    meta = json.loads(dl.read_text())
    meta["warnings"] = ["every mask is empty (background only) over the 40 labelled case(s)"]
    dl.write_text(json.dumps(meta))
    exp = Experiment(_args(tmp_path, dl, methods=["supervised"]), "cmd")

    def fake_run_phase(phase_dir, bundle, settings, label, method_files=()):
        phase_dir.mkdir(parents=True, exist_ok=True)
        return {"wall_time_s": 1.0, "fingerprint": "fp"}

    monkeypatch.setattr(exp, "run_phase", fake_run_phase)
    monkeypatch.setattr(exp, "evaluate_phase", lambda *a, **k: (tmp_path / "metrics.json", 0.0))
    monkeypatch.setattr(exp, "report", lambda total, splits: exp.runs)
    runs = exp.run()
    assert runs and all(any("every mask is empty" in w for w in r["warnings"]) for r in runs)


def test_profile_auto_takes_every_setting_from_the_plan(cases_datalist, tmp_path):
    """``--profile auto``: the plan's roi_size / batch / widths in every phase's ids (user overrides still win), its
    iteration budgets in the schedule, no named profile file stacked; no plan or a 2D patch plan is an error."""
    from custom_components.experiments.plan import make_plan

    dl = cases_datalist(tmp_path, 40)
    with pytest.raises(RunnerError, match="plan_dataset.py"):
        Experiment(_args(tmp_path, dl, profile="auto"), "cmd")
    fp = {"spatial_dims": 2, "median_size": [200, 150], "num_labeled": 40, "structure_width_px": {"1": 30.0}}
    plan = make_plan(fp, {"cores": 2, "gpu": None}, 3 * 3600)
    (dl.parent / "plan.json").write_text(json.dumps(plan))
    exp = Experiment(_args(tmp_path, dl, profile="auto", override=["cotrain:batch_size=2"]), "cmd")
    split = json.loads(rx.write_splits(dl, tmp_path / "sp", [0.5], [0])[(0.5, 0)].read_text())
    n_lab = len(split["labeled"])
    sup = exp.phase_settings("supervised", split, {})
    assert sup["roi_size"] == [208, 160] and sup["channels"] == [16, 32, 64] and sup["batch_size"] == 8
    iters = plan["iterations"]["value"]
    assert sup["max_epochs"] == math.ceil(iters / math.ceil(n_lab / 8))
    co = exp.phase_settings("cotrain", split, {})
    assert co["batch_size"] == 2 and co["roi_size"] == [208, 160]  # the user's override wins over the plan
    assert co["max_epochs"] * co["epoch_length"] >= iters  # the same iterations as supervised
    files = [f.name for f in exp.config_list(tmp_path / "p", "cotrain", ["train.json", rx.OVERRIDES_FILE])]
    assert files == ["train.json", rx.OVERRIDES_FILE]
    assert exp.plan_reasons["resolution"] == plan["resolution"]["reason"]
    thin = make_plan({**fp, "median_size": [1024, 1024], "structure_width_px": {"1": 2.0}}, {"cores": 2}, 3600)
    (dl.parent / "plan.json").write_text(json.dumps(thin))
    with pytest.raises(RunnerError, match="sliding window .* not wired yet"):
        Experiment(_args(tmp_path, dl, profile="auto"), "cmd")

"""The method registry and the iteration-budget arithmetic of ``custom_components.experiments``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custom_components.experiments import budget, methods
from custom_components.experiments.budget import PhaseBudget, iterations_to_epochs, load_profile, schedule_ids
from custom_components.experiments.methods import METHODS, Method, run_name

ROOT = Path(__file__).resolve().parents[2]


def test_registry_holds_the_methods_in_table_order():
    assert list(METHODS) == ["supervised", "mean_teacher", "uamt", "bcp", "unimatch", "cps", "cps_diffusion",
                             "full", "full_safe", "full_fast", "full_paper", "upper"]
    assert METHODS["full"].phases() == ("teacher_pretrain", "cotrain")
    assert METHODS["full"].phases(pretrain=False) == ("cotrain",)
    assert METHODS["cps_diffusion"].phases() == ("cotrain",) and METHODS["upper"].fixed_ratio == 1.0
    assert METHODS["cps_diffusion"].bundle_settings(rounds=5) == {"teacher_ckpt": "", "rounds": 0}  # not for cps
    assert METHODS["cps"].phases() == ("supervised",) and METHODS["cps"].bundle_settings(rounds=5) == {}
    assert METHODS["mean_teacher"].overrides == ("methods/semi_supervised.json", "methods/mean_teacher.json")
    assert METHODS["full"].bundle_settings(1, "chained") == {"teacher_ckpt": "", "rounds": 1, "round_mode": "chained"}
    assert METHODS["supervised"].bundle_settings() == {}
    paper = METHODS["full_paper"]  # the paper's R = 3 on the whole batch, whatever --rounds says; phase 1 as full's
    assert paper.phase1_settings == {} and paper.phases() == ("teacher_pretrain", "cotrain")
    assert paper.bundle_settings(rounds=1) == {"teacher_ckpt": "", "rounds": 3, "round_batch": "all"}
    fast = METHODS["full_fast"]  # the cheap backbone: its phase 1 on the same backbone as its phase 2
    assert fast.phase1_settings == {"backbone": "fast"}
    assert fast.bundle_settings() == {"teacher_ckpt": "", "backbone": "fast", "round_batch": "unlabeled", "rounds": 3}
    safe = METHODS["full_safe"]  # the issue-25 safeguards; phase 1 shared with full (same phase-1 settings)
    assert safe.phases() == ("teacher_pretrain", "cotrain") and safe.phase1_settings == METHODS["full"].phase1_settings
    assert safe.bundle_settings() == {"teacher_ckpt": "", "phase1_gate": True, "unlabeled_rampup_frac": 0.4,
                                      "pseudo_confidence": 0.8, "rounds": 1, "round_mode": "independent"}
    with pytest.raises(ValueError, match="phase1_settings without phase 1"):
        Method("x", bundle="cotrain", phase1_settings={"backbone": "fast"})


def test_run_name_marks_ablations():
    assert run_name(METHODS["cps_diffusion"], rounds=1) == "cps_diffusion"
    assert run_name(METHODS["full"]) == "full"
    assert run_name(METHODS["full"], rounds=3) == "full_R3"  # the default is R = 1
    assert run_name(METHODS["full"], round_mode="chained", pretrain=False) == "full_chained_nopretrain"


def test_register_one_entry_adds_a_method(monkeypatch):
    monkeypatch.setattr(methods, "METHODS", dict(METHODS))
    m = methods.register(Method("cps_pretrained", bundle="cotrain", settings={"rounds": 0}, pretrain=True, cost=3))
    assert methods.get_method("cps_pretrained") is m and m.phases() == ("teacher_pretrain", "cotrain")
    with pytest.raises(ValueError, match="already registered"):
        methods.register(Method("cps_pretrained", bundle="cotrain"))
    with pytest.raises(ValueError, match="phase 1 only precedes"):
        Method("x", bundle="supervised", pretrain=True)
    with pytest.raises(ValueError, match=r"bundle must be one of \['supervised', 'cotrain'\]"):
        Method("x", bundle="teacher_pretrain")
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        methods.get_method("nope")


def test_iterations_to_epochs():
    assert iterations_to_epochs(300, 7, 4, drop_last=False) == 150  # 2 batches per epoch
    assert iterations_to_epochs(180, 72, 8, drop_last=True) == 20  # 9 per epoch
    assert iterations_to_epochs(10, 3, 8, drop_last=True) == 10  # dataset smaller than a batch: 1 per epoch
    with pytest.raises(ValueError, match="empty dataset"):
        iterations_to_epochs(10, 0, 8, drop_last=False)


def test_schedule_ids_from_budget_and_user_length():
    b = PhaseBudget(iterations=1200, validations=6, warmup_frac=0.1, lr_step_frac=0.5)
    s = schedule_ids("supervised", b, num_labeled=10, num_unlabeled=0, batch_size=4)
    assert s == {"max_epochs": 400, "val_interval": 66, "warmup_epochs": 40, "lr_step_epochs": 200,
                 "ckpt_interval": 66}
    s8 = schedule_ids("supervised", b, num_labeled=10, num_unlabeled=0, batch_size=8)
    assert s8["max_epochs"] == 600  # 2 batches per epoch at 8 (10 items, no drop_last) vs 3 at 4
    t = schedule_ids("teacher_pretrain", b, 10, 62, batch_size=8)
    assert t["max_epochs"] == 134  # 72 // 8 = 9 per epoch
    c = schedule_ids("cotrain", PhaseBudget(240, 6, 0.1, 0.5, epoch_length=20), 10, 62, 4,
                     user={"max_epochs": 3, "val_interval": 7})
    assert c["epoch_length"] == 20 and c["max_epochs"] == 3 and c["val_interval"] == 7
    assert c["warmup_epochs"] == 1 and c["lr_step_epochs"] == 3 and c["ckpt_interval"] == 3  # bounded by max_epochs


def test_profiles_pair_a_budget_file_with_bundle_override_files():
    names = budget.available_profiles()
    assert {"quick", "paper", "ph2", "ph2_cpu"} <= set(names)
    for name in names:
        prof = load_profile(name)
        assert set(prof.phases) == set(budget.PHASES)
        for phase, b in prof.phases.items():
            assert b.iterations > 0 and b.validations > 0, (name, phase)
            cfg = json.loads((ROOT / "bundles" / phase / "configs" / "profiles" / f"{name}.json").read_text())
            assert "roi_size" in cfg and "batch_size" in cfg, (name, phase)
    assert load_profile("quick").num_threads == 1 and load_profile("ph2").num_threads is None
    assert load_profile("quick").with_iterations({"cotrain": 40}).phases["cotrain"].iterations == 40
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        load_profile("nope")

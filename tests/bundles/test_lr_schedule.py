"""The bundles' learning-rate schedule (SequentialLR: LinearLR warm-up, then StepLR) gives, epoch by epoch, the LR
of the ``LambdaLR`` formula the configs held before:
``min(1, (e + 1) / max(1, warmup)) * gamma ** (max(0, e - warmup) // step)``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
SCHEDULERS = [("supervised", "optimizer", "lr_scheduler"), ("cotrain", "teacher_optimizer", "teacher_lr_scheduler"),
              ("cotrain", "student_optimizer", "student_lr_scheduler")]
SETTINGS = [(20, 50, 0.5), (0, 3, 0.5), (1, 2, 0.3), (2, 1, 0.5), (3, 4, 0.1), (5, 2, 0.5), (7, 7, 0.9)]


def _old_factor(e: int, warmup: int, step: int, gamma: float) -> float:
    return min(1.0, (e + 1) / max(1, warmup)) * gamma ** (max(0, e - warmup) // step)


@pytest.mark.parametrize("bundle,optimizer_id,scheduler_id", SCHEDULERS)
@pytest.mark.parametrize("warmup,step,gamma", SETTINGS)
def test_schedule_equals_the_old_lambda_formula(bundle, optimizer_id, scheduler_id, warmup, step, gamma):
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.json"))
    base_lr = 1e-3
    parser.update({"warmup_epochs": warmup, "lr_step_epochs": step, "lr_gamma": gamma, optimizer_id: {
        "_target_": "torch.optim.SGD", "params": "$[torch.nn.Parameter(torch.zeros(1))]", "lr": base_lr}})
    scheduler = parser.get_parsed_content(scheduler_id)
    assert isinstance(scheduler, torch.optim.lr_scheduler.SequentialLR)
    optimizer = scheduler.optimizer
    for e in range(3 * (warmup + step) + 5):
        expected = base_lr * _old_factor(e, warmup, step, gamma)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12, abs=0), f"epoch {e}"
        optimizer.step()
        scheduler.step()


def test_schedule_resumes_from_its_state_dict():
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "supervised" / "configs" / "train.json"))
    parser.update({"warmup_epochs": 3, "lr_step_epochs": 2, "lr_gamma": 0.5, "optimizer": {
        "_target_": "torch.optim.SGD", "params": "$[torch.nn.Parameter(torch.zeros(1))]", "lr": 1.0}})
    first = parser.get_parsed_content("lr_scheduler", instantiate=True)
    for _ in range(4):
        first.optimizer.step()
        first.step()
    state, opt_state = first.state_dict(), first.optimizer.state_dict()
    resumed = parser.get_parsed_content("lr_scheduler", lazy=False)
    resumed.optimizer.load_state_dict(opt_state)
    resumed.load_state_dict(state)
    for e in range(4, 12):
        assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(_old_factor(e, 3, 2, 0.5), rel=1e-12)
        resumed.optimizer.step()
        resumed.step()

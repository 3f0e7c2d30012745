"""Tests for the checkpoint handlers (handlers.resumable, nan_guard) and runtime.files / runtime.rng."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from custom_components.handlers import NaNGuard, NonFiniteLossError, ResumableCheckpoint
from custom_components.handlers import resumable as ckpt_mod
from custom_components.runtime import atomic_torch_save, capture_rng_state, restore_rng_state
from custom_components.runtime import files as files_mod


class _BestValue:
    """A stateful handler of the validation (as SelectedModelSaver): the best metric and its epoch."""

    def __init__(self, trainer: Engine) -> None:
        self.trainer, self.best_value, self.best_epoch = trainer, -1.0, 0

    def __call__(self, evaluator: Engine) -> None:
        if evaluator.state.metrics["val_dice"] > self.best_value:
            self.best_value, self.best_epoch = evaluator.state.metrics["val_dice"], self.trainer.state.epoch

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]


def _make_run(save_dir, max_epochs: int, losses=None, with_best: bool = False, metric_values=None):
    """A tiny regression 'trainer' (plain Ignite engine) with a ResumableCheckpoint attached."""
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    data = [(torch.randn(4, 2), torch.randn(4, 1)) for _ in range(3)]
    seen = {"epochs": []}

    def step(engine, batch):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(batch[0]), batch[1])
        if losses is not None:
            loss = loss * losses.get(engine.state.iteration, 1.0)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "loss_aux": loss.detach() * 0}

    trainer = Engine(step)
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: seen["epochs"].append(e.state.epoch))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched.step())
    save_dict = {"network": net, "optimizer": opt, "lr_scheduler": sched, "trainer": trainer}
    best = None
    if with_best:
        best = _BestValue(trainer)
        evaluator = Engine(lambda e, b: None)
        values = metric_values or {}
        evaluator.add_event_handler(
            Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(val_dice=values[trainer.state.epoch])
        )
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, best)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: evaluator.run([0]))
        save_dict["best_model"] = best
    ckpt = ResumableCheckpoint(save_dir, save_dict)
    ckpt.attach(trainer)
    return trainer, data, net, opt, sched, ckpt, best, seen


def test_atomic_save_crash_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    atomic_torch_save({"a": torch.ones(3)}, path)

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full (simulated crash)")

    monkeypatch.setattr(files_mod.torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_torch_save({"a": torch.zeros(3)}, path, keep_previous=True)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert not (tmp_path / "state.pt.prev").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"], "temporary file left behind"


def test_atomic_write_json_replaces_whole_files_and_keeps_the_old_one_on_bad_input(tmp_path):
    path = tmp_path / "summary.json"
    files_mod.atomic_write_json({"a": 1}, path)
    files_mod.atomic_write_json({"a": 2, "b": [1, 2]}, path)
    assert json.loads(path.read_text()) == {"a": 2, "b": [1, 2]}
    with pytest.raises(TypeError):
        files_mod.atomic_write_json({"a": object()}, path)
    assert json.loads(path.read_text()) == {"a": 2, "b": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"], "temporary file left behind"


def test_rng_roundtrip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_resume_continues_epoch_count(tmp_path):
    trainer, data, net, opt, sched, ckpt, _, seen = _make_run(tmp_path, max_epochs=1)
    trainer.run(data, max_epochs=1)
    assert (tmp_path / "train_state.pt").exists()
    weights_after_1 = {k: v.clone() for k, v in net.state_dict().items()}

    trainer2, data2, net2, opt2, sched2, ckpt2, _, seen2 = _make_run(tmp_path, max_epochs=3)
    trainer2.run(data2, max_epochs=3)
    assert ckpt2.loaded_from == tmp_path / "train_state.pt"
    assert seen2["epochs"] == [2, 3], "resumed run must start at epoch 2 and stop at max_epochs=3"
    assert trainer2.state.epoch == 3 and trainer2.state.iteration == 9
    assert sched2.last_epoch == 3  # scheduler state restored then stepped twice
    assert not torch.equal(net2.state_dict()["weight"], weights_after_1["weight"])
    # a finished run re-run with the same max_epochs does nothing
    trainer3, data3, *_rest, seen3 = _make_run(tmp_path, max_epochs=3)
    trainer3.run(data3, max_epochs=3)
    assert seen3["epochs"] == [] and trainer3.state.epoch == 3
    assert (tmp_path / "train_state.pt.prev").exists()


def test_resume_restores_weights_exactly(tmp_path):
    trainer, data, net, *_ = _make_run(tmp_path, max_epochs=2)
    trainer.run(data, max_epochs=2)
    _, _, net2, opt2, _, ckpt2, _, _ = _make_run(tmp_path, max_epochs=2)
    ckpt2.load_state_dict(ckpt2.read_latest()[0])
    for k, v in net.state_dict().items():
        assert torch.equal(net2.state_dict()[k], v)
    assert opt2.state_dict()["param_groups"][0]["lr"] == pytest.approx(0.1 * 0.5**2)


def test_corrupt_file_falls_back_to_prev_and_logs_path(tmp_path, caplog):
    trainer, data, *_ = _make_run(tmp_path, max_epochs=2)
    trainer.run(data, max_epochs=2)  # epoch 1 -> .prev, epoch 2 -> train_state.pt
    main = tmp_path / "train_state.pt"
    main.write_bytes(main.read_bytes()[:100])  # truncated
    trainer2, data2, *_rest, ckpt2, _, seen2 = _make_run(tmp_path, max_epochs=3)
    with caplog.at_level(logging.WARNING, logger=ckpt_mod.logger.name):
        trainer2.run(data2, max_epochs=3)
    assert str(main) in caplog.text and "cannot read checkpoint" in caplog.text
    assert ckpt2.loaded_from == tmp_path / "train_state.pt.prev"
    assert seen2["epochs"] == [2, 3]


def test_both_files_corrupt_raises_naming_paths(tmp_path):
    (tmp_path / "train_state.pt").write_bytes(b"garbage")
    (tmp_path / "train_state.pt.prev").write_bytes(b"more garbage")
    trainer, data, *_ = _make_run(tmp_path, max_epochs=1)
    with pytest.raises(RuntimeError, match="no readable checkpoint") as err:
        trainer.run(data, max_epochs=1)
    assert "train_state.pt.prev" in str(err.value) and str(tmp_path / "train_state.pt") in str(err.value)


def test_missing_main_uses_prev(tmp_path, caplog):
    trainer, data, *_ = _make_run(tmp_path, max_epochs=2)
    trainer.run(data, max_epochs=2)
    (tmp_path / "train_state.pt").unlink()  # crash between the two os.replace calls
    trainer2, data2, *_rest, ckpt2, _, seen2 = _make_run(tmp_path, max_epochs=2)
    with caplog.at_level(logging.WARNING, logger=ckpt_mod.logger.name):
        trainer2.run(data2, max_epochs=2)
    assert "is missing" in caplog.text and ckpt2.loaded_from.name == "train_state.pt.prev"
    assert seen2["epochs"] == [2]


def test_best_metric_survives_resume(tmp_path):
    values = {1: 0.9, 2: 0.5, 3: 0.6}
    trainer, data, *_rest, best, _ = _make_run(tmp_path, 1, with_best=True, metric_values=values)
    trainer.run(data, max_epochs=1)
    assert best.best_value == pytest.approx(0.9) and best.best_epoch == 1

    trainer2, data2, *_rest2, best2, _ = _make_run(tmp_path, 3, with_best=True, metric_values=values)
    trainer2.run(data2, max_epochs=3)
    assert best2.best_value == pytest.approx(0.9) and best2.best_epoch == 1, "a worse epoch replaced the best"
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["best_model"] == {
        "best_value": pytest.approx(0.9), "best_epoch": 1}


def test_resumable_checkpoint_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="save_dict is empty"):
        ResumableCheckpoint(tmp_path, {})
    with pytest.raises(TypeError, match=r"save_dict\['x'\] \(int\) has no state_dict"):
        ResumableCheckpoint(tmp_path, {"x": 3})
    with pytest.raises(ValueError, match="save_interval_epochs must be >= 1"):
        ResumableCheckpoint(tmp_path, {"n": torch.nn.Linear(1, 1)}, save_interval_epochs=0)


def test_config_change_is_reported_not_treated_as_corruption(tmp_path):
    net = torch.nn.Linear(2, 1)
    ResumableCheckpoint(tmp_path, {"network": net}).save(Engine(lambda e, b: None))
    other = ResumableCheckpoint(tmp_path, {"network": torch.nn.Linear(3, 1)})
    with pytest.raises(RuntimeError, match=r"(?s)cannot restore 'network'.*configuration change"):
        other.load(Engine(lambda e, b: None))


def test_nan_guard_stops_and_names_terms(tmp_path):
    trainer, data, *_ = _make_run(tmp_path, max_epochs=2, losses={5: float("nan")})
    NaNGuard().attach(trainer)
    with pytest.raises(NonFiniteLossError) as err:
        trainer.run(data, max_epochs=2)
    msg = str(err.value)
    assert "iteration 5" in msg and "epoch 2" in msg and "loss=nan" in msg and "loss_aux=nan" in msg
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 3, "the broken state (epoch 2) must not be checkpointed"


def test_nan_guard_terminate_mode_skips_save(tmp_path):
    trainer, data, *_ = _make_run(tmp_path, max_epochs=1, losses={2: float("inf")})
    NaNGuard(loss_keys=["loss"], action="terminate").attach(trainer)
    trainer.run(data, max_epochs=1)
    assert "loss=inf" in trainer.state.nonfinite_loss and "loss_aux" not in trainer.state.nonfinite_loss
    assert not (tmp_path / "train_state.pt").exists()


def test_nan_guard_plain_and_list_outputs():
    guard = NaNGuard()
    engine = Engine(lambda e, b: None)
    engine.state.iteration, engine.state.epoch = 7, 1
    engine.state.output = [{"loss": torch.tensor(1.0)}]
    guard(engine)  # finite: nothing happens
    engine.state.output = torch.tensor(float("nan"))
    with pytest.raises(NonFiniteLossError, match="iteration 7: loss=nan"):
        guard(engine)
    with pytest.raises(ValueError, match="action must be 'raise' or 'terminate'"):
        NaNGuard(action="ignore")

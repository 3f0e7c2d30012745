"""NaNGuard (Ignite's TerminateOnNan with our message): the batch's image files and the last finite loss."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from custom_components.errors import UserError
from custom_components.handlers import NaNGuard, NonFiniteLossError
from custom_components.handlers.nan_guard import batch_image_files


def _images(*names: str) -> MetaTensor:
    return MetaTensor(torch.zeros(len(names), 1, 2, 2), meta={"filename_or_obj": list(names)})


def test_batch_image_files_collated_decollated_and_nested():
    collated = {"image": _images("a.png", "b.png"), "label": _images("a_mask.png", "b_mask.png")}
    assert batch_image_files(collated) == ["a.png", "b.png"]
    decollated = [{"image": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": n}), "label": 0}
                  for n in ("a.png", "b.png")]
    assert batch_image_files(decollated) == ["a.png", "b.png"]
    paired = {"labeled": {"image": _images("l1.png"), "label": _images("l1_mask.png")},
              "unlabeled": {"image": _images("u1.png", "u2.png"), "label": torch.full((2, 1), -1)}}
    assert batch_image_files(paired) == ["l1.png", "u1.png", "u2.png"]
    assert batch_image_files({"image": torch.zeros(2)}) == []


def test_nan_guard_names_files_and_last_finite_loss_and_is_a_user_error():
    losses = iter([0.5, 0.25, float("nan")])
    engine = Engine(lambda e, b: {"loss": torch.tensor(next(losses)), "loss_aux": torch.tensor(0.0)})
    NaNGuard().attach(engine)
    with pytest.raises(NonFiniteLossError) as err:
        engine.run([{"image": _images(f"case_{i}.png")} for i in range(3)], max_epochs=1)
    msg = str(err.value)
    assert "iteration 3: loss=nan." in msg and "loss_aux" not in msg.split("Training stopped")[0]
    assert "Batch files: case_2.png." in msg and "Last finite loss: loss=0.25 at iteration 2." in msg
    assert isinstance(err.value, UserError) and isinstance(err.value, FloatingPointError)


def test_nan_guard_first_iteration_and_files_missing():
    engine = Engine(lambda e, b: torch.tensor(float("inf")))
    NaNGuard().attach(engine)
    with pytest.raises(NonFiniteLossError, match="Batch files: not recorded in the batch metadata. Last finite loss: "
                                                 r"none in this run \(it failed at its first iteration\)"):
        engine.run([0], max_epochs=1)


def test_nan_guard_keeps_a_termination_asked_by_another_handler():
    engine = Engine(lambda e, b: torch.tensor(1.0))
    engine.state.output, engine.state.iteration = torch.tensor(1.0), 1
    engine.should_terminate = "skip_completed"
    NaNGuard()(engine)
    assert engine.should_terminate == "skip_completed"
    engine.state.output = torch.tensor(float("nan"))
    with pytest.raises(NonFiniteLossError):
        NaNGuard()(engine)
    assert engine.should_terminate == "skip_completed"

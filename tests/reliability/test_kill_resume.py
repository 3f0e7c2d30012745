"""Crash safety of the training bundles, proven by killing real ``python -m monai.bundle run`` processes.

For each training bundle (supervised; cotrain and teacher_pretrain are ``slow``):

1. start the bundle's ``train.json`` (tiny networks, 16 px images, batch 2) in a subprocess and ``SIGKILL`` it in the
   middle of epoch 2, after ``train_state.pt`` of epoch 1 exists;
2. re-run the same command: it must resume from ``train_state.pt`` (logged) and finish with exactly
   ``max_epochs * epoch_length`` iterations (read from the ``trainer`` entry of ``train_state.pt``);
3. simulate a crash during a checkpoint write (truncate ``train_state.pt`` to half its bytes and leave a stray
   temporary file beside it), re-run with one more epoch: the log must name the corrupt file, the run must resume
   from ``train_state.pt.prev`` and still end at the right iteration;
4. every checkpoint (``model.pt``, ``train_state.pt``, ``train_state.pt.prev``, ``teacher.pt``) loads with
   ``torch.load(weights_only=True)``.

cotrain runs from a freshly saved ``DiffusionTeacher`` state dict as ``teacher_ckpt`` with ``rounds=1`` (the full
phase-2 path, teacher updated and written to ``teacher.pt``).

In-process tests (no subprocess): a truncated ``model.pt`` before resuming, and a NaN loss (forced through a huge
learning rate) that must stop the run naming the iteration and the loss terms, with the last good checkpoint
still loadable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.bundle import ConfigWorkflow
from rel_helpers import (
    TINY_DIFFUSION,
    TINY_SUPERVISED,
    bundle_command,
    copy_bundle,
    fresh_teacher,
    load_weights_only,
    root_cause,
    run_and_kill,
    run_to_end,
)

SPLITS = {"labeled": 12, "unlabeled": 8, "validation": 2, "test": 2}
MAX_EPOCHS = 3


def _spec(bundle: str, data: Path, tmp: Path) -> tuple[dict[str, Any], list[str]]:
    """Overrides for a tiny 2D run of ``bundle`` and the checkpoint files it must leave in ``ckpt_dir``."""
    common = {"dataset_dir": str(data), "ckpt_dir": str(tmp / "models"), "output_dir": str(tmp / "eval"),
              "roi_size": [16, 16], "batch_size": 2, "max_epochs": MAX_EPOCHS, "val_interval": 1}
    if bundle == "supervised":
        return {**TINY_SUPERVISED, **common}, ["model.pt", "train_state.pt", "train_state.pt.prev"]
    if bundle == "cotrain":
        ckpt = fresh_teacher(tmp / "phase1" / "teacher.pt", 2, 3)
        return ({**TINY_DIFFUSION, **common, "teacher_ckpt": str(ckpt), "rounds": 1, "val_batch_size": 2},
                ["model.pt", "teacher.pt", "train_state.pt", "train_state.pt.prev"])
    if bundle == "teacher_pretrain":
        return {**TINY_DIFFUSION, **common}, ["teacher.pt", "train_state.pt", "train_state.pt.prev"]
    raise ValueError(bundle)


def _progress(text: str) -> list[tuple[int, int]]:
    """``(epoch, iteration-in-epoch)`` of every iteration line a StatsHandler logged."""
    return [(int(e), int(i)) for e, i in re.findall(r"Epoch: (\d+)/\d+, Iter: (\d+)/\d+", text)]


def _trainer_state(models: Path, name: str = "train_state.pt") -> dict[str, int]:
    state = load_weights_only(models / name)
    trainer = state["trainer"]
    return {"iteration": int(trainer["iteration"]), "epoch_length": int(trainer["epoch_length"]),
            "max_epochs": int(trainer["max_epochs"])}


@pytest.mark.parametrize(
    "bundle",
    ["supervised",
     pytest.param("cotrain", marks=pytest.mark.slow),
     pytest.param("teacher_pretrain", marks=pytest.mark.slow)],
)
def test_sigkill_mid_epoch_then_corrupt_state_resumes(bundle: str, tiny_dataset_2d, tmp_path: Path) -> None:
    data = tiny_dataset_2d(num_cases=sum(SPLITS.values()), size=16, splits=SPLITS)
    bundle_dir = copy_bundle(bundle, tmp_path / bundle)
    overrides, expected_files = _spec(bundle, data, tmp_path)
    models, log = tmp_path / "models", tmp_path / "run.log"
    state_path = models / "train_state.pt"
    cmd = bundle_command(bundle_dir, ["train"], overrides)

    # 1. SIGKILL in the middle of epoch 2 (epoch 1's train_state.pt exists, iteration 2 of epoch 2 logged)
    def mid_epoch_2(text: str) -> bool:
        return state_path.exists() and any(e == 2 and i >= 2 for e, i in _progress(text))

    rc, text = run_and_kill(cmd, log, mid_epoch_2)
    assert rc == -9, f"the run was expected to be killed, it exited with {rc}:\n{text[-3000:]}"
    killed = _trainer_state(models)
    length = killed["epoch_length"]
    assert killed["iteration"] == length, "train_state.pt of the killed run must hold exactly epoch 1"
    if bundle == "cotrain":  # teacher.pt is the selected epoch's teacher, written together with model.pt
        assert (models / "teacher.pt").exists() == (models / "model.pt").exists(), "teacher.pt without model.pt"

    # 2. the same command resumes and finishes with exactly MAX_EPOCHS epochs
    rc, text = run_to_end(cmd, log)
    assert rc == 0, text[-3000:]
    assert f"resumed from {state_path} at epoch 1" in text
    assert min(e for e, _ in _progress(text)) == 2, "the resumed run must not retrain epoch 1"
    final = _trainer_state(models)
    assert final["iteration"] == MAX_EPOCHS * length

    # 3. a crash during a checkpoint write, simulated: truncated train_state.pt + stray temporary file
    raw = state_path.read_bytes()
    state_path.write_bytes(raw[: len(raw) // 2])
    stray = models / ".train_state.pt.k1ll3d.tmp"
    stray.write_bytes(raw[: len(raw) // 3])
    rc, text = run_to_end(bundle_command(bundle_dir, ["train"], {**overrides, "max_epochs": MAX_EPOCHS + 1}), log)
    assert rc == 0, text[-3000:]
    assert f"cannot read checkpoint {state_path}" in text, "the corrupt file must be reported with its path"
    prev = Path(str(state_path) + ".prev")
    assert f"resumed from {prev} at epoch {MAX_EPOCHS - 1}" in text, "the previous checkpoint must be used"
    assert _trainer_state(models)["iteration"] == (MAX_EPOCHS + 1) * length

    # 4. every checkpoint loads with weights_only=True
    for name in expected_files:
        load_weights_only(models / name)


def _tiny_train_overrides(data: Path, tmp: Path, **extra: Any) -> dict[str, Any]:
    return {**TINY_SUPERVISED, "dataset_dir": str(data), "ckpt_dir": str(tmp / "models"),
            "output_dir": str(tmp / "eval"), "roi_size": [16, 16], "batch_size": 2, "max_epochs": 1,
            "val_interval": 1, "check_datalist_files": False, **extra}


def _workflow(bundle: str, **overrides: Any) -> ConfigWorkflow:
    from rel_helpers import BUNDLES_DIR

    return ConfigWorkflow(config_file=str(BUNDLES_DIR / bundle / "configs" / "train.json"), workflow_type="train",
                          **overrides)


def _run(wf: ConfigWorkflow) -> ConfigWorkflow:
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def test_truncated_model_pt_is_reported_forgotten_and_rewritten(tiny_dataset_2d, tmp_path: Path, caplog, capfd) -> None:
    """A truncated ``model.pt`` found on resume: the warning names it, the resumed state forgets its best value
    (so a worse model can replace the broken file), and the next validation writes a loadable ``model.pt``."""
    data = tiny_dataset_2d(num_cases=8, size=16, splits={"labeled": 4, "unlabeled": 2, "validation": 1, "test": 1})
    _run(_workflow("supervised", **_tiny_train_overrides(data, tmp_path)))
    models = tmp_path / "models"
    model = models / "model.pt"
    # the supervised bundle selects like the method (SelectedModelSaver, threshold sweep)
    assert load_weights_only(models / "train_state.pt")["best_model"]["best_dice"] >= 0
    raw = model.read_bytes()
    model.write_bytes(raw[: len(raw) // 2])
    # no validation in the resumed epoch, so model.pt stays broken and only the resume logic is observed
    with caplog.at_level("WARNING"):
        _run(_workflow("supervised", **_tiny_train_overrides(data, tmp_path, max_epochs=2, val_interval=5)))
    text = caplog.text + capfd.readouterr().err  # MONAI's logging config may route records to stderr only
    assert f"cannot read the selected model {model}" in text, text[-3000:]
    assert load_weights_only(models / "train_state.pt")["best_model"]["best_dice"] < 0
    assert model.read_bytes() == raw[: len(raw) // 2], "without a validation nothing may touch model.pt"
    # the next validation writes a complete model.pt, whatever its Dice
    _run(_workflow("supervised", **_tiny_train_overrides(data, tmp_path, max_epochs=3, val_interval=1)))
    assert set(load_weights_only(model)) == set(load_weights_only(models / "train_state.pt")["network"])


@pytest.mark.parametrize("bundle", ["supervised", "cotrain"])
def test_nan_loss_stops_with_iteration_and_terms_and_keeps_last_checkpoint(
    bundle: str, tiny_dataset_2d, tmp_path: Path, record_message
) -> None:
    from custom_components.handlers import NonFiniteLossError

    data = tiny_dataset_2d(num_cases=8, size=16, splits={"labeled": 4, "unlabeled": 2, "validation": 1, "test": 1})
    if bundle == "supervised":
        base = _tiny_train_overrides(data, tmp_path)
        loss_id, inner = "loss", None
    else:
        ckpt = fresh_teacher(tmp_path / "phase1" / "teacher.pt", 2, 3)
        base = {**TINY_DIFFUSION, "dataset_dir": str(data), "ckpt_dir": str(tmp_path / "models"),
                "output_dir": str(tmp_path / "eval"), "roi_size": [16, 16], "batch_size": 2, "val_batch_size": 2,
                "max_epochs": 1, "val_interval": 1, "rounds": 1, "teacher_ckpt": str(ckpt),
                "check_datalist_files": False}
        loss_id, inner = "seg_loss", {"_target_": "custom_components.losses.HardTargetDiceLoss"}
    first = _run(_workflow(bundle, **base))
    trainer = first.parser.get_parsed_content("train#trainer")
    length = trainer.state.epoch_length
    models = tmp_path / "models"
    good_iteration = int(load_weights_only(models / "train_state.pt")["trainer"]["iteration"])
    model_before = (models / "model.pt").read_bytes()

    # NaN from the 2nd loss call of the resumed run (epoch 2): the NaN guard must stop it there
    nan_loss = {"_target_": "rel_helpers.NaNAfterLoss", "nan_from_call": 2}
    if inner is not None:
        nan_loss["loss"] = inner
    wf = _workflow(bundle, **{**base, "max_epochs": 2, loss_id: nan_loss})
    wf.initialize()
    with pytest.raises(Exception) as err:  # noqa: PT011 - MONAI wraps it in a RuntimeError of the run expression
        wf.run()
    cause = root_cause(err.value)
    assert isinstance(cause, NonFiniteLossError), repr(err.value)
    msg = str(cause)
    record_message(msg)
    m = re.search(r"Non-finite loss at epoch (\d+), iteration (\d+): (.*)\. Training stopped", msg)
    assert m, msg
    assert int(m.group(1)) == 2 and length < int(m.group(2)) <= 2 * length, msg
    assert re.search(r"(^|, )loss(\[\d+\])?=nan", m.group(3)), msg
    if bundle == "cotrain":
        assert re.search(r"loss_\w+=nan", m.group(3)), f"the non-finite loss terms must be named: {msg}"
    # the last good state (epoch 1) is intact and loadable; model.pt untouched
    state = load_weights_only(models / "train_state.pt")
    assert state["trainer"]["iteration"] == good_iteration == length
    for key, value in state.items():
        if isinstance(value, dict):
            for t in value.values():
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    assert torch.isfinite(t).all(), f"train_state.pt[{key}] holds non-finite values"
    assert (models / "model.pt").read_bytes() == model_before

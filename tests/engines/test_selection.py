"""Tests for ``custom_components.engines.selection`` (METHOD.md, "Model selection"): per-threshold Dice, the
choice of network and threshold on validation, and the deployable ``models/model.pt``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from custom_components.engines import DualNetworkEvaluator, dice_per_threshold
from custom_components.handlers import SelectedModelSaver
from custom_components.networks import DiffusionTeacher, MaskPathwaySegmenter

torch.set_num_threads(1)

TINY = dict(channels=(8, 16), norm_num_groups=4)


def perturb_(module: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Seeded noise on every parameter (MONAI zero-initialises the UNet's output layer)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


# ------------------------------------------------------------------------------------------- dice_per_threshold
def test_dice_per_threshold_by_hand() -> None:
    fg = torch.tensor([[0.9, 0.4], [0.2, 0.6]])
    probs = torch.stack([1 - fg, fg])[None]  # (1, 2, 2, 2)
    label = torch.tensor([[1, 1], [0, 0]])[None, None]
    d = dice_per_threshold(probs, label, torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64))
    # thr 0.3: pred {0.9, 0.4, 0.6} -> 2*2/(3+2); thr 0.5: {0.9, 0.6} -> 2*1/(2+2); thr 0.7: {0.9} -> 2*1/(1+2)
    torch.testing.assert_close(d, torch.tensor([[0.8, 0.5, 2 / 3]], dtype=torch.float64))


def test_dice_per_threshold_empty_prediction_and_reference_is_one() -> None:
    probs = torch.stack([torch.full((4, 4), 0.9), torch.full((4, 4), 0.1)])[None]
    label = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    d = dice_per_threshold(probs, label, torch.tensor([0.5, 0.05], dtype=torch.float64))
    torch.testing.assert_close(d, torch.tensor([[1.0, 0.0]], dtype=torch.float64))


def test_dice_per_threshold_multiclass_argmax_mean_over_foreground() -> None:
    pred = torch.tensor([1, 1, 2, 2])
    probs = torch.nn.functional.one_hot(pred, 3).T.float().reshape(1, 3, 1, 4)
    label = torch.tensor([0, 1, 2, 2]).reshape(1, 1, 1, 4)
    d = dice_per_threshold(probs, label, torch.tensor([0.5], dtype=torch.float64))  # ignored for K > 2
    # class 1: pred {0, 1}, ref {1} -> 2/3; class 2: pred {2, 3}, ref {2, 3} -> 1
    torch.testing.assert_close(d, torch.tensor([[(2 / 3 + 1) / 2]], dtype=torch.float64))


def test_dice_per_threshold_multiclass_leaves_out_classes_empty_in_both() -> None:
    # K = 4; case 0 has no class 3 and predicts none: its mean is over classes 1, 2 only (a free 1.0 for the
    # absent class would favour networks that never predict a rare class); case 1 misses class 3 -> 0 counts
    pred = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2]])
    label = torch.tensor([[0, 1, 2, 2], [1, 1, 2, 3]])
    probs = torch.nn.functional.one_hot(pred, 4).movedim(-1, 1).float().reshape(2, 4, 1, 4)
    d = dice_per_threshold(probs, label.reshape(2, 1, 1, 4), None)
    torch.testing.assert_close(d, torch.tensor([[(2 / 3 + 1) / 2], [(1 + 2 / 3 + 0) / 3]], dtype=torch.float64))
    background = torch.zeros(1, 1, 1, 4, dtype=torch.long)  # nothing anywhere: undefined, left to the caller
    assert torch.isnan(dice_per_threshold(torch.nn.functional.one_hot(background[:, 0], 4).movedim(-1, 1).float(),
                                          background, None)).all()


def test_multiclass_selection_does_not_reward_never_predicting_a_rare_class() -> None:
    # 6 validation cases, class 3 only in cases 4 and 5. Both networks get classes 1 and 2 half right (Dice 0.5)
    # everywhere. "silent" never predicts class 3; "rare" finds it in both cases and puts a false positive in
    # cases 0-2. Counting the absent class as 1 per case would pick "silent" (0.556 vs 0.500); leaving it out
    # (the test protocols' per-case mean) picks "rare" (0.472 vs 0.444).
    n = 6
    label = torch.zeros(n, 1, 4, 4, dtype=torch.long)
    label[:, 0, 0, :2], label[:, 0, 1, :2] = 1, 2
    label[4:, 0, 3, :2] = 3
    pred = torch.zeros(n, 4, 4, dtype=torch.long)
    pred[:, 0, 0], pred[:, 0, 2], pred[:, 1, 0], pred[:, 1, 2] = 1, 1, 2, 2
    rare_pred = pred.clone()
    rare_pred[4:, 3, :2] = 3
    rare_pred[:3, 3, 3] = 3

    class Lookup(torch.nn.Module):  # the stored probabilities of case i (image value i)
        def __init__(self, lab):
            super().__init__()
            self.out = torch.nn.functional.one_hot(lab, 4).movedim(-1, 1).float()

        def forward(self, x):
            return self.out[x[:, 0, 0, 0].long()]

    loader = [{"image": torch.arange(float(n))[:, None, None, None].expand(n, 1, 4, 4), "label": label}]
    ev = DualNetworkEvaluator("cpu", loader, {"silent": Lookup(pred), "rare": Lookup(rare_pred)}, threshold_step=None)
    ev.run()
    m = ev.state.metrics
    assert ev.state.selection["network"] == "rare"
    assert m["val_dice_silent"] == pytest.approx((4 * 0.5 + 2 * 1 / 3) / 6)
    assert m["val_dice_rare"] == pytest.approx((3 * 1 / 3 + 0.5 + 2 * 2 / 3) / 6)
    assert m["val_dice_silent_class3"] == 0.0 and m["val_frac_silent_class3"] == 0.0
    assert m["val_dice_rare_class3"] == pytest.approx(2 * 4 / (7 + 4)) and m["val_dice_rare_class1"] == 0.5
    assert m["val_frac_rare_class3"] == pytest.approx(7 / (n * 16))


def test_dice_per_threshold_binary_without_sweep_is_argmax() -> None:
    fg = torch.tensor([[0.9, 0.4], [0.2, 0.6]])
    probs = torch.stack([1 - fg, fg])[None]
    label = torch.tensor([[1, 1], [0, 0]])[None, None]
    torch.testing.assert_close(dice_per_threshold(probs, label, None), torch.tensor([[0.5]], dtype=torch.float64))


# ------------------------------------------------------------------------------------------- evaluator
class FixedProbs(torch.nn.Module):
    """Foreground probability ``fg_in`` where the image is bright, ``fg_out`` elsewhere, plus optional false
    positives in the first row."""

    def __init__(self, fg_in: float, fg_out: float, false_positive: float | None = None) -> None:
        super().__init__()
        self.fg_in, self.fg_out, self.false_positive = fg_in, fg_out, false_positive

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = torch.where(x[:, :1] > 0.5, self.fg_in, self.fg_out)
        if self.false_positive is not None:
            fg[..., 0, :] = torch.where(x[:, :1, 0, :] > 0.5, fg[..., 0, :], torch.tensor(self.false_positive))
        return torch.cat([1 - fg, fg], 1)


def val_loader(n: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = []
    for _ in range(n):
        y = torch.zeros(1, 8, 8, dtype=torch.long)
        r, c = torch.randint(1, 4, (2,), generator=g).tolist()
        y[:, r : r + 4, c : c + 4] = 1
        data.append({"image": y.float(), "label": y})
    return DataLoader(data, batch_size=2)


def test_evaluator_picks_the_better_network_and_its_threshold() -> None:
    networks = {
        "student": FixedProbs(0.7, 0.1, false_positive=0.8),  # false positives at any threshold below 0.8
        "teacher": FixedProbs(0.3, 0.1),  # perfect once the threshold is in (0.1, 0.3]
    }
    ev = DualNetworkEvaluator("cpu", val_loader(), networks, threshold_step=0.02)
    ev.run()
    sel = ev.state.selection
    assert sel["network"] == "teacher"
    assert sel["threshold"] == pytest.approx(0.12)  # the first threshold of the sweep that reaches the best Dice
    assert sel["dice"] == pytest.approx(1.0)
    m = ev.state.metrics
    assert m["val_dice"] == pytest.approx(1.0) and m["val_threshold"] == pytest.approx(0.12)
    assert m["val_dice_teacher"] == pytest.approx(1.0)
    assert m["val_dice_student"] < 1.0
    assert m["val_dice_teacher_at_0.5"] < 1.0  # at 0.5 the teacher predicts nothing: the sweep matters


def test_evaluator_threshold_sweep_grid() -> None:
    ev = DualNetworkEvaluator("cpu", val_loader(), {"a": FixedProbs(0.6, 0.1)}, threshold_step=0.02)
    assert len(ev.thresholds) == 49
    assert float(ev.thresholds[0]) == pytest.approx(0.02) and float(ev.thresholds[-1]) == pytest.approx(0.98)
    with pytest.raises(ValueError, match=r"threshold_step must be in \(0, 1\), got 1.5"):
        DualNetworkEvaluator("cpu", val_loader(), {"a": FixedProbs(0.6, 0.1)}, threshold_step=1.5)
    with pytest.raises(ValueError, match="networks must name at least one network"):
        DualNetworkEvaluator("cpu", val_loader(), {})


def test_evaluator_without_sweep_uses_argmax_and_threshold_half() -> None:
    networks = {"student": FixedProbs(0.7, 0.1, false_positive=0.8), "teacher": FixedProbs(0.3, 0.1)}
    ev = DualNetworkEvaluator("cpu", val_loader(), networks, threshold_step=None)
    ev.run()
    assert ev.state.selection["network"] == "student"  # at 0.5 the teacher finds nothing
    assert ev.state.selection["threshold"] == 0.5


# ------------------------------------------------------------------------------------------- saver
def tiny_pair() -> tuple[DiffusionTeacher, DiffusionTeacher]:
    torch.manual_seed(0)
    teacher = perturb_(DiffusionTeacher(2, 1, 2, **TINY), seed=1)
    student = perturb_(DiffusionTeacher(2, 1, 2, **TINY), seed=2)
    return teacher, student


def fake_eval(network: str, dice: float, threshold: float = 0.5, epoch: int = 1):
    """A stand-in for a finished ``DualNetworkEvaluator`` run (only what the saver reads)."""
    metrics = {"val_dice": dice, f"val_dice_{network}": dice}
    sel = {"network": network, "threshold": threshold, "dice": dice}
    return SimpleNamespace(state=SimpleNamespace(selection=sel, metrics=metrics, epoch=epoch))


def _mask_weights(path) -> dict:
    sd = torch.load(path, weights_only=True)
    return {k: v for k, v in sd.items() if k.startswith("mask_net.")}


def test_saver_overwrites_model_only_on_improvement(tmp_path) -> None:
    teacher, student = tiny_pair()
    template = MaskPathwaySegmenter(2, 1, 2, **TINY)
    trainer = SimpleNamespace(state=SimpleNamespace(epoch=1))
    saver = SelectedModelSaver(str(tmp_path), template, {"student": student.mask_net, "teacher": teacher.mask_net},
                               trainer=trainer)
    model = tmp_path / "model.pt"

    saver(fake_eval("teacher", 0.5, 0.3))
    first = _mask_weights(model)
    for k, v in teacher.mask_net.state_dict().items():
        assert torch.equal(first[f"mask_net.{k}"], v)
    assert json.loads((tmp_path / "model_selection.json").read_text())["network"] == "teacher"

    trainer.state.epoch = 2
    saver(fake_eval("student", 0.4))  # worse: keep the teacher's weights
    assert all(torch.equal(first[k], v) for k, v in _mask_weights(model).items())
    assert json.loads((tmp_path / "model_selection.json").read_text())["epoch"] == 1

    trainer.state.epoch = 3
    saver(fake_eval("student", 0.6, 0.7))  # better: the student's mask pathway and threshold
    third = torch.load(model, weights_only=True)
    for k, v in student.mask_net.state_dict().items():
        assert torch.equal(third[f"mask_net.{k}"], v)
    assert float(torch.sigmoid(third["fg_logit_offset"])) == pytest.approx(0.7, abs=1e-6)
    rec = json.loads((tmp_path / "model_selection.json").read_text())
    assert rec["network"] == "student" and rec["epoch"] == 3 and rec["dice"] == pytest.approx(0.6)
    assert saver.best_dice == pytest.approx(0.6) and len(saver.history) == 3
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file


def test_saver_state_dict_round_trips_and_protects_the_best_model(tmp_path) -> None:
    teacher, student = tiny_pair()
    nets = {"student": student.mask_net, "teacher": teacher.mask_net}
    saver = SelectedModelSaver(str(tmp_path), MaskPathwaySegmenter(2, 1, 2, **TINY), nets)
    saver(fake_eval("teacher", 0.8, 0.4))
    saver(fake_eval("student", 0.3))
    state = saver.state_dict()
    torch.save(state, tmp_path / "train_state.pt")
    resumed = SelectedModelSaver(str(tmp_path), MaskPathwaySegmenter(2, 1, 2, **TINY), nets)
    resumed.load_state_dict(torch.load(tmp_path / "train_state.pt", weights_only=True))
    assert resumed.best_dice == saver.best_dice == pytest.approx(0.8)
    assert resumed.best == saver.best and resumed.history == saver.history
    before = _mask_weights(tmp_path / "model.pt")
    resumed(fake_eval("student", 0.7))  # worse than the best before the restart: no overwrite
    assert all(torch.equal(before[k], v) for k, v in _mask_weights(tmp_path / "model.pt").items())
    assert resumed.best_dice == pytest.approx(0.8)


def test_selected_model_loads_weights_only_and_reproduces_thresholded_output(tmp_path) -> None:
    teacher, student = tiny_pair()
    views = {
        "student": MaskPathwaySegmenter(2, 1, 2, **TINY, mask_net=student.mask_net),
        "teacher": MaskPathwaySegmenter(2, 1, 2, **TINY, mask_net=teacher.mask_net),
    }
    g = torch.Generator().manual_seed(3)
    images = torch.randn(4, 1, 16, 16, generator=g)
    with torch.no_grad():
        raw_teacher = views["teacher"].eval()(images)[:, 1]
    # labels that the teacher gets exactly right at a threshold below 0.5
    thr_true = float(raw_teacher.quantile(0.6))
    labels = (raw_teacher >= thr_true).long()[:, None]
    loader = DataLoader([{"image": images[i], "label": labels[i]} for i in range(4)], batch_size=2)
    saver = SelectedModelSaver(str(tmp_path), MaskPathwaySegmenter(2, 1, 2, **TINY),
                               {"student": student.mask_net, "teacher": teacher.mask_net})
    ev = DualNetworkEvaluator("cpu", loader, views, threshold_step=0.02, val_handlers=[saver])
    ev.run()
    sel = ev.state.selection
    assert sel["network"] == "teacher"

    fresh = MaskPathwaySegmenter(2, 1, 2, **TINY).eval()
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    assert fresh.threshold == pytest.approx(sel["threshold"], abs=1e-6)
    with torch.no_grad():
        out = fresh(images)
        expected = MaskPathwaySegmenter(2, 1, 2, **TINY, mask_net=teacher.mask_net, threshold=sel["threshold"]).eval()(images)
    torch.testing.assert_close(out, expected)
    safe = (raw_teacher - sel["threshold"]).abs() > 1e-5
    assert torch.equal((out.argmax(1) == 1)[safe], (raw_teacher >= sel["threshold"])[safe])
    # and its Dice on the validation images is the selected one
    d = dice_per_threshold(out, labels, None).mean()
    assert float(d) == pytest.approx(sel["dice"], abs=1e-6)

"""Tests for ``custom_components.engines.selection`` (METHOD.md, "Model selection"): per-threshold Dice, the
choice of network and threshold on validation, and the deployable ``models/model.pt``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from custom_components.engines import (
    DualNetworkEvaluator,
    dice_per_threshold,
    evaluation_threshold,
    pick_threshold,
    selected_threshold,
)
from custom_components.handlers import SelectedModelSaver
from custom_components.networks import DiffusionTeacher, MaskPathwaySegmenter
from custom_components.transforms import ThresholdForeground

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
    # every threshold in [0.12, 0.30] is perfect: the tie goes to the one nearest 0.5
    assert sel["threshold"] == pytest.approx(0.3)
    assert sel["dice"] == pytest.approx(1.0)
    curve = sel["curve"]  # the selected network's validation curve, for the report
    assert len(curve["thresholds"]) == len(curve["dice"]) == 49
    assert curve["dice"][curve["thresholds"].index(0.12)] == pytest.approx(1.0)
    assert curve["dice"][curve["thresholds"].index(0.5)] < 1.0
    m = ev.state.metrics
    assert m["val_dice"] == pytest.approx(1.0) and m["val_threshold"] == pytest.approx(0.3)
    assert m["val_dice_teacher"] == pytest.approx(1.0)
    assert m["val_dice_student"] < 1.0
    assert m["val_dice_teacher_at_0.5"] < 1.0  # at 0.5 the teacher predicts nothing: the sweep matters


GRID = torch.tensor([i * 0.02 for i in range(1, 50)], dtype=torch.float64)


def test_pick_threshold_ties_go_to_the_threshold_nearest_half() -> None:
    flat = torch.full((49,), 0.8, dtype=torch.float64)
    assert float(GRID[pick_threshold(GRID, flat)]) == pytest.approx(0.5)
    # 0.02 .. 0.40 score alike (the case of the issue): not the lowest, the nearest to 0.5
    plateau = torch.where(GRID <= 0.4 + 1e-9, 0.9, 0.7).double()
    assert float(GRID[pick_threshold(GRID, plateau)]) == pytest.approx(0.4)
    plateau_high = torch.where(GRID >= 0.7 - 1e-9, 0.9, 0.7).double()
    assert float(GRID[pick_threshold(GRID, plateau_high)]) == pytest.approx(0.7)
    # a strict maximum wins whatever its distance to 0.5
    peak = torch.full((49,), 0.8, dtype=torch.float64)
    peak[0] = 0.81
    assert pick_threshold(GRID, peak) == 0
    # differences beyond the tolerance are not ties
    near = plateau.clone()
    near[0] += 1e-6
    assert pick_threshold(GRID, near) == 0


class _Level(torch.nn.Module):
    """``image -> probabilities`` with foreground probability ``level`` where the image is 1, 0 elsewhere."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = torch.nn.Parameter(torch.tensor(level))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = self.level * (x[:, :1] > 0.5).float()
        return torch.cat([1 - fg, fg], 1)


def test_evaluation_threshold_is_chosen_again_on_validation_with_the_evaluations_inferer(tmp_path) -> None:
    """``threshold_source="validation"`` loads the checkpoint, sweeps on the validation loader under the evaluation's
    inferer (ties nearest 0.5, as training's selection) and records it; ``"selection"`` reads training's file."""
    y = torch.zeros(4, 1, 8, 8)
    y[:, :, 2:6, 2:6] = 1
    loader = [{"image": y.clone(), "label": y.clone()}]
    sel = tmp_path / "model_selection.json"
    sel.write_text(json.dumps({"network": "teacher", "threshold": 0.9}))
    ckpt = tmp_path / "model.pt"
    torch.save(_Level(0.4).state_dict(), ckpt)

    def run(inferer=None, out=None):
        net = _Level(0.9)  # the checkpoint (0.4) must replace these weights
        return evaluation_threshold("validation", sel, 2, net, loader, inferer, "cpu", 0.02, net, ckpt, out)

    # foreground probability 0.4: every threshold <= 0.4 gives Dice 1; the one nearest 0.5 is 0.4
    assert run(out=tmp_path / "cal.json") == pytest.approx(0.4)
    record = json.loads((tmp_path / "cal.json").read_text())
    assert record["threshold"] == pytest.approx(0.4) and record["dice"] == pytest.approx(1.0)
    assert record["threshold_of_training_selection"] == pytest.approx(0.9) and record["num_cases"] == 4
    assert len(record["curve"]["thresholds"]) == len(record["curve"]["dice"]) == 49

    # an inferer that flattens the probabilities (as a dense window average does) moves the threshold with them
    def halve(x, net):
        p = net(x)
        return torch.cat([1 - p[:, 1:] / 2, p[:, 1:] / 2], 1)

    assert run(halve) == pytest.approx(0.2)
    assert evaluation_threshold("selection", sel, 2) == pytest.approx(0.9)
    assert evaluation_threshold("validation", sel, 4) == 0.5  # multi-class: argmax, no sweep
    with pytest.raises(ValueError, match="threshold_source must be one of"):
        evaluation_threshold("val", sel, 2)
    with pytest.raises(ValueError, match="needs the network"):
        evaluation_threshold("validation", sel, 2)


def test_selected_threshold_reads_the_selection_file(tmp_path) -> None:
    f = tmp_path / "model_selection.json"
    f.write_text(json.dumps({"network": "teacher", "threshold": 0.34}))
    assert selected_threshold(f, 2) == pytest.approx(0.34)
    assert selected_threshold(tmp_path / "missing.json", 3) == 0.5  # multi-class: argmax, no file needed
    with pytest.raises(FileNotFoundError, match=r"missing.json: no model selection file.*--threshold 0.5"):
        selected_threshold(tmp_path / "missing.json", 2)
    f.write_text("{}")
    with pytest.raises(ValueError, match=r"model_selection.json: no valid 'threshold'"):
        selected_threshold(f, 2)


def test_threshold_foreground_applies_the_rule_of_the_sweep() -> None:
    fg = torch.tensor([[0.02, 0.3], [0.5, 0.9]])
    probs = torch.stack([1 - fg, fg])
    torch.testing.assert_close(ThresholdForeground(0.3)(probs), torch.tensor([[[0.0, 1.0], [1.0, 1.0]]]))
    torch.testing.assert_close(ThresholdForeground(0.5)(probs), torch.tensor([[[0.0, 0.0], [1.0, 1.0]]]))
    # it agrees with dice_per_threshold for every threshold of the sweep
    label = torch.tensor([[0, 1], [1, 0]])[None, None]
    d = dice_per_threshold(probs[None], label, GRID)
    for j in (0, 14, 24, 44):
        pred = ThresholdForeground(float(GRID[j]))(probs)
        assert float(dice_per_threshold(torch.cat([1 - pred, pred])[None], label, None)) == pytest.approx(
            float(d[0, j]))
    three = torch.tensor([0.2, 0.5, 0.3]).reshape(3, 1, 1)
    assert int(ThresholdForeground(0.1)(three)) == 1  # multi-class: argmax
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        ThresholdForeground(1.0)


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
    assert "fg_logit_offset" not in third  # the threshold is not part of the model
    rec = json.loads((tmp_path / "model_selection.json").read_text())
    assert rec["network"] == "student" and rec["epoch"] == 3 and rec["dice"] == pytest.approx(0.6)
    assert rec["threshold"] == pytest.approx(0.7)
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


def test_saver_writes_the_teacher_of_the_selected_epoch(tmp_path) -> None:
    """``also_save`` (cotrain: the whole teacher, phase 3's input) is written with every new best model only, so
    it is the teacher of the selected epoch, not the last one."""
    teacher, student = tiny_pair()
    saver = SelectedModelSaver(str(tmp_path), MaskPathwaySegmenter(2, 1, 2, **TINY),
                               {"student": student.mask_net, "teacher": teacher.mask_net},
                               also_save={"teacher.pt": teacher})
    saver(fake_eval("teacher", 0.8))
    selected = {k: v.clone() for k, v in teacher.state_dict().items()}
    perturb_(teacher, seed=9)  # training goes on ...
    saver(fake_eval("teacher", 0.7))  # ... and validates worse
    saved = torch.load(tmp_path / "teacher.pt", weights_only=True)
    assert saved.keys() == selected.keys()
    assert all(torch.equal(saved[k], v) for k, v in selected.items())
    assert not all(torch.equal(saved[k], v) for k, v in teacher.state_dict().items())
    saver(fake_eval("student", 0.9))  # a new best: the teacher of this epoch
    saved = torch.load(tmp_path / "teacher.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in teacher.state_dict().items())


def test_saver_without_deployable_saves_the_network_itself(tmp_path) -> None:
    """The supervised baseline: the selected network's own ``state_dict`` and the same selection record."""
    net = torch.nn.Conv2d(1, 2, 1)
    saver = SelectedModelSaver(str(tmp_path), None, {"supervised": net})
    saver(fake_eval("supervised", 0.6, 0.36))
    sd = torch.load(tmp_path / "model.pt", weights_only=True)
    assert sd.keys() == net.state_dict().keys()
    assert json.loads((tmp_path / "model_selection.json").read_text())["threshold"] == pytest.approx(0.36)


def test_supervised_network_gets_the_same_sweep() -> None:
    """A logits network wrapped with softmax (as the supervised bundle does) is swept like the method."""
    logits = torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():  # foreground probability sigmoid(2x - 1.6): 0.17 off the object, 0.6 on it
        logits.weight.zero_()
        logits.bias.zero_()
        logits.weight[1, 0] = 2.0
        logits.bias[1] = -1.6
    g = torch.Generator().manual_seed(0)
    data = []
    for _ in range(4):
        y = torch.zeros(1, 8, 8, dtype=torch.long)
        y[:, 2:6, 2:6] = 1
        x = y.float() + 0.0 * torch.randn(1, 8, 8, generator=g)
        data.append({"image": x, "label": y})
    net = torch.nn.Sequential(logits, torch.nn.Softmax(dim=1))
    ev = DualNetworkEvaluator("cpu", DataLoader(data, batch_size=2), {"supervised": net}, threshold_step=0.02)
    ev.run()
    sel = ev.state.selection
    assert sel["network"] == "supervised" and sel["dice"] == pytest.approx(1.0)
    assert 0.17 < sel["threshold"] <= 0.6 and sel["threshold"] == pytest.approx(0.5)
    assert len(sel["curve"]["dice"]) == 49


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
    thr = selected_threshold(tmp_path / "model_selection.json", 2)
    assert thr == pytest.approx(sel["threshold"])
    with torch.no_grad():
        out = fresh(images)
    torch.testing.assert_close(out[:, 1], raw_teacher)  # raw probabilities, unchanged
    # post-processing with the stored threshold gives the selected Dice on the validation images
    pred = torch.stack([ThresholdForeground(thr)(p) for p in out])
    d = dice_per_threshold(torch.cat([1 - pred, pred], 1), labels, None).mean()
    assert float(d) == pytest.approx(sel["dice"], abs=1e-6)


# ------------------------------------------------------------------------------------------- degenerate warnings
def test_foreground_warning_names_figure_and_baseline() -> None:
    from custom_components.engines.selection import foreground_warning

    w = foreground_warning(0.98, 0.06)
    assert w and "98.0 % foreground on validation" in w and "labels have 6.0 %" in w
    assert foreground_warning(0.0, 0.06) is not None  # predicts nothing
    assert foreground_warning(0.09, 0.06) is None and foreground_warning(0.07, 0.04) is None
    assert foreground_warning(0.011, 0.001) is None  # below the absolute floor


def test_evaluator_warns_when_the_selected_model_predicts_everything(tmp_path) -> None:
    ev = DualNetworkEvaluator("cpu", val_loader(), {"a": FixedProbs(0.9, 0.9)}, threshold_step=0.02)
    ev.run()
    sel = ev.state.selection
    assert (sel["val_foreground_fraction"] == pytest.approx(1.0)
            and sel["label_foreground_fraction"] == pytest.approx(0.25))
    assert len(sel["warnings"]) == 1 and "100.0 % foreground" in sel["warnings"][0]
    good = DualNetworkEvaluator("cpu", val_loader(), {"a": FixedProbs(0.3, 0.1)}, threshold_step=0.02)
    good.run()
    assert (good.state.selection["warnings"] == []
            and good.state.selection["val_foreground_fraction"] == pytest.approx(0.25))

"""Tests for ``custom_components.losses.cps`` (METHOD.md, "Notation" and "CPS"): ``Dice(P, target)`` is soft
multi-class Dice on softmax probabilities averaged over all classes, against a hard target that never carries
gradient; ``L_cps = Dice(P_S, argmax P_T) + Dice(P_T, argmax P_S)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss

from custom_components.losses.cps import CPSLoss, HardTargetDiceLoss, hard_labels, pseudo_labels

torch.set_num_threads(1)

CASES = [(2, 2), (2, 4), (3, 2), (3, 4)]
IDS = [f"{d}d-K{k}" for d, k in CASES]


def logits_and_labels(dims: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (2, k, *([8] * dims))
    logits = torch.randn(shape, generator=g)
    labels = torch.randint(0, k, (2, 1, *([8] * dims)), generator=g)
    return logits, labels


@pytest.mark.parametrize("dims,k", CASES, ids=IDS)
def test_hard_target_dice_equals_monai_dice(dims: int, k: int) -> None:
    logits, y = logits_and_labels(dims, k)
    ours = HardTargetDiceLoss()(logits, y)
    ref = DiceLoss(include_background=True, to_onehot_y=True, softmax=True)(logits, y)
    torch.testing.assert_close(ours, ref)
    assert ours.ndim == 0


@pytest.mark.parametrize("dims,k", CASES, ids=IDS)
def test_hard_target_dice_by_hand(dims: int, k: int) -> None:
    """Soft Dice per sample and class (background included) on softmax probabilities, averaged."""
    logits, y = logits_and_labels(dims, k, seed=1)
    p = logits.softmax(1)
    onehot = torch.nn.functional.one_hot(y[:, 0], k).movedim(-1, 1).float()
    axes = tuple(range(2, p.ndim))
    inter = (p * onehot).sum(axes)
    denom = p.sum(axes) + onehot.sum(axes)
    by_hand = (1 - (2 * inter + 1e-5) / (denom + 1e-5)).mean()
    torch.testing.assert_close(HardTargetDiceLoss()(logits, y), by_hand)


def test_hard_target_dice_with_ce_equals_monai_dicece() -> None:
    logits, y = logits_and_labels(2, 3)
    ours = HardTargetDiceLoss(use_ce=True)(logits, y)
    ref = DiceCELoss(include_background=True, to_onehot_y=True, softmax=True)(logits, y)
    torch.testing.assert_close(ours, ref)


def test_hard_target_dice_accepts_label_without_channel_dim() -> None:
    logits, y = logits_and_labels(2, 2)
    torch.testing.assert_close(HardTargetDiceLoss()(logits, y[:, 0]), HardTargetDiceLoss()(logits, y))


def test_hard_target_dice_rejects_spatial_mismatch() -> None:
    logits, _ = logits_and_labels(2, 2)
    with pytest.raises(ValueError, match=r"target spatial shape \(4, 8\) differs from logits \(8, 8\)"):
        HardTargetDiceLoss()(logits, torch.zeros(2, 1, 4, 8, dtype=torch.long))


def test_target_carries_no_gradient() -> None:
    logits, y = logits_and_labels(2, 2)
    logits.requires_grad_(True)
    target_src = torch.randn(2, 2, 8, 8, requires_grad=True)  # e.g. another network's logits
    target = hard_labels(target_src)
    assert not target.requires_grad
    assert target.shape == (2, 1, 8, 8)
    loss = HardTargetDiceLoss()(logits, target)
    loss.backward()
    assert target_src.grad is None
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # a float target that itself requires grad is detached inside the loss
    y_float = y.float().requires_grad_(True)
    HardTargetDiceLoss()(logits.detach().requires_grad_(True), y_float).backward()
    assert y_float.grad is None


@pytest.mark.parametrize("dims,k", CASES, ids=IDS)
def test_cps_equals_sum_of_two_dice_terms_with_argmax_targets(dims: int, k: int) -> None:
    a, _ = logits_and_labels(dims, k, seed=2)
    b, _ = logits_and_labels(dims, k, seed=3)
    dice = DiceLoss(include_background=True, to_onehot_y=True, softmax=True)
    expected = dice(a, b.argmax(1, keepdim=True)) + dice(b, a.argmax(1, keepdim=True))
    torch.testing.assert_close(CPSLoss()(a, b), expected)


def test_cps_is_symmetric() -> None:
    a, _ = logits_and_labels(2, 4, seed=4)
    b, _ = logits_and_labels(2, 4, seed=5)
    cps = CPSLoss()
    torch.testing.assert_close(cps(a, b), cps(b, a))


def test_cps_gradients_flow_to_both_inputs_but_not_through_targets() -> None:
    """Each network is trained only by the term where it is the prediction: grad of CPS w.r.t. ``a`` equals
    grad of ``Dice(a, argmax b)`` alone."""
    a0, _ = logits_and_labels(2, 2, seed=6)
    b0, _ = logits_and_labels(2, 2, seed=7)
    a, b = a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    ga, gb = torch.autograd.grad(CPSLoss()(a, b), (a, b))
    a1 = a0.clone().requires_grad_(True)
    (ga_ref,) = torch.autograd.grad(DiceLoss(to_onehot_y=True, softmax=True)(a1, b0.argmax(1, keepdim=True)), a1)
    torch.testing.assert_close(ga, ga_ref)
    assert gb.abs().sum() > 0


def test_cps_zero_only_when_networks_agree_perfectly() -> None:
    """Identical, very confident predictions give (nearly) zero CPS; disagreeing ones do not."""
    y = torch.randint(0, 2, (2, 8, 8))
    confident = 50 * (2 * torch.nn.functional.one_hot(y, 2).movedim(-1, 1).float() - 1)
    assert CPSLoss()(confident, confident) < 1e-4
    assert CPSLoss()(confident, -confident) > 1.0


# ------------------------------------------------------- pseudo-label safeguard (issue 25): threshold and weighting
def probs_to_logits(p_fg: list[float]) -> torch.Tensor:
    """``(1, 2, 1, n)`` logits whose softmax is ``[1 - p, p]`` at each of the ``n`` pixels."""
    p = torch.tensor(p_fg, dtype=torch.float64)
    return torch.stack([torch.log(1 - p), torch.log(p)]).float().reshape(1, 2, 1, -1)


def test_pseudo_labels_are_argmax_with_threshold_and_confidence_weights_by_hand() -> None:
    # source probabilities of the foreground: max-class probabilities q = 0.95, 0.6, 0.7, 0.95; argmax 1, 1, 0, 0
    src = probs_to_logits([0.95, 0.6, 0.3, 0.05])
    labels, w = pseudo_labels(src)
    assert labels.flatten().tolist() == [1, 1, 0, 0] and w is None  # off: the paper's hard targets everywhere
    labels, w = pseudo_labels(src, confidence=0.8)
    assert labels.flatten().tolist() == [1, 1, 0, 0]
    torch.testing.assert_close(w.flatten(), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    _, w = pseudo_labels(src, weighting="confidence")
    torch.testing.assert_close(w.flatten(), torch.tensor([0.95, 0.6, 0.7, 0.95]))
    _, w = pseudo_labels(src, confidence=0.65, weighting="confidence")
    torch.testing.assert_close(w.flatten(), torch.tensor([0.95, 0.0, 0.7, 0.95]))
    src.requires_grad_(True)
    labels, w = pseudo_labels(src, confidence=0.5, weighting="confidence")
    assert not labels.requires_grad and not w.requires_grad


@pytest.mark.parametrize("confidence,weighting,msg", [
    (1.0, "hard", r"pseudo_confidence must be in \[0, 1\), got 1.0"),
    (-0.1, "hard", r"pseudo_confidence must be in \[0, 1\), got -0.1"),
    (0.5, "soft", r"pseudo_weighting must be one of \['hard', 'confidence'\], got 'soft'"),
])
def test_pseudo_settings_out_of_range_are_rejected(confidence: float, weighting: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        CPSLoss(confidence=confidence, weighting=weighting)


def test_weighted_dice_and_ce_by_hand() -> None:
    """Prediction p_fg = 0.9, 0.2, 0.6, 0.4 against target 1, 0, 0, 1: with weights 1, 1, 0, 0 (pixels 3, 4 under the
    threshold) Dice is computed on pixels 1, 2 only: class 1: 1 - 2 * 0.9 / (1.1 + 1), class 0: 1 - 2 * 0.8 / (0.9 +
    1); CE is the mean over the two kept pixels, (-ln 0.9 - ln 0.8) / 2. With weights 0.5, 1, 0, 0: class 1:
    1 - 2 * 0.45 / (0.45 + 0.2 + 0.5), class 0: 1 - 2 * 0.8 / (0.05 + 0.8 + 1)."""
    logits = probs_to_logits([0.9, 0.2, 0.6, 0.4])
    y = torch.tensor([1, 0, 0, 1]).reshape(1, 1, 1, 4)
    w = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 4)
    dice = ((1 - 1.8 / 2.1) + (1 - 1.6 / 1.9)) / 2
    assert float(HardTargetDiceLoss()(logits, y, w)) == pytest.approx(dice, abs=1e-5)
    ce = -(np.log(0.9) + np.log(0.8)) / 2
    assert float(HardTargetDiceLoss(use_ce=True)(logits, y, w)) == pytest.approx(dice + ce, abs=1e-5)
    w_conf = torch.tensor([0.5, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 4)
    dice_conf = ((1 - 0.9 / 1.15) + (1 - 1.6 / 1.85)) / 2
    assert float(HardTargetDiceLoss()(logits, y, w_conf)) == pytest.approx(dice_conf, abs=1e-5)
    ce_conf = -(0.5 * np.log(0.9) + np.log(0.8)) / 2  # divided by the number of kept pixels, 2
    assert float(HardTargetDiceLoss(use_ce=True)(logits, y, w_conf)) == pytest.approx(dice_conf + ce_conf, abs=1e-5)


@pytest.mark.parametrize("use_ce", [False, True])
def test_pixels_of_weight_zero_contribute_nothing(use_ce: bool) -> None:
    """The weighted loss equals the unweighted one on the kept pixels alone, whatever the ignored pixels hold, and
    sends them no gradient."""
    logits, y = logits_and_labels(2, 3, seed=8)
    keep = torch.zeros(2, 1, 8, 8)
    keep[..., :, :5] = 1.0  # columns 0-4 kept
    loss = HardTargetDiceLoss(use_ce=use_ce)
    torch.testing.assert_close(loss(logits, y, keep), loss(logits[..., :5], y[..., :5]))
    other_logits, other_y = logits.clone(), y.clone()
    other_logits[..., 5:] = 10 * torch.randn_like(other_logits[..., 5:])
    other_y[..., 5:] = (other_y[..., 5:] + 1) % 3
    torch.testing.assert_close(loss(other_logits, other_y, keep), loss(logits, y, keep))
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(logits, y, keep), logits)
    assert grad[..., 5:].abs().max() == 0 and grad[..., :5].abs().sum() > 0


@pytest.mark.parametrize("use_ce,batch", [(False, False), (True, False), (False, True)])
def test_weight_one_everywhere_equals_the_unweighted_monai_loss(use_ce: bool, batch: bool) -> None:
    logits, y = logits_and_labels(3, 4, seed=9)
    loss = HardTargetDiceLoss(use_ce=use_ce, batch=batch)
    torch.testing.assert_close(loss(logits, y, torch.ones_like(y, dtype=torch.float)), loss(logits, y))


def test_cps_with_threshold_weights_each_direction_by_its_source() -> None:
    """``Dice(P_S, argmax P_T; w_T) + Dice(P_T, argmax P_S; w_S)``: each direction's kept pixels are those of the
    network that gives the target."""
    a = probs_to_logits([0.95, 0.6, 0.3, 0.45])  # q_a = 0.95, 0.6, 0.7, 0.55
    b = probs_to_logits([0.2, 0.9, 0.52, 0.1])  # q_b = 0.8, 0.9, 0.52, 0.9
    seg = HardTargetDiceLoss()
    w_b = torch.tensor([1.0, 1.0, 0.0, 1.0]).reshape(1, 1, 1, 4)
    w_a = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 1, 4)
    expected = seg(a, b.argmax(1, keepdim=True), w_b) + seg(b, a.argmax(1, keepdim=True), w_a)
    torch.testing.assert_close(CPSLoss(confidence=0.65)(a, b), expected)
    assert float(CPSLoss(confidence=0.65)(a, b)) != pytest.approx(float(CPSLoss()(a, b)), abs=1e-3)
    w_b_conf, w_a_conf = w_b * torch.tensor([0.8, 0.9, 0.52, 0.9]), w_a * torch.tensor([0.95, 0.6, 0.7, 0.55])
    expected = seg(a, b.argmax(1, keepdim=True), w_b_conf.reshape(1, 1, 1, 4)) + seg(
        b, a.argmax(1, keepdim=True), w_a_conf.reshape(1, 1, 1, 4))
    torch.testing.assert_close(CPSLoss(confidence=0.65, weighting="confidence")(a, b), expected)

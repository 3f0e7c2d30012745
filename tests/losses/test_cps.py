"""Tests for ``custom_components.losses.cps`` (METHOD.md, "Notation" and "CPS"): ``Dice(P, target)`` is soft
multi-class Dice on softmax probabilities averaged over all classes, against a hard target that never carries
gradient; ``L_cps = Dice(P_S, argmax P_T) + Dice(P_T, argmax P_S)``."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss

from custom_components.losses.cps import CPSLoss, HardTargetDiceLoss, hard_labels

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

"""Segmentation losses of METHOD.md: soft multi-class Dice against hard targets, and cross pseudo-supervision."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.losses import DiceCELoss, DiceLoss

__all__ = ["CPSLoss", "HardTargetDiceLoss", "hard_labels"]


def hard_labels(logits: torch.Tensor) -> torch.Tensor:
    """``argmax`` over classes as a ``(B, 1, *spatial)`` label map that carries no gradient.

    Args:
        logits: ``(B, K, *spatial)`` logits or probabilities.
    """
    return logits.detach().argmax(1, keepdim=True)


class HardTargetDiceLoss(nn.Module):
    """``Dice(P, target)`` of METHOD.md: soft Dice on softmax probabilities, averaged over all classes
    (background included), against a hard label map; optionally plus cross-entropy.

    This is MONAI's ``DiceLoss`` / ``DiceCELoss`` with ``softmax=True, to_onehot_y=True,
    include_background=True``; the target is always detached.

    Args:
        use_ce: add cross-entropy (``DiceCELoss``) to the Dice term.
        smooth_nr: Dice numerator smoothing.
        smooth_dr: Dice denominator smoothing.
        batch: compute Dice over the whole batch rather than per sample.
    """

    def __init__(self, use_ce: bool = False, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 batch: bool = False) -> None:
        super().__init__()
        kw = dict(include_background=True, to_onehot_y=True, softmax=True, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                  batch=batch)
        self.loss = DiceCELoss(**kw) if use_ce else DiceLoss(**kw)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` ``(B, K, *spatial)`` against integer labels ``(B, 1, *spatial)``.

        Args:
            logits: network output (logits).
            target: hard labels; detached here.

        Raises:
            ValueError: when the target's spatial shape differs from the logits'.
        """
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        if target.shape[2:] != logits.shape[2:]:
            raise ValueError(f"target spatial shape {tuple(target.shape[2:])} differs from logits "
                             f"{tuple(logits.shape[2:])}.")
        return self.loss(logits.float(), target.detach().long())


class CPSLoss(nn.Module):
    """Cross pseudo-supervision: ``Dice(P_S, argmax P_T) + Dice(P_T, argmax P_S)``.

    Args:
        seg_loss: the loss against hard targets (default: ``HardTargetDiceLoss()``).
    """

    def __init__(self, seg_loss: nn.Module | None = None) -> None:
        super().__init__()
        self.seg_loss = seg_loss or HardTargetDiceLoss()

    def forward(self, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        """CPS between two networks' logits on the same images.

        Args:
            logits_a: first network's logits ``(B, K, *spatial)``.
            logits_b: second network's logits, same shape.
        """
        return self.seg_loss(logits_a, hard_labels(logits_b)) + self.seg_loss(logits_b, hard_labels(logits_a))

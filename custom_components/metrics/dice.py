"""Dice of hard masks: the one implementation every caller uses, with the empty case an explicit argument.

``Dice = 2 |P & R| / (|P| + |R|)``; when prediction and reference are both empty the ratio is undefined and each
caller states what it means by passing ``empty``:

- model selection (``DualNetworkEvaluator``), the phase-1 probe Dice and the benchmark's agreement score pass
  ``1.0``: an empty prediction of an empty reference is a correct answer and must count in the mean that picks
  a network or a threshold (``NaN`` would drop the case, so a threshold that empties it would cost nothing);
  with more than one foreground class, selection passes ``NaN`` per class and averages the classes a case holds
  or predicts, as the test report does: a free 1.0 for every case without a rare class would favour the
  network that never predicts it;
- the test report (``compute_case_metrics``) passes ``NaN``: the case is flagged ``empty_both`` and left out of
  mean and std, as the protocols document (``EMPTY_CASES_DOC``).

Exactly one empty side always gives 0. MONAI's ``compute_dice`` is not used here because its
``ignore_empty=True`` also turns "empty reference, non-empty prediction" into NaN, which the report scores 0.
"""

from __future__ import annotations

import torch

__all__ = ["dice_from_counts", "label_dice", "mask_dice"]


def dice_from_counts(inter, n_pred, n_ref, empty: float):
    """``2 inter / (n_pred + n_ref)``, and ``empty`` where ``n_pred + n_ref == 0``.

    Args:
        inter: overlap counts (a number or a tensor).
        n_pred: predicted counts, same type and shape.
        n_ref: reference counts, same type and shape.
        empty: the value when prediction and reference are both empty (``1.0`` or ``float("nan")``).

    Returns:
        A float for numbers, a float64 tensor for tensors.
    """
    if isinstance(inter, torch.Tensor):
        denom = (n_pred + n_ref).double()
        return torch.where(denom > 0, 2 * inter.double() / denom.clamp_min(1), torch.full_like(denom, float(empty)))
    denom = n_pred + n_ref
    return float(empty) if denom == 0 else 2.0 * float(inter) / float(denom)


def mask_dice(pred: torch.Tensor, ref: torch.Tensor, empty: float) -> torch.Tensor:
    """Per-sample Dice of boolean masks ``(B, ...)``: shape ``(B,)``, float64.

    Args:
        pred: predicted masks (bool), batch first.
        ref: reference masks (bool), same shape.
        empty: the value when both masks of a sample are empty.

    Raises:
        ValueError: when the shapes differ.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"mask_dice: prediction shape {tuple(pred.shape)} differs from reference {tuple(ref.shape)}.")
    p, r = pred.flatten(1).bool(), ref.flatten(1).bool()
    return dice_from_counts((p & r).sum(1), p.sum(1), r.sum(1), empty)


def label_dice(
    pred: torch.Tensor, ref: torch.Tensor, num_classes: int, empty: float, include_background: bool = False
) -> torch.Tensor:
    """Per-sample, per-class Dice of hard label maps ``(B, 1, *spatial)`` or ``(B, *spatial)``: shape
    ``(B, num_classes)`` with background, ``(B, num_classes - 1)`` without.

    Args:
        pred: predicted class indices.
        ref: reference class indices, same shape.
        num_classes: number of classes ``K`` including background.
        empty: the value when a class is absent from both maps of a sample.
        include_background: also score class 0.
    """
    first = 0 if include_background else 1
    return torch.stack([mask_dice(pred == c, ref == c, empty) for c in range(first, num_classes)], 1)

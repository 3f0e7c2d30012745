"""Segmentation losses of METHOD.md: soft multi-class Dice against hard targets, and cross pseudo-supervision.

The pseudo-label safeguard of issue 25 (off by default: the paper's hard ``argmax`` targets on every pixel) lives
here too: :func:`pseudo_labels` turns a network's logits into the ``argmax`` target plus a per-pixel weight
(pixels whose source probability is under ``confidence`` get weight 0; ``weighting="confidence"`` weights the others
by that probability), and :class:`HardTargetDiceLoss` takes the weight.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss

__all__ = ["PSEUDO_WEIGHTINGS", "CPSLoss", "HardTargetDiceLoss", "check_pseudo_settings", "hard_labels",
           "pseudo_labels", "weighted_loss"]

#: per-pixel weighting of pseudo-supervised pixels (``pseudo_weighting``): ``hard`` = 1 (the paper), ``confidence``
#: = the pseudo-label source's probability of its argmax class
PSEUDO_WEIGHTINGS = ("hard", "confidence")


def hard_labels(logits: torch.Tensor) -> torch.Tensor:
    """``argmax`` over classes as a ``(B, 1, *spatial)`` label map that carries no gradient.

    Args:
        logits: ``(B, K, *spatial)`` logits or probabilities.
    """
    return logits.detach().argmax(1, keepdim=True)


def check_pseudo_settings(confidence: float, weighting: str) -> None:
    """Raise ``ValueError`` unless ``confidence`` is in [0, 1) and ``weighting`` one of :data:`PSEUDO_WEIGHTINGS`."""
    if not 0.0 <= float(confidence) < 1.0:
        raise ValueError(f"pseudo_confidence must be in [0, 1), got {confidence}.")
    if weighting not in PSEUDO_WEIGHTINGS:
        raise ValueError(f"pseudo_weighting must be one of {list(PSEUDO_WEIGHTINGS)}, got {weighting!r}.")


def pseudo_labels(logits: torch.Tensor, confidence: float = 0.0,
                  weighting: str = "hard") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pseudo-labels of a source network and their per-pixel weights (both without gradient).

    With ``q = max_c softmax(logits)_c`` (the source's probability of its own argmax class) the weight is
    ``w = [q >= confidence] * (q if weighting == "confidence" else 1)``: pixels under the threshold contribute
    nothing. ``confidence = 0`` and ``weighting = "hard"`` (the paper) return ``None`` as the weight, so the loss
    runs exactly its unweighted path.

    Args:
        logits: ``(B, K, *spatial)`` logits of the network that provides the targets.
        confidence: the threshold in [0, 1) (0: every pixel kept).
        weighting: ``"hard"`` or ``"confidence"``.

    Returns:
        ``(labels (B, 1, *spatial) long, weight (B, 1, *spatial) float or None)``.
    """
    check_pseudo_settings(confidence, weighting)
    labels = hard_labels(logits)
    if confidence <= 0 and weighting == "hard":
        return labels, None
    q = logits.detach().float().softmax(1).amax(1, keepdim=True)
    w = (q >= confidence).float()
    return labels, w * q if weighting == "confidence" else w


class HardTargetDiceLoss(nn.Module):
    """``Dice(P, target)`` of METHOD.md: soft Dice on softmax probabilities, averaged over all classes
    (background included), against a hard label map; optionally plus cross-entropy.

    This is MONAI's ``DiceLoss`` / ``DiceCELoss`` with ``softmax=True, to_onehot_y=True,
    include_background=True``; the target is always detached.

    With a per-pixel ``weight`` (the pseudo-label safeguard, :func:`pseudo_labels`) every sum of the Dice carries
    it, ``1 - (2 sum(w p_c t_c) + s_nr) / (sum(w p_c) + sum(w t_c) + s_dr)`` per sample (or batch) and class,
    averaged, so pixels of weight 0 drop out of numerator and denominator (Dice is a ratio of sums over the kept
    pixels; a sample with no kept pixel scores 0); the CE term is ``sum(w ce) / (number of pixels with w > 0)``.
    With ``w = 1`` everywhere both equal the unweighted MONAI losses.

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
        self.use_ce, self.smooth_nr, self.smooth_dr, self.batch = use_ce, smooth_nr, smooth_dr, batch

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ``logits`` ``(B, K, *spatial)`` against integer labels ``(B, 1, *spatial)``.

        Args:
            logits: network output (logits).
            target: hard labels; detached here.
            weight: optional per-pixel weights ``(B, 1, *spatial)`` in [0, 1] (detached here); ``None``: every pixel
                counts once (MONAI's loss).

        Raises:
            ValueError: when the target's (or weight's) spatial shape differs from the logits'.
        """
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        if target.shape[2:] != logits.shape[2:]:
            raise ValueError(f"target spatial shape {tuple(target.shape[2:])} differs from logits "
                             f"{tuple(logits.shape[2:])}.")
        if weight is None:
            return self.loss(logits.float(), target.detach().long())
        if weight.shape[2:] != logits.shape[2:]:
            raise ValueError(f"weight spatial shape {tuple(weight.shape[2:])} differs from logits "
                             f"{tuple(logits.shape[2:])}.")
        logits, t, w = logits.float(), target.detach().long()[:, 0], weight.detach().float()
        p = logits.softmax(1)
        oh = F.one_hot(t, logits.shape[1]).movedim(-1, 1).float()
        dims = [*([0] if self.batch else []), *range(2, logits.ndim)]
        inter = (w * p * oh).sum(dims)
        den = (w * p).sum(dims) + (w * oh).sum(dims)
        loss = (1 - (2 * inter + self.smooth_nr) / (den + self.smooth_dr)).mean()
        if self.use_ce:
            ce = F.cross_entropy(logits, t, reduction="none").unsqueeze(1)
            loss = loss + (w * ce).sum() / (w > 0).sum().clamp_min(1)
        return loss


def weighted_loss(loss: nn.Module, logits: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None) -> torch.Tensor:
    """``loss(logits, target)``, with ``weight`` passed only when there is one (any loss works when it is off)."""
    return loss(logits, target) if weight is None else loss(logits, target, weight)


class CPSLoss(nn.Module):
    """Cross pseudo-supervision: ``Dice(P_S, argmax P_T) + Dice(P_T, argmax P_S)``.

    ``confidence`` / ``weighting`` (off by default) weight each direction's pixels by its source's confidence
    (:func:`pseudo_labels`): the first term by ``P_T``'s, the second by ``P_S``'s.

    Args:
        seg_loss: the loss against hard targets (default: ``HardTargetDiceLoss()``); with the safeguard on it must
            take a ``weight`` (as ``HardTargetDiceLoss`` does).
        confidence: pseudo-label threshold in [0, 1) (0: off).
        weighting: ``"hard"`` (the paper) or ``"confidence"``.
    """

    def __init__(self, seg_loss: nn.Module | None = None, confidence: float = 0.0, weighting: str = "hard") -> None:
        super().__init__()
        check_pseudo_settings(confidence, weighting)
        self.seg_loss = seg_loss or HardTargetDiceLoss()
        self.confidence = float(confidence)
        self.weighting = weighting

    def forward(self, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        """CPS between two networks' logits on the same images.

        Args:
            logits_a: first network's logits ``(B, K, *spatial)``.
            logits_b: second network's logits, same shape.
        """
        target_a, w_a = pseudo_labels(logits_b, self.confidence, self.weighting)
        target_b, w_b = pseudo_labels(logits_a, self.confidence, self.weighting)
        return (weighted_loss(self.seg_loss, logits_a, target_a, w_a)
                + weighted_loss(self.seg_loss, logits_b, target_b, w_b))

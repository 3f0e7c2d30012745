"""Class probabilities -> label map, with the binary foreground threshold chosen on validation."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor

__all__ = ["ThresholdForeground", "ThresholdForegroundd"]


class ThresholdForeground(Transform):
    """Channel-first probabilities ``(K, *spatial)`` -> one-channel label map ``(1, *spatial)``.

    Binary (``K = 2``): foreground where ``p[1] >= threshold`` (the rule of the validation sweep,
    ``engines.selection.dice_per_threshold``); ``threshold = 0.5`` is plain argmax up to exact ties.
    Multi-class: argmax (the threshold is not used). The probabilities themselves are never changed, so
    uncertainty computed from them before this transform reflects the network.

    Args:
        threshold: the binary foreground threshold, in (0, 1).
    """

    def __init__(self, threshold: float = 0.5) -> None:
        threshold = float(threshold)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}.")
        self.threshold = threshold

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        """Args:
        probs: ``(K, *spatial)`` probabilities (K >= 2).
        """
        p = convert_to_tensor(probs, track_meta=True)
        if p.shape[0] < 2:
            raise ValueError(f"ThresholdForeground needs K >= 2 probability channels, got shape {tuple(p.shape)}.")
        if p.shape[0] == 2:
            return (p[1:2] >= self.threshold).to(p.dtype)
        return p.argmax(0, keepdim=True).to(p.dtype)


class ThresholdForegroundd(MapTransform):
    """Dictionary wrapper of :class:`ThresholdForeground` (in place on each key).

    Args:
        keys: probability keys.
        threshold: the binary foreground threshold.
        allow_missing_keys: skip missing keys.
    """

    def __init__(self, keys: KeysCollection, threshold: float = 0.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ThresholdForeground(threshold)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d

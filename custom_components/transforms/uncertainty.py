"""Per-voxel uncertainty from class probabilities, as MONAI transforms."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor

from ..networks.teacher import normalized_entropy

__all__ = ["PredictiveEntropy", "PredictiveEntropyd"]


class PredictiveEntropy(Transform):
    """Normalised predictive entropy ``-sum_k p_k log p_k / log K`` of channel-first probabilities: a
    one-channel map in [0, 1] (0 = certain, 1 = uniform). For an ensemble, pass the mean probabilities.
    """

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        """Args:
        probs: ``(K, *spatial)`` probabilities (K >= 2).
        """
        p = convert_to_tensor(probs, track_meta=True).float()
        if p.shape[0] < 2:
            raise ValueError(f"PredictiveEntropy needs K >= 2 probability channels, got shape {tuple(p.shape)}.")
        return normalized_entropy(p, dim=0)


class PredictiveEntropyd(MapTransform):
    """Dictionary wrapper of :class:`PredictiveEntropy`: ``data[output_key] = entropy(data[key])``.

    Args:
        keys: the probability key (one key).
        output_key: where to write the uncertainty map.
        allow_missing_keys: skip missing keys.
    """

    def __init__(self, keys: KeysCollection, output_key: str = "uncertainty", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.entropy = PredictiveEntropy()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.entropy(d[key])
        return d

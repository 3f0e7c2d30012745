"""The pseudo-label confidence score of phase 3: :class:`ConfidenceScore` / :class:`ConfidenceScored`.

One per-image confidence score from channel-first probabilities ``(K, *spatial)`` (the pseudolabel bundle ranks
its pseudo-labels by it); not random.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor

__all__ = [
    "CONFIDENCE_MODES",
    "ConfidenceScore",
    "ConfidenceScored",
]

#: the per-image confidence scores :class:`ConfidenceScore` computes
CONFIDENCE_MODES = ("foreground_max_prob", "mean_max_prob", "one_minus_entropy")


def _probs(x: Any, name: str) -> torch.Tensor:
    p = convert_to_tensor(x, track_meta=False).float()
    if p.ndim < 3 or p.shape[0] < 2:
        raise ValueError(f"{name}: expected channel-first probabilities (K >= 2, *spatial) with 2 or 3 spatial axes, "
                         f"got shape {tuple(p.shape)}.")
    return p


class ConfidenceScore(Transform):
    """A per-image confidence score in [0, 1] from class probabilities ``(K, *spatial)``.

    Modes:

    - ``foreground_max_prob`` (default): mean of ``max_k p_k`` over the voxels predicted as foreground
      (``argmax != 0``); over the whole image when nothing is predicted as foreground. It measures how sure the
      model is of the structure it segmented, undiluted by the (usually large, easy) background.
    - ``mean_max_prob``: mean of ``max_k p_k`` over all voxels.
    - ``one_minus_entropy``: ``1 - mean`` normalised predictive entropy over all voxels.

    ``max_k p_k`` lies in ``[1/K, 1]``; the score is therefore at least ``1/K`` for the max-prob modes.

    Args:
        mode: one of :data:`CONFIDENCE_MODES`.

    Raises:
        ValueError: for an unknown ``mode``.
    """

    def __init__(self, mode: str = "foreground_max_prob") -> None:
        if mode not in CONFIDENCE_MODES:
            raise ValueError(f"ConfidenceScore: mode must be one of {CONFIDENCE_MODES}, got {mode!r}.")
        self.mode = mode

    def __call__(self, probs: torch.Tensor | np.ndarray) -> float:
        """Return the score of one image.

        Args:
            probs: channel-first class probabilities ``(K, *spatial)``.
        """
        p = _probs(probs, "ConfidenceScore")
        if self.mode == "one_minus_entropy":
            ent = -(p * p.clamp_min(1e-8).log()).sum(0) / float(np.log(p.shape[0]))
            return float(1.0 - ent.mean())
        pmax, arg = p.max(0)
        if self.mode == "foreground_max_prob":
            fg = arg != 0
            if bool(fg.any()):
                return float(pmax[fg].mean())
        return float(pmax.mean())


class ConfidenceScored(MapTransform):
    """Dictionary wrapper of :class:`ConfidenceScore`: ``data[output_key] = score(data[key])`` (a Python float).

    Args:
        keys: the probability key (one key).
        output_key: where to write the score.
        mode: one of :data:`CONFIDENCE_MODES`.
        allow_missing_keys: skip missing keys.
    """

    def __init__(
        self, keys: KeysCollection = "pred", output_key: str = "confidence", mode: str = "foreground_max_prob",
        allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.scorer = ConfidenceScore(mode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Args:
        data: sample dictionary.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.scorer(d[key])
        return d

"""Pseudo-label transforms (phase 3 output, reusable when pseudo-labels feed phase 2).

Each is an array transform wrapped by a dictionary transform; none is random. Conventions: probabilities are
channel-first ``(K, *spatial)``; labels are class-index maps ``(1, *spatial)``; the uncertainty map is the
one-channel normalised predictive entropy in [0, 1]
(:class:`~custom_components.transforms.uncertainty.PredictiveEntropy`);
"ignored" voxels carry ``ignore_value`` (default ``-1``, what the project's losses skip).

- :class:`ConfidenceScore` / :class:`ConfidenceScored`: one per-image confidence score from the probabilities.
- :class:`ConfidenceThreshold` / :class:`ConfidenceThresholdd`: per image, flag (or drop: set the whole label to
  ``ignore_value``) pseudo-labels whose score is below a threshold.
- :class:`MaskUncertain` / :class:`MaskUncertaind`: per voxel, set uncertain voxels to ``ignore_value``.
- :class:`LabelToOneHot` / :class:`OneHotToLabel` (+ ``d`` versions): one-hot <-> class index that keep ignored
  voxels (all-zero one-hot <-> ``ignore_value``). Without ignored voxels MONAI's ``AsDiscreted(to_onehot=K)`` and
  ``AsDiscreted(argmax=True)`` do the same and should be preferred.
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
    "ConfidenceThreshold",
    "ConfidenceThresholdd",
    "LabelToOneHot",
    "LabelToOneHotd",
    "MaskUncertain",
    "MaskUncertaind",
    "OneHotToLabel",
    "OneHotToLabeld",
]

#: the per-image confidence scores :class:`ConfidenceScore` computes
CONFIDENCE_MODES = ("foreground_max_prob", "mean_max_prob", "one_minus_entropy")


def _probs(x: Any, name: str) -> torch.Tensor:
    p = convert_to_tensor(x, track_meta=False).float()
    if p.ndim < 3 or p.shape[0] < 2:
        raise ValueError(f"{name}: expected channel-first probabilities (K >= 2, *spatial) with 2 or 3 spatial axes, "
                         f"got shape {tuple(p.shape)}.")
    return p


def _check_same_spatial(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise ValueError(f"{name}: spatial shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}.")


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


class ConfidenceThreshold(Transform):
    """Per image: keep a pseudo-label whose score is ``>= threshold``; otherwise return it fully ignored.

    Args:
        threshold: the minimal score.
        ignore_value: the value of every voxel of a dropped label.

    Raises:
        ValueError: for a ``threshold`` outside [0, 1].
    """

    def __init__(self, threshold: float, ignore_value: float = -1) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"ConfidenceThreshold: threshold must be in [0, 1], got {threshold}.")
        self.threshold = float(threshold)
        self.ignore_value = ignore_value

    def is_confident(self, score: float | torch.Tensor | np.ndarray) -> bool:
        """Whether ``score`` passes the threshold.

        Args:
            score: a scalar score.

        Raises:
            ValueError: for a non-finite score.
        """
        s = float(np.asarray(convert_to_tensor(score, track_meta=False).detach().cpu(),
                             dtype=np.float64).reshape(-1)[0])
        if not np.isfinite(s):
            raise ValueError(f"ConfidenceThreshold: the score must be finite, got {s}.")
        return s >= self.threshold

    def __call__(self, label: torch.Tensor | np.ndarray, score: float | torch.Tensor) -> torch.Tensor | np.ndarray:
        """Return ``label`` unchanged if confident, else a copy filled with ``ignore_value``.

        Args:
            label: the pseudo-label (any shape; class indices or one-hot).
            score: the image's confidence score.
        """
        if self.is_confident(score):
            return label
        out = label.clone() if isinstance(label, torch.Tensor) else np.array(label, copy=True)
        if isinstance(out, torch.Tensor) and not (
                out.is_floating_point() or out.dtype in (torch.int8, torch.int16, torch.int32, torch.int64)):
            out = out.long()  # unsigned / bool labels cannot hold a negative ignore value
        elif isinstance(out, np.ndarray) and out.dtype.kind in "ub":
            out = out.astype(np.int64)
        out[...] = self.ignore_value
        return out


class ConfidenceThresholdd(MapTransform):
    """Dictionary wrapper of :class:`ConfidenceThreshold` reading the score from ``data[score_key]``.

    ``mode="flag"`` leaves the label and writes ``data[flag_key] = score >= threshold``; ``mode="drop"`` also
    replaces a below-threshold label by ``ignore_value`` everywhere, so the image contributes nothing to a
    supervised loss while the batch still collates. A sample without ``score_key`` (a human label) counts as
    confident.

    Args:
        keys: the label key(s).
        threshold: the minimal score.
        score_key: the key holding the per-image score (``score`` in ``pseudolabels.json`` entries).
        mode: ``"flag"`` or ``"drop"``.
        flag_key: where to write the boolean flag.
        ignore_value: value of a dropped label.
        allow_missing_keys: skip missing label keys.

    Raises:
        ValueError: for a ``mode`` other than ``flag`` / ``drop``.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        threshold: float = 0.9,
        score_key: str = "score",
        mode: str = "flag",
        flag_key: str = "confident",
        ignore_value: float = -1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if mode not in ("flag", "drop"):
            raise ValueError(f"ConfidenceThresholdd: mode must be 'flag' or 'drop', got {mode!r}.")
        self.thresholder = ConfidenceThreshold(threshold, ignore_value)
        self.score_key = score_key
        self.mode = mode
        self.flag_key = flag_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Args:
        data: sample dictionary.
        """
        d = dict(data)
        score = d.get(self.score_key)
        confident = True if score is None else self.thresholder.is_confident(score)
        d[self.flag_key] = confident
        if self.mode == "drop" and not confident:
            for key in self.key_iterator(d):
                d[key] = self.thresholder(d[key], score)
        return d


class MaskUncertain(Transform):
    """Per voxel: set the label to ``ignore_value`` where the prediction is uncertain.

    ``criterion="uncertainty"``: the reference is the uncertainty map ``(1, *spatial)`` and a voxel is uncertain
    where ``uncertainty > threshold``. ``criterion="max_prob"``: the reference is the probabilities
    ``(K, *spatial)`` and a voxel is uncertain where ``max_k p_k < threshold``.

    Args:
        threshold: ``tau``.
        criterion: ``"uncertainty"`` or ``"max_prob"``.
        ignore_value: the value written into uncertain voxels.

    Raises:
        ValueError: for an unknown ``criterion`` or a ``threshold`` outside [0, 1].
    """

    def __init__(self, threshold: float, criterion: str = "uncertainty", ignore_value: float = -1) -> None:
        if criterion not in ("uncertainty", "max_prob"):
            raise ValueError(f"MaskUncertain: criterion must be 'uncertainty' or 'max_prob', got {criterion!r}.")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"MaskUncertain: threshold must be in [0, 1], got {threshold}.")
        self.threshold = float(threshold)
        self.criterion = criterion
        self.ignore_value = ignore_value

    def uncertain(self, reference: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The boolean map ``(1, *spatial)`` of uncertain voxels.

        Args:
            reference: uncertainty map ``(1, *spatial)`` or probabilities ``(K, *spatial)`` (see ``criterion``).

        Raises:
            ValueError: when the uncertainty map has more than one channel.
        """
        ref = convert_to_tensor(reference, track_meta=False).float()
        if self.criterion == "uncertainty":
            if ref.shape[0] != 1:
                raise ValueError("MaskUncertain: the uncertainty map must have one channel, got shape "
                                 f"{tuple(ref.shape)}.")
            return ref > self.threshold
        ref = _probs(ref, "MaskUncertain")
        return ref.max(0, keepdim=True).values < self.threshold

    def __call__(self, label: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Return a copy of ``label`` (``(1, *spatial)`` class indices) with uncertain voxels ignored.

        Args:
            label: the pseudo-label.
            reference: uncertainty map or probabilities (see ``criterion``).
        """
        lab = convert_to_tensor(label, track_meta=True)
        mask = self.uncertain(reference).to(lab.device)
        if lab.shape[0] != 1:
            raise ValueError("MaskUncertain: the label must be a one-channel class-index map, got shape "
                             f"{tuple(lab.shape)}.")
        _check_same_spatial(lab, mask, "MaskUncertain")
        out = lab.clone()
        if not out.is_floating_point() and out.dtype == torch.uint8:
            out = out.long()
        out[mask] = self.ignore_value
        return out


class MaskUncertaind(MapTransform):
    """Dictionary wrapper of :class:`MaskUncertain`: mask ``data[key]`` using ``data[ref_key]``.

    Args:
        keys: the label key(s).
        ref_key: the uncertainty (or probability) key.
        threshold: ``tau``.
        criterion: ``"uncertainty"`` or ``"max_prob"``.
        ignore_value: the value written into uncertain voxels.
        allow_missing_keys: skip missing label keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        ref_key: str = "uncertainty",
        threshold: float = 0.5,
        criterion: str = "uncertainty",
        ignore_value: float = -1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.masker = MaskUncertain(threshold, criterion, ignore_value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Args:
        data: sample dictionary holding ``ref_key``.
        """
        d = dict(data)
        if self.ref_key not in d:
            raise KeyError(f"MaskUncertaind: reference key '{self.ref_key}' not in the data (keys {list(d)}).")
        for key in self.key_iterator(d):
            d[key] = self.masker(d[key], d[self.ref_key])
        return d


class LabelToOneHot(Transform):
    """Class-index map ``(1, *spatial)`` -> one-hot ``(K, *spatial)`` float; ignored voxels become all-zero.

    Args:
        num_classes: ``K``.
        ignore_value: the index of ignored voxels (``None``: every value must lie in ``[0, K)``).

    Raises:
        ValueError: for ``num_classes < 2``.
    """

    def __init__(self, num_classes: int, ignore_value: float | None = -1) -> None:
        if num_classes < 2:
            raise ValueError(f"LabelToOneHot: num_classes must be >= 2, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.ignore_value = ignore_value

    def __call__(self, label: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Args:
        label: class indices ``(1, *spatial)``.
        """
        lab = convert_to_tensor(label, track_meta=True)
        if lab.shape[0] != 1:
            raise ValueError("LabelToOneHot: expected a one-channel class-index map (1, *spatial), got shape "
                             f"{tuple(lab.shape)}.")
        idx = lab[0].round().long() if lab.is_floating_point() else lab[0].long()
        ignored = (idx == int(self.ignore_value) if self.ignore_value is not None
                   else torch.zeros_like(idx, dtype=torch.bool))
        bad = (~ignored) & ((idx < 0) | (idx >= self.num_classes))
        if bool(bad.any()):
            raise ValueError(f"LabelToOneHot: label values {sorted(set(idx[bad].unique().tolist()))[:5]} outside [0, "
                             f"{self.num_classes}) (ignore_value={self.ignore_value}).")
        onehot = torch.nn.functional.one_hot(idx.clamp(0, self.num_classes - 1),
                                             self.num_classes).movedim(-1, 0).float()
        onehot[:, ignored] = 0.0
        if hasattr(lab, "meta"):
            from monai.data import MetaTensor

            return MetaTensor(onehot, meta=dict(lab.meta), applied_operations=list(lab.applied_operations))
        return onehot


class OneHotToLabel(Transform):
    """One-hot or probabilities ``(K, *spatial)`` -> class indices ``(1, *spatial)`` (argmax); voxels whose
    channels are all zero become ``ignore_value``.

    Args:
        ignore_value: the index of all-zero voxels (``None``: plain argmax).
        dtype: the output dtype.
    """

    def __init__(self, ignore_value: float | None = -1, dtype: torch.dtype = torch.int64) -> None:
        self.ignore_value = ignore_value
        self.dtype = dtype

    def __call__(self, onehot: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Args:
        onehot: ``(K, *spatial)`` one-hot or probabilities.
        """
        x = convert_to_tensor(onehot, track_meta=True)
        _probs(x, "OneHotToLabel")
        out = x.argmax(0, keepdim=True)
        if self.ignore_value is not None:
            out = out.to(self.dtype)
            out[(x == 0).all(0, keepdim=True)] = int(self.ignore_value)
        return out.to(self.dtype)


class LabelToOneHotd(MapTransform):
    """Dictionary wrapper of :class:`LabelToOneHot`.

    Args:
        keys: label key(s).
        num_classes: ``K``.
        ignore_value: the index of ignored voxels.
        allow_missing_keys: skip missing keys.
    """

    def __init__(self, keys: KeysCollection, num_classes: int, ignore_value: float | None = -1,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelToOneHot(num_classes, ignore_value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Args:
        data: sample dictionary.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class OneHotToLabeld(MapTransform):
    """Dictionary wrapper of :class:`OneHotToLabel`.

    Args:
        keys: one-hot key(s).
        ignore_value: the index of all-zero voxels.
        dtype: the output dtype.
        allow_missing_keys: skip missing keys.
    """

    def __init__(
        self, keys: KeysCollection, ignore_value: float | None = -1, dtype: torch.dtype = torch.int64,
        allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = OneHotToLabel(ignore_value, dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Args:
        data: sample dictionary.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d

"""Label transforms: give unlabelled samples a placeholder label so they collate with labelled ones."""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

__all__ = ["FillMissingLabel", "FillMissingLabeld", "FillMissingLabelD", "FillMissingLabelDict"]


class FillMissingLabel(Transform):
    """Make a one-channel label of an image's spatial shape filled with ``fill_value``.

    The result is a ``MetaTensor`` carrying a copy of the image's meta data (affine, spacing, file name) and
    applied operations when the image is a ``MetaTensor``, so later spatial transforms and inverses treat it
    like a loaded label.

    Args:
        fill_value: value of every voxel (``-1`` = "no label", ignored by the losses).
        dtype: torch dtype of the result.
    """

    def __init__(self, fill_value: float = -1, dtype: torch.dtype = torch.float32) -> None:
        self.fill_value = fill_value
        self.dtype = dtype

    def __call__(self, img: torch.Tensor | np.ndarray) -> MetaTensor:
        """Return the placeholder label for a channel-first image ``(C, *spatial)``.

        Args:
            img: channel-first image.
        """
        if img.ndim < 2:
            raise ValueError("FillMissingLabel expects a channel-first image (C, *spatial), got shape "
                             f"{tuple(img.shape)}.")
        out = torch.full((1, *img.shape[1:]), self.fill_value, dtype=self.dtype)
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=copy.deepcopy(img.meta),
                              applied_operations=copy.deepcopy(img.applied_operations))
        return MetaTensor(out)


class FillMissingLabeld(MapTransform):
    """Dictionary wrapper of :class:`FillMissingLabel`: add a label filled with ``fill_value`` where none exists.

    A dictionary whose ``keys`` entry is absent or None (an unlabelled image) gets a label of the ``ref_key``
    image's spatial shape; present labels are left untouched (same object).

    Args:
        keys: label key(s) to fill when missing.
        ref_key: key of the channel-first image giving the spatial shape and meta data.
        fill_value: value of the placeholder label.
        dtype: torch dtype of the placeholder label.
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        ref_key: str = "image",
        fill_value: float = -1,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.ref_key = ref_key
        self.filler = FillMissingLabel(fill_value=fill_value, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Fill the missing labels of one sample.

        Args:
            data: sample dictionary holding ``ref_key``.
        """
        d = dict(data)
        if self.ref_key not in d:
            raise KeyError(f"FillMissingLabeld: reference key '{self.ref_key}' not in the data (keys {list(d)}).")
        for key in self.keys:
            if d.get(key) is None:
                d[key] = self.filler(d[self.ref_key])
        return d


FillMissingLabelD = FillMissingLabelDict = FillMissingLabeld

"""The ``la_uamt`` sliding-window inferer: the window geometry and probability averaging of the UA-MT LA test.

Geometry, per spatial axis of size ``n`` with window ``w`` and stride ``s``:

1. pad the volume with zeros to at least ``w`` (``(w - n) // 2`` before, the rest after);
2. windows start at ``0, s, 2s, ...``, ``ceil((n_padded - w) / s) + 1`` of them, each start clipped to
   ``n_padded - w`` so the last window ends on the border;
3. the network's output on every window goes through softmax (optional), probabilities are summed into a
   score map with a count map of how many windows covered each voxel, and the score map is divided by it;
4. the padding is cropped away.

The default window is 112x112x80 with strides 18/18/4 (UA-MT, DTC, MC-Net, BCP, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import product
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

__all__ = ["window_starts", "UAMTSlidingWindowInferer"]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start positions of the windows along one axis of (already padded) length ``size``.

    Args:
        size: axis length, at least ``window``.
        window: window length.
        stride: step between consecutive windows (> 0).

    Raises:
        ValueError: for a window or stride < 1, or an axis shorter than the window.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"inferers/uamt.py: window and stride must be >= 1, got {window} and {stride}.")
    if size < window:
        raise ValueError(f"inferers/uamt.py: axis length {size} is smaller than the window {window}; pad first.")
    count = math.ceil((size - window) / stride) + 1
    return [min(i * stride, size - window) for i in range(count)]


class UAMTSlidingWindowInferer(Inferer):
    """Sliding-window inference averaging softmax probabilities exactly as the UA-MT LA test code.

    Use it as a bundle's ``inferer``; it is dimension-agnostic (2D or 3D, ``len(roi_size)`` spatial axes).

    Args:
        roi_size: window size per spatial axis (default 112x112x80).
        strides: step per spatial axis (default 18/18/4).
        sw_batch_size: number of windows run through the network at once (does not change the result).
        apply_softmax: apply softmax over channels to each window's output before averaging (UA-MT); set
            ``False`` for networks that already return probabilities (e.g. ``MaskPathwaySegmenter``).
        sw_device: device the windows are run on (default: the input's device).
        device: device of the output score map (default: the input's device).
    """

    def __init__(
        self,
        roi_size: Sequence[int] = (112, 112, 80),
        strides: Sequence[int] = (18, 18, 4),
        sw_batch_size: int = 1,
        apply_softmax: bool = True,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.roi_size = tuple(int(r) for r in roi_size)
        self.strides = tuple(int(s) for s in strides)
        if len(self.roi_size) not in (2, 3) or len(self.strides) != len(self.roi_size):
            raise ValueError(
                f"inferers/uamt.py: roi_size and strides must both have 2 or 3 entries, got {tuple(roi_size)} "
                f"and {tuple(strides)}."
            )
        if min(self.roi_size) < 1 or min(self.strides) < 1:
            raise ValueError(
                f"inferers/uamt.py: roi_size and strides must be positive, got {self.roi_size} and {self.strides}."
            )
        if sw_batch_size < 1:
            raise ValueError(f"inferers/uamt.py: sw_batch_size must be >= 1, got {sw_batch_size}.")
        self.sw_batch_size = int(sw_batch_size)
        self.apply_softmax = bool(apply_softmax)
        self.sw_device = sw_device
        self.device = device

    def pad_sizes(self, spatial_shape: Sequence[int]) -> list[tuple[int, int]]:
        """``(before, after)`` zero padding per spatial axis that brings every axis to at least the window.

        Args:
            spatial_shape: spatial shape of the input.
        """
        pads = []
        for n, w in zip(spatial_shape, self.roi_size):
            total = max(w - int(n), 0)
            pads.append((total // 2, total - total // 2))
        return pads

    def window_slices(self, spatial_shape: Sequence[int]) -> list[tuple[slice, ...]]:
        """All windows of a padded input with this spatial shape, x outermost, as UA-MT's nested loops.

        Args:
            spatial_shape: spatial shape after padding.
        """
        starts = [window_starts(int(n), w, s) for n, w, s in zip(spatial_shape, self.roi_size, self.strides)]
        return [tuple(slice(p, p + w) for p, w in zip(pos, self.roi_size)) for pos in product(*starts)]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Averaged class probabilities of shape ``(B, K, *spatial)`` for ``inputs`` of shape ``(B, C, *spatial)``.

        Args:
            inputs: batch of images, channel first.
            network: callable mapping a batch of windows ``(N, C, *roi_size)`` to ``(N, K, *roi_size)``.
            args: extra positional arguments passed to ``network``.
            kwargs: extra keyword arguments passed to ``network``.
        """
        nd = len(self.roi_size)
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != nd + 2:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(
                f"inferers/uamt.py: inputs must be a tensor of shape (B, C, {nd} spatial axes) for roi_size "
                f"{self.roi_size}, got {shape}."
            )
        out_device = torch.device(self.device) if self.device is not None else inputs.device
        sw_device = torch.device(self.sw_device) if self.sw_device is not None else inputs.device
        spatial = tuple(inputs.shape[2:])
        pads = self.pad_sizes(spatial)
        flat_pad: list[int] = []
        for before, after in reversed(pads):  # F.pad wants the last axis first
            flat_pad += [before, after]
        x = F.pad(inputs, flat_pad, mode="constant", value=0.0) if any(flat_pad) else inputs
        padded = tuple(x.shape[2:])
        slices = self.window_slices(padded)
        batch = x.shape[0]
        score: torch.Tensor | None = None
        count = torch.zeros((1, 1, *padded), device=out_device, dtype=torch.float32)
        for i in range(0, len(slices), self.sw_batch_size):
            group = slices[i : i + self.sw_batch_size]
            windows = torch.cat([x[(slice(None), slice(None), *sl)] for sl in group]).to(sw_device)
            y = network(windows, *args, **kwargs)
            if not isinstance(y, torch.Tensor) or tuple(y.shape[2:]) != self.roi_size or y.shape[0] != windows.shape[0]:
                got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise ValueError(
                    f"inferers/uamt.py: the network must return a tensor of shape (N, K, *{self.roi_size}) for "
                    f"windows of shape {tuple(windows.shape)}, got {got}."
                )
            y = torch.softmax(y.float(), dim=1) if self.apply_softmax else y.float()
            y = y.to(out_device)
            if score is None:
                score = torch.zeros((batch, y.shape[1], *padded), device=out_device, dtype=torch.float32)
            for j, sl in enumerate(group):
                idx = (slice(None), slice(None), *sl)
                score[idx] += y[j * batch : (j + 1) * batch]
                count[idx] += 1.0
        assert score is not None
        score = score / count
        crop = tuple(slice(before, before + n) for (before, _), n in zip(pads, spatial))
        out = score[(slice(None), slice(None), *crop)]
        # keep the input's metadata (MetaTensor), as monai.inferers.sliding_window_inference does, for Invertd
        return convert_to_dst_type(out, inputs, device=out_device, dtype=out.dtype)[0]

"""The phase-1 monitoring probe: a 1x1 convolution on the mask pathway's output."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers import Conv

__all__ = ["ChannelProbe"]


class ChannelProbe(nn.Module):
    """A 1x1 convolution mapping the teacher's ``K`` unnamed channels to the ``K`` labelled classes.

    It only monitors phase 1 ("probe Dice"): it is trained on the labels that exist, on detached teacher
    outputs, and never changes the pathways.

    Args:
        spatial_dims: 2 or 3.
        num_classes: ``K``.
    """

    def __init__(self, spatial_dims: int, num_classes: int) -> None:
        super().__init__()
        self.conv = Conv[Conv.CONV, spatial_dims](num_classes, num_classes, kernel_size=1)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Probe logits from teacher logits.

        Args:
            logits: ``(B, K, *spatial)`` teacher logits.
        """
        return self.conv(logits)

"""Test stand-in for ``custom_components.networks.deployable.MaskPathwaySegmenter``: a tiny DiffusionModelUNet
called with ``concat[noised all-background mask, image]`` and a fixed ``t``, softmax output.

``noise_mode="generator"`` draws the noise in ``forward`` from a seeded ``torch.Generator`` at the input's shape
(as the deployable wrapper is described); ``noise_mode="buffer"`` keeps it in a registered buffer cropped to the
input's spatial shape (ONNX-exportable).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DiffusionModelUNet


class FakeMaskPathwaySegmenter(torch.nn.Module):
    """``image -> class probabilities`` through a tiny DiffusionModelUNet at a fixed seeded noise and timestep.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels C.
        num_classes: classes K.
        timestep: fixed diffusion step.
        seed: noise seed.
        noise_mode: ``generator`` or ``buffer``.
        max_shape: spatial size of the noise buffer (``buffer`` mode).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, timestep: int = 500,
                 seed: int = 0, noise_mode: str = "generator", max_shape: Sequence[int] = (32, 32, 32)) -> None:
        super().__init__()
        if noise_mode not in ("generator", "buffer"):
            raise ValueError(f"noise_mode must be 'generator' or 'buffer', got {noise_mode!r}")
        self.net = DiffusionModelUNet(spatial_dims=spatial_dims, in_channels=num_classes + in_channels,
                                      out_channels=num_classes, channels=(8, 8), attention_levels=(False, True),
                                      num_res_blocks=1, norm_num_groups=8, num_head_channels=8)
        abar = torch.cumprod(1.0 - torch.linspace(1e-4, 2e-2, 1000), 0)[timestep]
        self.a, self.b = float(abar.sqrt()), float((1 - abar).sqrt())
        self.num_classes, self.seed, self.noise_mode = num_classes, seed, noise_mode
        self.register_buffer("t", torch.tensor([timestep], dtype=torch.long), persistent=False)
        g = torch.Generator().manual_seed(seed)
        shape = (1, num_classes, *tuple(max_shape)[:spatial_dims])
        self.register_buffer("noise", torch.randn(shape, generator=g), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return softmax probabilities ``[N, K, *spatial]``.

        Args:
            x: image ``[N, C, *spatial]``.
        """
        shape = (x.shape[0], self.num_classes) + tuple(x.shape[2:])
        if self.noise_mode == "generator":
            g = torch.Generator(device=x.device).manual_seed(self.seed)
            eps = torch.randn(shape, generator=g, device=x.device, dtype=x.dtype)
        else:
            eps = self.noise
            for d in range(2, x.dim()):
                eps = eps.narrow(d, 0, x.shape[d])
            eps = eps.expand(shape)
        bg = torch.full(shape, -1.0, dtype=x.dtype, device=x.device)
        bg[:, 0] = 1.0
        mt = self.a * bg + self.b * eps
        return torch.softmax(self.net(torch.cat([mt, x], 1), self.t.expand(x.shape[0])), 1)

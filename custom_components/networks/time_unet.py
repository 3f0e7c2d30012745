"""``backbone: "fast"``: a time-conditioned UNet at the cost of MONAI's supervised ``UNet`` (issue 27).

MONAI's ``DiffusionModelUNet`` (the paper's backbone, ``backbone: "diffusion_unet"``) runs its first level at full
resolution with GroupNorms and time projections in every block; MONAI's ``UNet`` strides in its very first layer.
:class:`TimeConditionedUNet` is MONAI's ``UNet(num_res_units=2)`` layout, built from the same MONAI blocks
(``ResidualUnit`` down, transposed ``Convolution`` + ``ResidualUnit`` up, instance norm, PReLU), plus:

- the timestep: MONAI's sinusoidal ``get_timestep_embedding``, a two-layer MLP, and per level a linear projection
  to a scale and shift of that level's features (``h * (1 + scale) + shift``, zero-initialised: the identity at
  start), applied after every down and inner up block;
- an input skip: a 1x1 convolution of the input, scaled and shifted by the timestep like the levels, added to the
  output, so the full-resolution content of the input reaches the output past the strided first level (the image
  pathway's target, the noise, is mostly ``x_t`` itself times a ``t``-dependent factor at large ``t``).

The conditioning (mask and image by channel concatenation, done by the caller) and the call ``net(x, timesteps)``
are those of ``DiffusionModelUNet``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding

__all__ = ["BACKBONES", "TimeConditionedUNet"]

#: backbone ids of both diffusion pathways: ``DiffusionModelUNet`` (the paper's) and :class:`TimeConditionedUNet`
BACKBONES = ("diffusion_unet", "fast")


class _Level(nn.Module):
    """A MONAI block whose output is scaled and shifted per channel by the timestep embedding:
    ``h * (1 + scale(emb)) + shift(emb)``, the projection zero-initialised (the identity at start)."""

    def __init__(self, block: nn.Module, emb_dim: int, channels: int) -> None:
        super().__init__()
        self.block = block
        self.film = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block(h)
        e = self.film(emb).to(h.dtype)
        for _ in range(h.ndim - 2):
            e = e.unsqueeze(-1)
        c = h.shape[1]
        return h * (1 + e[:, :c]) + e[:, c:]


class TimeConditionedUNet(nn.Module):
    """MONAI's ``UNet(num_res_units)`` layout with a timestep embedding per level and an input skip.

    Resolutions as MONAI's ``UNet`` with ``strides=[2] * (len(channels) - 1)``: level ``i`` of ``channels[i]``
    features runs at ``1 / 2 ** (i + 1)`` of the input size, the last (bottom) level at the same size as the one
    before; so every spatial size must be a multiple of ``2 ** (len(channels) - 1)``, as for ``DiffusionModelUNet``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        channels: feature channels per level (at least 2 levels).
        num_res_units: convolutions per down block (MONAI's ``UNet`` ``num_res_units``; 2 as the supervised baseline).
        time_embed_dim: width of the timestep embedding (``None``: ``4 * channels[0]``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        num_res_units: int = 2,
        time_embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"TimeConditionedUNet needs at least 2 levels, got channels={list(channels)}.")
        if num_res_units < 1:
            raise ValueError(f"num_res_units must be >= 1, got {num_res_units}.")
        ch = [int(c) for c in channels]
        n, sd = len(ch), spatial_dims
        self.base_dim = ch[0]
        emb = time_embed_dim or 4 * ch[0]
        self.time_embed = nn.Sequential(nn.Linear(ch[0], emb), nn.SiLU(), nn.Linear(emb, emb))
        # down: level i maps ch[i - 1] (the input at i = 0) to ch[i], stride 2 except at the bottom
        ins = [in_channels, *ch[:-1]]
        self.down = nn.ModuleList(
            _Level(ResidualUnit(sd, ins[i], ch[i], strides=2 if i < n - 1 else 1, subunits=num_res_units), emb, ch[i])
            for i in range(n)
        )
        # up, deepest first: level i (n - 2 .. 0) takes concat[deeper output, skip of level i] up to ch[i - 1]
        # (out_channels at the top, whose residual unit ends with a bare convolution, as MONAI's UNet)
        self.up = nn.ModuleList()
        for i in range(n - 2, -1, -1):
            deeper = ch[i + 1] if i == n - 2 else ch[i]
            out = out_channels if i == 0 else ch[i - 1]
            block = nn.Sequential(
                Convolution(sd, deeper + ch[i], out, strides=2, is_transposed=True),
                ResidualUnit(sd, out, out, strides=1, subunits=1, last_conv_only=i == 0),
            )
            self.up.append(_Level(block, emb, out))
        self.input_skip = _Level(Convolution(sd, in_channels, out_channels, kernel_size=1, conv_only=True), emb,
                                 out_channels)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``net(x, timesteps)`` as ``DiffusionModelUNet``.

        Args:
            x: input ``(B, in_channels, *spatial)``.
            timesteps: ``(B,)`` integer timesteps.
        """
        emb = self.time_embed(get_timestep_embedding(timesteps, self.base_dim).to(x.dtype))
        skips: list[torch.Tensor] = []
        h = x
        for level in self.down:
            h = level(h, emb)
            skips.append(h)
        h = skips.pop()  # the bottom's output
        for level in self.up:
            h = level(torch.cat([h, skips.pop()], dim=1), emb)
        return h + self.input_skip(x, emb)

"""The diffusion teacher of METHOD.md: a mask pathway ``S`` (segmenter) and an image pathway ``G`` (reconstructor).

Both pathways are conditional denoising UNets conditioned by channel concatenation and on the timestep. The
noise schedule lives in a MONAI scheduler held next to the backbones: the backbones know nothing of it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from .noise import seeded_normal_like
from .time_unet import BACKBONES, TimeConditionedUNet

__all__ = [
    "DiffusionTeacher",
    "Reconstruction",
    "background_mask",
    "build_backbone",
    "check_spatial_size",
    "ddim_scheduler",
    "ddim_segment",
    "draw_noise",
    "make_noise",
    "segment_noised_background",
]


class Reconstruction(NamedTuple):
    """Output of the image pathway.

    Attributes:
        loss: ``mean((eps - eps_hat) ** 2)`` per sample, shape ``(B,)``.
        x0_hat: the recovered clean image ``(z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)``.
        eps_hat: the image pathway's noise estimate.
    """

    loss: torch.Tensor
    x0_hat: torch.Tensor
    eps_hat: torch.Tensor


def build_backbone(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (32, 64, 128, 256),
    num_res_blocks: int | Sequence[int] = 1,
    attention_levels: Sequence[bool] | None = None,
    norm_num_groups: int = 8,
    num_head_channels: int = 8,
    backbone: str = "diffusion_unet",
) -> nn.Module:
    """The backbone of both pathways: MONAI's ``DiffusionModelUNet`` (``backbone="diffusion_unet"``, the paper's and
    the default) or :class:`~custom_components.networks.time_unet.TimeConditionedUNet` (``backbone="fast"``: MONAI's
    supervised ``UNet(num_res_units=2)`` layout with the timestep; ``num_res_blocks``, ``attention_levels``,
    ``norm_num_groups`` and ``num_head_channels`` are ``DiffusionModelUNet``'s and not used by it).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (mask + image channels).
        out_channels: output channels.
        channels: feature channels per level.
        num_res_blocks: residual blocks per level.
        attention_levels: self-attention per level; ``None`` means no attention anywhere.
        norm_num_groups: group-norm groups (must divide every entry of ``channels``).
        num_head_channels: attention head width, used only where attention is on.
        backbone: ``"diffusion_unet"`` or ``"fast"``.

    Raises:
        ValueError: an unknown ``backbone``.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {backbone!r}.")
    if backbone == "fast":
        return TimeConditionedUNet(spatial_dims, in_channels, out_channels, channels)
    if attention_levels is None:
        attention_levels = [False] * len(channels)
    return DiffusionModelUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=list(channels),
        num_res_blocks=num_res_blocks,
        attention_levels=list(attention_levels),
        norm_num_groups=norm_num_groups,
        num_head_channels=num_head_channels,
    )


def background_mask(like: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The all-background mask ``m_bg`` scaled to [-1, 1]: +1 in channel 0, -1 elsewhere.

    Args:
        like: a tensor ``(B, C, *spatial)`` giving batch size, spatial shape, dtype and device.
        num_classes: number of classes ``K``.
    """
    shape = (like.shape[0], num_classes, *like.shape[2:])
    m = torch.full(shape, -1.0, dtype=like.dtype, device=like.device)
    m[:, 0] = 1.0
    return m


@functools.lru_cache(maxsize=64)
def _host_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def make_noise(shape: Sequence[int], seed: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Seeded Gaussian noise, identical on every device and constant under ``torch.jit.trace``.

    Drawn with NumPy's PCG64 generator on the host (so a traced graph records a constant, not ``randn``) and cached
    per (shape, seed), then moved to ``device`` (a fresh copy: callers may modify it).

    Args:
        shape: the noise shape.
        seed: the generator seed.
        device: where the noise goes.
        dtype: its dtype.
    """
    noise = _host_noise(tuple(int(s) for s in shape), int(seed))
    return noise.to(device=device, dtype=dtype, copy=True)


def draw_noise(x: torch.Tensor, num_classes: int, seeds: Sequence[int]) -> torch.Tensor:
    """Seeded inference mask noise for ``len(seeds)`` draws stacked along the batch: draw ``i`` uses ``seeds[i]``, the
    same noise for every image of ``x`` (so an image's result does not depend on the rest of its batch). Made with
    torch ops from ``x``'s shape (:func:`~custom_components.networks.noise.seeded_normal_like`), so the deployable
    model traces, scripts and exports to ONNX at any input size.

    Args:
        x: images ``(B, C, *spatial)`` giving batch size, spatial shape, dtype and device.
        num_classes: ``K``.
        seeds: one seed per draw.
    """
    return torch.cat([seeded_normal_like(x, num_classes, s).expand(x.shape[0], *([-1] * (x.ndim - 1))) for s in seeds])


def segment_noised_background(
    mask_net: nn.Module, scheduler: DDPMScheduler, x: torch.Tensor, num_classes: int, t: torch.Tensor,
    noise: torch.Tensor
) -> torch.Tensor:
    """The mask pathway on a noised all-background mask: ``S(concat[add_noise(m_bg, noise, t), x], t)`` (logits).

    Args:
        mask_net: the mask backbone ``S``.
        scheduler: the noise scheduler it was trained with.
        x: images ``(B, C, *spatial)``.
        num_classes: ``K``.
        t: timesteps ``(B,)``.
        noise: mask noise ``(B, K, *spatial)``.
    """
    m_t = scheduler.add_noise(background_mask(x, num_classes), noise, t)
    return mask_net(torch.cat([m_t, x], dim=1), t)


def ddim_scheduler(num_train_timesteps: int, schedule: str, schedule_args: dict | None, num_steps: int
                   ) -> DDIMScheduler:
    """MONAI's ``DDIMScheduler`` for the mask pathway (``prediction_type="sample"``: ``S`` predicts the clean mask),
    with ``num_steps`` inference timesteps set.

    Args:
        num_train_timesteps: ``T`` of the schedule the pathway was trained with.
        schedule: that MONAI schedule's name.
        schedule_args: its keyword arguments.
        num_steps: number of DDIM steps (``>= 1``).

    Raises:
        ValueError: ``num_steps < 1``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    ddim = DDIMScheduler(num_train_timesteps=num_train_timesteps, schedule=schedule, clip_sample=True,
                         prediction_type="sample", **(schedule_args or {}))
    ddim.set_timesteps(num_steps)
    return ddim


def ddim_segment(
    mask_net: nn.Module, scheduler: DDPMScheduler, ddim: DDIMScheduler, x: torch.Tensor, num_classes: int,
    noise: torch.Tensor, timesteps: Sequence[int]
) -> torch.Tensor:
    """Multi-step DDIM refinement of the mask (METHOD.md, mask pathway), returning the last step's logits.

    Starts from the all-background mask noised to ``timesteps[0]`` with ``noise``; at each step ``t`` the mask
    pathway's current estimate ``2 softmax(S(concat[m_t, x], t)) - 1`` is given to ``ddim.step`` as the clean-sample
    prediction, which returns ``m`` at the next (smaller) timestep. The timesteps are Python ints, so a traced graph
    unrolls the loop.

    Args:
        mask_net: the mask backbone ``S``.
        scheduler: the noise scheduler it was trained with (noises the start mask).
        ddim: a ``DDIMScheduler`` of the same schedule with its inference timesteps set (:func:`ddim_scheduler`).
        x: images ``(B, C, *spatial)``.
        num_classes: ``K``.
        noise: the start noise ``(B, K, *spatial)``.
        timesteps: the DDIM timesteps, largest first.
    """
    if len(timesteps) == 0:
        raise ValueError("ddim_segment: no timesteps.")
    b = x.shape[0]
    t0 = torch.full((b,), int(timesteps[0]), dtype=torch.long, device=x.device)
    m_t = scheduler.add_noise(background_mask(x, num_classes), noise, t0)
    logits = None
    for t in timesteps:
        tb = torch.full((b,), int(t), dtype=torch.long, device=x.device)
        logits = mask_net(torch.cat([m_t, x], dim=1), tb)
        m0 = probabilities_to_mask(logits.float().softmax(1))
        m_t, _ = ddim.step(m0.to(x.dtype), int(t), m_t)
    return logits


def check_spatial_size(spatial_shape: Sequence[int], num_levels: int, where: str = "input") -> None:
    """Reject spatial sizes the UNet cannot take (each must be divisible by ``2 ** (levels - 1)``).

    Args:
        spatial_shape: the spatial shape of the input.
        num_levels: number of resolution levels of the backbone.
        where: what to name in the message (a file name, say).
    """
    factor = 2 ** (num_levels - 1)
    bad = [s for s in spatial_shape if s % factor]
    if bad:
        raise ValueError(
            f"{where}: spatial size {tuple(spatial_shape)} cannot be taken by a backbone with {num_levels} levels; "
            f"every spatial size must be a multiple of {factor} (e.g. "
            f"{tuple(max(factor, (s // factor) * factor) for s in spatial_shape)})."
        )


class DiffusionTeacher(nn.Module):
    """The teacher: one module holding the mask pathway ``S`` and the image pathway ``G``.

    ``S`` takes ``concat[m_t, x]`` (``K + C`` channels) and ``t`` and returns ``K`` channels (an estimate of the
    clean mask, used as logits). ``G`` takes ``concat[x_t, m]`` (``C + K`` channels) and ``t`` and returns a noise
    estimate (``C`` channels).

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels ``C``.
        num_classes: classes ``K`` (2 for binary).
        channels: backbone feature channels per level.
        num_res_blocks: backbone residual blocks per level (``diffusion_unet`` only).
        attention_levels: backbone attention per level (``diffusion_unet`` only; ``None``: none).
        norm_num_groups: backbone group-norm groups (``diffusion_unet`` only).
        backbone: ``"diffusion_unet"`` (MONAI's ``DiffusionModelUNet``, the paper's) or ``"fast"``
            (:func:`build_backbone`).
        mask_net: a replacement backbone for ``S`` (any ``net(x, timesteps)`` module); ``None``: the default.
        image_net: a replacement backbone for ``G``; ``None``: the default.
        num_train_timesteps: ``T``.
        schedule: a MONAI noise schedule name (``linear_beta``, ``scaled_linear_beta``, ``sigmoid_beta``, ``cosine``).
        schedule_args: keyword arguments of the schedule (``beta_start``, ``beta_end``, ``sig_range``, ...).
        infer_timestep: the fixed ``t`` of one-pass inference.
        infer_seed: the seed of the inference noise.
        min_alpha_cumprod: lower bound on ``abar_t`` when recovering ``x0_hat`` (avoids division by ~0 at ``t ~ T``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        num_res_blocks: int | Sequence[int] = 1,
        attention_levels: Sequence[bool] | None = None,
        norm_num_groups: int = 8,
        backbone: str = "diffusion_unet",
        mask_net: nn.Module | None = None,
        image_net: nn.Module | None = None,
        num_train_timesteps: int = 1000,
        schedule: str = "scaled_linear_beta",
        schedule_args: dict | None = None,
        infer_timestep: int = 500,
        infer_seed: int = 0,
        min_alpha_cumprod: float = 1e-3,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (2 for binary), got {num_classes}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        if not 0 <= infer_timestep < num_train_timesteps:
            raise ValueError(f"infer_timestep must be in [0, {num_train_timesteps}), got {infer_timestep}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_levels = len(channels)
        self.num_train_timesteps = num_train_timesteps
        self.infer_timestep = infer_timestep
        self.infer_seed = infer_seed
        self.min_alpha_cumprod = min_alpha_cumprod
        self.backbone = backbone
        arch = dict(
            channels=channels,
            num_res_blocks=num_res_blocks,
            attention_levels=attention_levels,
            norm_num_groups=norm_num_groups,
            backbone=backbone,
        )
        self.mask_net = mask_net or build_backbone(spatial_dims, num_classes + in_channels, num_classes, **arch)
        self.image_net = image_net or build_backbone(spatial_dims, in_channels + num_classes, in_channels, **arch)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps, schedule=schedule, clip_sample=False, **(schedule_args or {})
        )
        self.schedule = schedule
        self.schedule_args = dict(schedule_args or {})

    # ------------------------------------------------------------------ helpers
    def check_input(self, x: torch.Tensor, where: str = "input") -> None:
        """Validate an image batch ``(B, C, *spatial)`` against the configuration.

        Args:
            x: the image batch.
            where: what to name in the error message.
        """
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{where}: expected a {self.spatial_dims}D image batch of shape (B, {self.in_channels}, "
                f"{', '.join(['*'] * self.spatial_dims)}), got shape {tuple(x.shape)}."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{where}: expected {self.in_channels} image channel(s), got {x.shape[1]} (shape "
                             f"{tuple(x.shape)}).")
        check_spatial_size(x.shape[2:], self.num_levels, where)

    def sample_timesteps(self, batch_size: int, device: torch.device,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform timesteps in ``[0, T)``, one per sample.

        Args:
            batch_size: number of samples.
            device: device of the result.
            generator: optional CPU generator for reproducibility.
        """
        return torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator).to(device)

    def _timesteps(self, t: torch.Tensor | int | None, x: torch.Tensor) -> torch.Tensor:
        if t is None:
            return self.sample_timesteps(x.shape[0], x.device)
        if isinstance(t, int):
            return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        t = t.to(x.device).long()
        return t.expand(x.shape[0]) if t.ndim == 0 else t

    def alpha_cumprod(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``abar_t`` broadcast to ``like``'s rank.

        Args:
            t: timesteps ``(B,)``.
            like: the tensor to broadcast against.
        """
        abar = self.scheduler.alphas_cumprod.to(device=like.device, dtype=like.dtype)[t]
        return abar.reshape(-1, *([1] * (like.ndim - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mask-pathway logits at the fixed inference ``t`` with the seeded noise (so the teacher can be used, traced
        or checked with ``verify_net_in_out`` like any ``image -> logits`` network).

        Args:
            x: images ``(B, C, *spatial)``.
        """
        return self.segment(x, self.infer_timestep, self.fixed_noise(x))

    # ------------------------------------------------------------------ mask pathway
    def segment(
        self,
        x: torch.Tensor,
        t: torch.Tensor | int | None = None,
        noise: torch.Tensor | None = None,
        mask_net: nn.Module | None = None,
    ) -> torch.Tensor:
        """Segment images: ``S(concat[add_noise(m_bg, eps, t), x], t)``, returning ``K``-channel logits.

        During training ``t`` and ``noise`` are left ``None`` (drawn per sample).

        Args:
            x: images ``(B, C, *spatial)``.
            t: timesteps (``(B,)`` tensor or an int); ``None`` draws them uniformly.
            noise: the mask noise ``eps`` (same shape as ``m_bg``); ``None`` draws it.
            mask_net: run this mask backbone instead of ``self.mask_net`` (the twin student uses it).
        """
        net = self.mask_net if mask_net is None else mask_net
        t = self._timesteps(t, x)
        if noise is None:
            noise = torch.randn_like(x.new_empty((x.shape[0], self.num_classes, *x.shape[2:])))
        return segment_noised_background(net, self.scheduler, x, self.num_classes, t, noise)

    def fixed_noise(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """The seeded inference noise for ``x``'s spatial shape, the same for every sample of the batch.

        Args:
            x: images ``(B, C, *spatial)``.
            seed: noise seed; ``None``: ``infer_seed``.
        """
        return draw_noise(x, self.num_classes, [self.infer_seed if seed is None else seed])

    @torch.no_grad()
    def predict(
        self,
        x: torch.Tensor,
        num_draws: int = 1,
        timestep: int | None = None,
        seed: int | None = None,
        mask_net: nn.Module | None = None,
        chunk_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: mean class probabilities over ``num_draws`` seeded draws and a per-voxel uncertainty map.

        Draw ``i`` uses the noise of seed ``seed + i`` at the fixed ``timestep``; draws are batched together.
        The uncertainty is the predictive entropy of the mean probabilities, normalised to [0, 1] by ``log K``.

        Args:
            x: images ``(B, C, *spatial)``.
            num_draws: ensemble size (1: one pass).
            timestep: the fixed ``t``; ``None``: ``infer_timestep``.
            seed: base seed; ``None``: ``infer_seed``.
            mask_net: run this mask backbone instead of ``self.mask_net``.
            chunk_size: at most this many images per forward pass (``None``: all draws at once).
        """
        if num_draws < 1:
            raise ValueError(f"num_draws must be >= 1, got {num_draws}.")
        t = self.infer_timestep if timestep is None else timestep
        s = self.infer_seed if seed is None else seed
        xs = x.repeat(num_draws, *([1] * (x.ndim - 1)))
        noise = draw_noise(x, self.num_classes, range(s, s + num_draws))
        step = chunk_size or xs.shape[0]
        logits = torch.cat(
            [self.segment(xs[i : i + step], t, noise[i : i + step], mask_net) for i in range(0, xs.shape[0], step)]
        )
        probs = logits.float().softmax(1).reshape(num_draws, *x.shape[:1], self.num_classes, *x.shape[2:]).mean(0)
        return probs, normalized_entropy(probs)

    @torch.no_grad()
    def predict_ddim(
        self,
        x: torch.Tensor,
        num_steps: int = 10,
        start_timestep: int | None = None,
        seed: int | None = None,
        mask_net: nn.Module | None = None,
    ) -> torch.Tensor:
        """Multi-step DDIM refinement of the mask (``prediction_type="sample"``), returning probabilities.

        Starts from the noised all-background mask at ``start_timestep`` and at each DDIM step feeds the current
        mask estimate ``2 softmax(S) - 1`` to the scheduler as the clean-sample prediction.

        Args:
            x: images ``(B, C, *spatial)``.
            num_steps: number of DDIM steps.
            start_timestep: the first (largest) timestep; ``None``: ``T - 1``.
            seed: noise seed; ``None``: ``infer_seed``.
            mask_net: run this mask backbone instead of ``self.mask_net``.
        """
        ddim = ddim_scheduler(self.num_train_timesteps, self.schedule, self.schedule_args, num_steps)
        timesteps = [int(t) for t in ddim.timesteps]
        if start_timestep is not None:
            timesteps = [t for t in timesteps if t <= start_timestep] or [int(start_timestep)]
        net = self.mask_net if mask_net is None else mask_net
        logits = ddim_segment(net, self.scheduler, ddim, x, self.num_classes, self.fixed_noise(x, seed), timesteps)
        return logits.float().softmax(1)

    # ------------------------------------------------------------------ image pathway
    def reconstruct(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        t: torch.Tensor | int | None = None,
        noise: torch.Tensor | None = None,
    ) -> Reconstruction:
        """Image pathway: noise ``x`` to ``x_t``, estimate the noise conditioned on ``mask``, recover ``x0_hat``.

        Args:
            x: clean images ``(B, C, *spatial)``.
            mask: the condition ``m`` in [-1, 1], ``(B, K, *spatial)`` (``2 p - 1`` for probabilities ``p``).
            t: timesteps; ``None`` draws them uniformly.
            noise: the image noise ``eps``; ``None`` draws it.
        """
        t = self._timesteps(t, x)
        if noise is None:
            noise = torch.randn_like(x)
        x_t = self.scheduler.add_noise(x, noise, t)
        eps_hat = self.image_net(torch.cat([x_t, mask.to(x_t.dtype)], dim=1), t)
        loss = ((eps_hat.float() - noise.float()) ** 2).flatten(1).mean(1)
        abar = self.alpha_cumprod(t, x_t).clamp_min(self.min_alpha_cumprod)
        x0_hat = (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()
        return Reconstruction(loss, x0_hat, eps_hat)


def normalized_entropy(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Predictive entropy of class probabilities divided by ``log K``, kept as a 1-channel map.

    Args:
        probs: probabilities ``(B, K, *spatial)``.
        dim: the class dimension.
    """
    k = probs.shape[dim]
    ent = -(probs * probs.clamp_min(1e-8).log()).sum(dim, keepdim=True)
    return ent / torch.log(torch.tensor(float(k)))


def probabilities_to_mask(probs: torch.Tensor) -> torch.Tensor:
    """``2 p - 1``: class probabilities to the [-1, 1] mask space of the diffusion pathways.

    Args:
        probs: probabilities ``(B, K, *spatial)``.
    """
    return 2 * probs - 1

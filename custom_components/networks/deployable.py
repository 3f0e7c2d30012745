"""The deployable segmentation network: a trained mask pathway wrapped as ``image -> class probabilities``.

The noise and ``t`` of the mask pathway are fixed and seeded inside, so MONAI evaluators, sliding-window
inferers, TorchScript export and MONAI Label use it like any segmentation network. The inference setting of
METHOD.md is chosen at construction (``sampler``, ``timestep``, ``num_draws``, ``ddim_steps``); the weights are the
same for every setting.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.schedulers import DDPMScheduler

from .teacher import (
    build_backbone,
    check_spatial_size,
    ddim_scheduler,
    ddim_segment,
    draw_noise,
    segment_noised_background,
)

__all__ = ["SAMPLERS", "MaskPathwaySegmenter"]

#: inference samplers of the deployable model
SAMPLERS = ("one_pass", "ddim")


class MaskPathwaySegmenter(nn.Module):
    """``image -> class probabilities`` from a diffusion mask pathway.

    ``forward(x)`` noises the all-background mask to the fixed ``timestep`` with noise drawn from ``seed``
    (``seed + i`` for draw ``i`` of an ensemble), runs the mask pathway, and returns the mean softmax
    probabilities, unchanged. With ``sampler="ddim"`` the mask is instead refined over ``ddim_steps`` DDIM steps from
    ``T - 1`` (:func:`~custom_components.networks.teacher.ddim_segment`; ``timestep`` is not used), each draw
    starting from its own seeded noise. The binary foreground threshold chosen on validation lives in
    ``model_selection.json`` and is applied in post-processing
    (``custom_components.transforms.ThresholdForegroundd``), so uncertainty maps and confidence scores are
    computed from the network's own probabilities.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels ``C``.
        num_classes: classes ``K``.
        channels: backbone feature channels per level.
        num_res_blocks: backbone residual blocks per level (``diffusion_unet`` only).
        attention_levels: backbone attention per level (``diffusion_unet`` only).
        norm_num_groups: backbone group-norm groups (``diffusion_unet`` only).
        backbone: ``"diffusion_unet"`` or ``"fast"`` (:func:`~custom_components.networks.teacher.build_backbone`).
        mask_net: an existing mask backbone to wrap (shared, not copied); ``None`` builds the default one.
        num_train_timesteps: ``T`` of the schedule the pathway was trained with.
        schedule: the MONAI noise schedule name it was trained with.
        schedule_args: that schedule's keyword arguments.
        timestep: the fixed inference ``t``.
        seed: the seed of the inference noise.
        num_draws: ensemble size (1: a single pass); draws are batched.
        sampler: ``"one_pass"`` (the mask pathway once at ``timestep``) or ``"ddim"`` (``ddim_steps`` DDIM steps).
        ddim_steps: DDIM steps of ``sampler="ddim"``.
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
        num_train_timesteps: int = 1000,
        schedule: str = "scaled_linear_beta",
        schedule_args: dict | None = None,
        timestep: int = 500,
        seed: int = 0,
        num_draws: int = 1,
        sampler: str = "one_pass",
        ddim_steps: int = 10,
    ) -> None:
        super().__init__()
        if num_draws < 1:
            raise ValueError(f"num_draws must be >= 1, got {num_draws}.")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}.")
        if not 0 <= timestep < num_train_timesteps:
            raise ValueError(f"timestep must be in [0, {num_train_timesteps}), got {timestep}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_levels = len(channels)
        self.timestep = timestep
        self.seed = seed
        self.num_draws = num_draws
        self.mask_net = mask_net or build_backbone(
            spatial_dims, num_classes + in_channels, num_classes, channels, num_res_blocks, attention_levels,
            norm_num_groups, backbone=backbone
        )
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps, schedule=schedule, clip_sample=False, **(schedule_args or {})
        )
        self.sampler = sampler
        self.ddim_steps = ddim_steps
        if sampler == "ddim":  # schedulers hold no state_dict entries: model.pt is the same for every sampler
            self.ddim = ddim_scheduler(num_train_timesteps, schedule, schedule_args, ddim_steps)
            self.ddim_timesteps = [int(t) for t in self.ddim.timesteps]

    @classmethod
    def from_teacher(cls, teacher: nn.Module, num_draws: int = 1) -> MaskPathwaySegmenter:
        """A deployable view of a ``DiffusionTeacher``'s mask pathway (shared, not copied).

        The schedule, inference ``t`` and noise seed are the teacher's, so the view predicts what the teacher's
        ``predict`` does; used for validation of both co-trained networks (``student_view`` / ``teacher_view``).

        Args:
            teacher: a ``DiffusionTeacher`` (the cotrain student is one too).
            num_draws: ensemble size.
        """
        return cls(
            teacher.spatial_dims, teacher.in_channels, teacher.num_classes,
            channels=(1,) * teacher.num_levels,  # only its length (the level count) is read when mask_net is given
            mask_net=teacher.mask_net, num_train_timesteps=teacher.num_train_timesteps, schedule=teacher.schedule,
            schedule_args=teacher.schedule_args, timestep=teacher.infer_timestep, seed=teacher.infer_seed,
            num_draws=num_draws,
        )

    def __prepare_scriptable__(self) -> MaskPathwaySegmenter:
        """Called by ``torch.jit.script`` (MONAI's ``ckpt_export`` without ``--use_trace True``): MONAI's
        ``SpatialAttentionBlock`` cannot be scripted, so stop with one line saying to trace instead."""
        from monai.networks.blocks.spatialattention import SpatialAttentionBlock

        from ..errors import UserError

        if any(isinstance(m, SpatialAttentionBlock) for m in self.modules()):
            raise UserError("MaskPathwaySegmenter cannot be scripted (MONAI's SpatialAttentionBlock): export it by "
                            "tracing, add --use_trace True to the ckpt_export command (the traced model takes "
                            "every input size; see docs/sharing.md).")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, K, *spatial)`` for images ``(B, C, *spatial)``.

        Args:
            x: images, intensity-normalised as in training.
        """
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected images of shape (B, {self.in_channels}, {', '.join(['*'] * self.spatial_dims)}), "
                f"got {tuple(x.shape)}."
            )
        check_spatial_size(x.shape[2:], self.num_levels)
        b = x.shape[0]
        t = torch.full((b * self.num_draws,), self.timestep, dtype=torch.long, device=x.device)
        noise = draw_noise(x, self.num_classes, range(self.seed, self.seed + self.num_draws))
        xs = x.repeat(self.num_draws, *([1] * (x.ndim - 1)))
        if self.sampler == "ddim":
            logits = ddim_segment(self.mask_net, self.scheduler, self.ddim, xs, self.num_classes, noise,
                                  self.ddim_timesteps)
        else:
            logits = segment_noised_background(self.mask_net, self.scheduler, xs, self.num_classes, t, noise)
        probs = logits.float().softmax(1)
        return probs.reshape(self.num_draws, b, *probs.shape[1:]).mean(0)

"""Phase 3: multi-round pseudo-label inference with the diffusion teacher (METHOD.md, "Phase 3").

``P_T = teacher.predict(x)`` (fixed seeded ``t`` and noise); then ``R`` rounds of "reconstruct the image from the
current mask (image pathway, fixed seeded ``t`` and noise), re-segment the reconstruction"; the result is the
mean of the probabilities of ``P_T`` and every round. Everything is deterministic: the same image always gives the
same pseudo-label.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from monai.inferers import Inferer

from custom_components.networks.rounds import RoundMode
from custom_components.networks.teacher import DiffusionTeacher, check_spatial_size, make_noise, probabilities_to_mask

__all__ = ["MultiRoundPseudoLabelInferer", "multi_round_probabilities"]

#: offset between the seed of the mask noise and the seeds of the image noise of each round
_IMAGE_SEED_OFFSET = 1000


def multi_round_probabilities(
    teacher: DiffusionTeacher,
    x: torch.Tensor,
    rounds: int = 3,
    round_mode: str = "independent",
    recon_timestep: int | None = None,
    segment_timestep: int | None = None,
    seed: int = 0,
    num_draws: int = 1,
) -> torch.Tensor:
    """Mean class probabilities of ``P_T`` and ``R`` reconstruct-and-resegment rounds.

    Round ``j`` (1-based) conditions the image pathway on ``2 P - 1`` where ``P`` is ``P_T`` (``independent``) or
    the previous round's probabilities (``chained``), noises ``x`` to ``recon_timestep`` with the noise of seed
    ``seed + 1000 + j``, takes ``x0_hat`` and segments it with the same fixed mask noise as ``P_T``.

    Args:
        teacher: the trained ``DiffusionTeacher``.
        x: images ``(B, C, *spatial)``.
        rounds: ``R >= 0`` (0: ``P_T`` alone).
        round_mode: ``"independent"`` or ``"chained"``.
        recon_timestep: the ``t`` of the image pathway; ``None``: the teacher's ``infer_timestep``.
        segment_timestep: the ``t`` of the mask pathway; ``None``: the teacher's ``infer_timestep``.
        seed: base seed of all noises.
        num_draws: seeded draws averaged inside each segmentation (``teacher.predict``).

    Raises:
        ValueError: for a ``round_mode`` other than ``"independent"`` or ``"chained"``.
    """
    round_mode = RoundMode.parse(round_mode)
    t_seg = teacher.infer_timestep if segment_timestep is None else segment_timestep
    t_rec = teacher.infer_timestep if recon_timestep is None else recon_timestep
    p_t, _ = teacher.predict(x, num_draws=num_draws, timestep=t_seg, seed=seed)
    total = p_t.clone()
    cond_p = p_t
    for j in range(1, rounds + 1):
        noise = make_noise((1, *x.shape[1:]), seed + _IMAGE_SEED_OFFSET + j, x.device, x.dtype).expand_as(x)
        with torch.no_grad():
            rec = teacher.reconstruct(x, probabilities_to_mask(cond_p).to(x.dtype), t_rec, noise)
        p_j, _ = teacher.predict(rec.x0_hat, num_draws=num_draws, timestep=t_seg, seed=seed)
        total += p_j
        if round_mode == RoundMode.CHAINED:
            cond_p = p_j
    return total / (rounds + 1)


class MultiRoundPseudoLabelInferer(Inferer):
    """``inferer(x, teacher) -> mean class probabilities`` of :func:`multi_round_probabilities`.

    For volumes, pass a ``window_inferer`` (e.g. ``monai.inferers.SlidingWindowInferer``): it is called as
    ``window_inferer(x, network_callable)`` with the multi-round computation on one window as the callable, so
    every window gets the full multi-round treatment and the windows are blended as usual.

    Args:
        rounds: ``R >= 0``.
        round_mode: ``"independent"`` (every round conditions on ``P_T``) or ``"chained"``.
        recon_timestep: the image pathway's ``t``; ``None``: the teacher's ``infer_timestep``.
        seed: base seed of all noises.
        segment_timestep: the mask pathway's ``t``; ``None``: the teacher's ``infer_timestep``.
        num_draws: seeded draws averaged inside each segmentation.
        window_inferer: an inferer to wrap (sliding window for 3D); ``None``: whole images.

    Raises:
        ValueError: for ``rounds < 0``, ``num_draws < 1`` or an unknown ``round_mode``.
    """

    def __init__(
        self,
        rounds: int = 3,
        round_mode: str = "independent",
        recon_timestep: int | None = None,
        seed: int = 0,
        segment_timestep: int | None = None,
        num_draws: int = 1,
        window_inferer: Inferer | None = None,
    ) -> None:
        super().__init__()
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}.")
        if num_draws < 1:
            raise ValueError(f"num_draws must be >= 1, got {num_draws}.")
        self.rounds = rounds
        self.round_mode = RoundMode.parse(round_mode)
        self.recon_timestep = recon_timestep
        self.segment_timestep = segment_timestep
        self.seed = seed
        self.num_draws = num_draws
        self.window_inferer = window_inferer

    def _check(self, inputs: torch.Tensor, teacher: DiffusionTeacher) -> None:
        where = "input image"
        meta = getattr(inputs, "meta", None)
        if isinstance(meta, dict) and meta.get("filename_or_obj") is not None:
            names = meta["filename_or_obj"]
            where = f"image '{names[0] if isinstance(names, (list, tuple)) and len(names) == 1 else names}'"
        if not isinstance(teacher, DiffusionTeacher):
            raise TypeError("MultiRoundPseudoLabelInferer needs a DiffusionTeacher as network, got "
                            f"{type(teacher).__name__}.")
        if inputs.ndim != teacher.spatial_dims + 2:
            raise ValueError(f"{where}: expected a {teacher.spatial_dims}D batch (B, C, *spatial), got shape "
                             f"{tuple(inputs.shape)}.")
        if inputs.shape[1] != teacher.in_channels:
            raise ValueError(
                f"{where}: has {inputs.shape[1]} channel(s) but the teacher expects in_channels={teacher.in_channels} "
                f"(shape {tuple(inputs.shape)}); convert the image or set in_channels to match the teacher."
            )
        for t in (self.recon_timestep, self.segment_timestep):
            if t is not None and not 0 <= t < teacher.num_train_timesteps:
                raise ValueError(f"timestep {t} outside [0, {teacher.num_train_timesteps}).")
        if self.window_inferer is None:
            check_spatial_size(inputs.shape[2:], teacher.num_levels, where)

    def _compute(self, x: torch.Tensor, teacher: DiffusionTeacher) -> torch.Tensor:
        return multi_round_probabilities(
            teacher,
            torch.as_tensor(x),
            rounds=self.rounds,
            round_mode=self.round_mode,
            recon_timestep=self.recon_timestep,
            segment_timestep=self.segment_timestep,
            seed=self.seed,
            num_draws=self.num_draws,
        )

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Mean probabilities ``(B, K, *spatial)``.

        Args:
            inputs: images ``(B, C, *spatial)``.
            network: the ``DiffusionTeacher``.
            args: unused (MONAI inferer signature).
            kwargs: unused (MONAI inferer signature).
        """
        self._check(inputs, network)
        if self.window_inferer is None:
            return self._compute(inputs, network)
        return self.window_inferer(inputs, partial(self._compute, teacher=network))

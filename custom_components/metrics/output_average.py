"""Tiny Ignite metrics over per-sample values that an engine puts in its output."""

from __future__ import annotations

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

__all__ = ["OutputAverage", "BestAssignmentDice"]


class OutputAverage(Metric):
    """Mean over all samples of ``engine.state.output[key]`` (a scalar or a ``(B,)`` tensor per iteration).

    NaN entries (e.g. Dice of an empty reference) are skipped.

    Not Ignite's ``Average``, whose semantics differ where these metrics need ours: it counts a ``(B,)`` output as
    *one* example holding a ``B``-vector (the result would be a per-position vector, not the mean over samples), keeps
    NaN (one empty reference would make the epoch's value NaN), and raises ``NotComputableError`` on an empty run
    where this returns NaN; adapting it would take more overrides than these lines.

    Args:
        key: the output key to average.
        device: where the running sums live.
    """

    def __init__(self, key: str, device: str | torch.device = "cpu") -> None:
        self.key = key
        super().__init__(output_transform=lambda out: out[key], device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.zeros((), dtype=torch.float64, device=self._device)
        self._count = torch.zeros((), dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: torch.Tensor) -> None:
        v = torch.as_tensor(output).detach().reshape(-1).double().to(self._device)
        v = v[~torch.isnan(v)]
        self._sum += v.sum()
        self._count += v.numel()

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        return float(self._sum / self._count) if self._count > 0 else float("nan")


class BestAssignmentDice(Metric):
    """Best-assignment Dice over the whole run: ``engine.state.output[key]`` is ``(B, P)``, the per-sample Dice under
    each of ``P`` channel-to-class assignments (``engines.pretrain.assignment_dice``); the result is the largest column
    mean
    over all samples of the run, so one assignment is chosen for the whole validation set (not one per batch).
    NaN entries are skipped per column.

    Args:
        key: the output key.
        device: where the running sums live.
    """

    def __init__(self, key: str = "assignment_dice", device: str | torch.device = "cpu") -> None:
        self.key = key
        super().__init__(output_transform=lambda out: out[key], device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.zeros(0, dtype=torch.float64, device=self._device)
        self._count = torch.zeros(0, dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: torch.Tensor) -> None:
        v = torch.as_tensor(output).detach().double().to(self._device)
        v = v.reshape(-1, v.shape[-1])
        ok = ~torch.isnan(v)
        if self._sum.numel() == 0:
            self._sum = torch.zeros(v.shape[1], dtype=torch.float64, device=self._device)
            self._count = torch.zeros(v.shape[1], dtype=torch.float64, device=self._device)
        self._sum += torch.where(ok, v, torch.zeros_like(v)).sum(0)
        self._count += ok.sum(0).double()

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        if self._sum.numel() == 0 or not bool((self._count > 0).any()):
            return float("nan")
        means = torch.where(self._count > 0, self._sum / self._count.clamp_min(1), torch.full_like(self._sum, -1.0))
        return float(means.max())

"""A tiny Ignite metric averaging a per-sample value that an engine puts in its output."""

from __future__ import annotations

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

__all__ = ["OutputAverage"]


class OutputAverage(Metric):
    """Mean over all samples of ``engine.state.output[key]`` (a scalar or a ``(B,)`` tensor per iteration).

    NaN entries (e.g. Dice of an empty reference) are skipped.

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

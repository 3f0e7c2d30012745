"""Best-model saving: :class:`BestModelSaver` writes one network's weights when a validation metric improves."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

from ..runtime.distributed import is_rank_zero, unwrap_module
from ..runtime.files import atomic_torch_save, atomic_write_json

__all__ = ["BestModelSaver"]

logger = logging.getLogger(__name__)


class BestModelSaver:
    """Write one network's plain ``state_dict`` when a validation metric improves.

    Attach it to the **evaluator** (validation engine): at its ``EPOCH_COMPLETED`` it reads
    ``engine.state.metrics[metric_name]`` and, if better than every value seen so far (including values restored
    from a resumable checkpoint through :meth:`load_state_dict`), writes ``save_dir/filename`` atomically and a
    small JSON summary (metric, value, epoch) beside it. Only rank 0 writes.

    Args:
        save_dir: folder for ``model.pt``.
        network: the network whose weights are saved (DDP wrappers are removed, so keys carry no ``module.``).
        filename: weights file name.
        metric_name: key of ``engine.state.metrics`` to compare.
        mode: ``"max"`` (higher is better, e.g. Dice) or ``"min"``.
        epoch_engine: engine whose ``state.epoch`` is recorded (the trainer); default: the attached engine.
        summary_filename: JSON summary file name, or ``None`` to skip it.

    Raises:
        ValueError: for a ``mode`` other than ``max`` / ``min``.
        TypeError: when ``network`` is not a ``torch.nn.Module``.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        filename: str = "model.pt",
        metric_name: str = "val_mean_dice",
        mode: str = "max",
        epoch_engine: Any | None = None,
        summary_filename: str | None = "model_best.json",
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"BestModelSaver: mode must be 'max' or 'min', got '{mode}'.")
        if not isinstance(unwrap_module(network), torch.nn.Module):
            raise TypeError(f"BestModelSaver: network must be a torch.nn.Module, got {type(network).__name__}.")
        self.save_dir = Path(save_dir)
        self.network = network
        self.filename = filename
        self.metric_name = metric_name
        self.mode = mode
        self.epoch_engine = epoch_engine
        self.summary_filename = summary_filename
        self.best_value: float | None = None
        self.best_epoch: int = -1

    @property
    def path(self) -> Path:
        """The weights file."""
        return self.save_dir / self.filename

    def attach(self, engine: Any) -> None:
        """Register on the evaluator's ``EPOCH_COMPLETED``.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def is_better(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (a NaN never does).

        Args:
            value: the new metric value.
        """
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def __call__(self, engine: Any) -> None:
        """Compare the metric and save on improvement.

        Args:
            engine: the evaluator.
        """
        if self.metric_name not in engine.state.metrics:
            raise KeyError(
                f"BestModelSaver: metric '{self.metric_name}' not in engine.state.metrics "
                f"(available: {sorted(engine.state.metrics)})."
            )
        value = float(engine.state.metrics[self.metric_name])
        if not self.is_better(value):
            return
        epoch = int((self.epoch_engine or engine).state.epoch)
        self.best_value, self.best_epoch = value, epoch
        if not is_rank_zero():
            return
        weights = {k: v.detach().cpu() for k, v in unwrap_module(self.network).state_dict().items()}
        atomic_torch_save(weights, self.path)
        if self.summary_filename:
            summary = {"metric": self.metric_name, "mode": self.mode, "value": value, "epoch": epoch,
                       "file": self.filename}
            atomic_write_json(summary, self.save_dir / self.summary_filename)
        logger.info(f"BestModelSaver: {self.metric_name}={value:.4f} at epoch {epoch} is the best; saved {self.path}")

    def state_dict(self) -> dict[str, Any]:
        """The best value and its epoch (so a resumed run keeps comparing against them)."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "metric_name": self.metric_name,
                "mode": self.mode}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the best value.

        Args:
            state: what :meth:`state_dict` returned.

        Raises:
            ValueError: when the state tracks another metric or mode than this run.
        """
        if state.get("metric_name", self.metric_name) != self.metric_name or state.get("mode", self.mode) != self.mode:
            raise ValueError(
                f"BestModelSaver: checkpoint tracks {state.get('metric_name')} ({state.get('mode')}), "
                f"this run tracks {self.metric_name} ({self.mode})."
            )
        self.best_value = None if state["best_value"] is None else float(state["best_value"])
        self.best_epoch = int(state["best_epoch"])
        if self.best_value is not None and self.path.exists():
            try:
                torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable model file is handled the same way
                logger.warning(
                    "cannot read the best model %s (%s: %s); forgetting the best value so the next validation "
                    "rewrites it", self.path, type(e).__name__, e,
                )
                self.best_value, self.best_epoch = None, -1

"""Stop training at the first non-finite loss term: :class:`NaNGuard` and :class:`NonFiniteLossError`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Events

__all__ = ["NaNGuard", "NonFiniteLossError"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised by :class:`NaNGuard` when a loss term is NaN or infinite."""


class NaNGuard:
    """Stop training at the first iteration whose loss terms are not all finite.

    Loss terms are read from ``engine.state.output``: a tensor or number is the term ``loss``; a mapping (or a
    list of mappings, as MONAI's decollated outputs) contributes every key in ``loss_keys``, or by default
    ``loss`` and every key starting with ``loss_``. The message names the epoch, the iteration and each
    non-finite term with its value. It is stored in ``engine.state.nonfinite_loss`` (so
    :class:`ResumableCheckpoint` refuses to save the broken state) and, with ``action="raise"`` (default), raised as
    :class:`NonFiniteLossError` so the process exits with an error; ``action="terminate"`` logs it and
    calls ``engine.terminate()`` instead.

    Args:
        loss_keys: names of the loss terms to check; ``None`` checks ``loss`` and ``loss_*``.
        action: ``"raise"`` or ``"terminate"``.
        output_transform: maps ``engine.state.output`` to what is inspected (identity by default).

    Raises:
        ValueError: for an ``action`` other than ``raise`` / ``terminate``.
    """

    def __init__(
        self,
        loss_keys: Sequence[str] | None = None,
        action: str = "raise",
        output_transform: Callable[[Any], Any] = lambda x: x,
    ) -> None:
        if action not in ("raise", "terminate"):
            raise ValueError(f"NaNGuard: action must be 'raise' or 'terminate', got '{action}'.")
        self.loss_keys = None if loss_keys is None else list(loss_keys)
        self.action = action
        self.output_transform = output_transform

    def attach(self, engine: Any) -> None:
        """Register on ``ITERATION_COMPLETED``.

        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _is_loss_key(self, key: Any) -> bool:
        if self.loss_keys is not None:
            return key in self.loss_keys
        return isinstance(key, str) and (key == "loss" or key.startswith("loss_"))

    def _terms(self, output: Any) -> dict[str, Any]:
        if isinstance(output, (torch.Tensor, float, int)):
            return {"loss": output}
        if isinstance(output, Mapping):
            return {k: v for k, v in output.items() if self._is_loss_key(k)}
        if isinstance(output, (list, tuple)):
            terms: dict[str, Any] = {}
            for i, item in enumerate(output):
                for k, v in self._terms(item).items():
                    terms[k if len(output) == 1 else f"{k}[{i}]"] = v
            return terms
        return {}

    @staticmethod
    def _finite(value: Any) -> bool:
        if isinstance(value, torch.Tensor):
            return bool(torch.isfinite(value.detach()).all())
        try:
            return bool(np.all(np.isfinite(np.asarray(value, dtype=float))))
        except (TypeError, ValueError):
            return True

    @staticmethod
    def _fmt(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            return f"{value.item()}" if value.numel() == 1 else f"tensor(shape={tuple(value.shape)}, non-finite)"
        return str(value)

    def __call__(self, engine: Any) -> None:
        """Check the loss terms of the iteration that just finished.

        Args:
            engine: the trainer.
        """
        bad = {k: v for k, v in self._terms(self.output_transform(engine.state.output)).items() if not self._finite(v)}
        if not bad:
            return
        terms = ", ".join(f"{k}={self._fmt(v)}" for k, v in bad.items())
        message = (
            f"Non-finite loss at epoch {engine.state.epoch}, iteration {engine.state.iteration}: {terms}. "
            "Training stopped; no checkpoint of this state was written."
        )
        engine.state.nonfinite_loss = message
        logger.error(message)
        if self.action == "raise":
            raise NonFiniteLossError(message)
        engine.terminate()

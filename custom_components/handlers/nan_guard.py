"""Stop training at the first non-finite loss term: :class:`NaNGuard` (Ignite's ``TerminateOnNan`` with our
message) and :class:`NonFiniteLossError`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Events
from ignite.handlers import TerminateOnNan

from ..errors import UserError

__all__ = ["NaNGuard", "NonFiniteLossError", "batch_image_files"]

logger = logging.getLogger(__name__)

_MAX_FILES = 16


class NonFiniteLossError(UserError, FloatingPointError):
    """Raised by :class:`NaNGuard` when a loss term is NaN or infinite (a ``UserError``: shown as the last lines)."""


def batch_image_files(batch: Any, image_key: str = "image") -> list[str]:
    """The image files of a batch, from the ``filename_or_obj`` metadata of its ``image_key`` entries.

    Works on a collated batch (one ``MetaTensor`` per key), a decollated one (a list of per-sample dictionaries)
    and nested batches such as the co-training's ``{"labeled": {...}, "unlabeled": {...}}``.

    Args:
        batch: ``engine.state.batch``.
        image_key: the key of the images.

    Returns:
        The paths in batch order, without repeats (empty when the batch carries no metadata).
    """
    found: list[str] = []

    def names(value: Any) -> list[str]:
        meta = getattr(value, "meta", None)
        name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
        if isinstance(name, (list, tuple)):
            return [str(n) for n in name]
        return [str(name)] if name else []

    def walk(item: Any) -> None:
        if isinstance(item, Mapping):
            for k, v in item.items():
                if k == image_key:
                    found.extend(n for n in names(v) if n not in found)
                elif isinstance(v, (Mapping, list, tuple)):
                    walk(v)
        elif isinstance(item, (list, tuple)):
            for v in item:
                walk(v)

    walk(batch)
    return found


class NaNGuard(TerminateOnNan):
    """Stop training at the first iteration whose loss terms are not all finite.

    Ignite's ``TerminateOnNan`` finds the non-finite value and terminates the engine; this subclass chooses what it
    inspects and says what happened. Loss terms are read from ``engine.state.output``: a tensor or number is the
    term ``loss``; a mapping (or a list of mappings, as MONAI's decollated outputs) contributes every key in
    ``loss_keys``, or by default ``loss`` and every key starting with ``loss_``. The message names the epoch, the
    iteration, each non-finite term with its value, the batch's image files (``filename_or_obj`` metadata of the
    batch's ``image_key`` entries) and the last finite loss of the run. It is stored in
    ``engine.state.nonfinite_loss`` (so :class:`ResumableCheckpoint` refuses to save the broken state) and, with
    ``action="raise"`` (default), raised as :class:`NonFiniteLossError` so the process exits with status 2 and the
    message as its last lines; ``action="terminate"`` logs it and only terminates the engine.

    Args:
        loss_keys: names of the loss terms to check; ``None`` checks ``loss`` and ``loss_*``.
        action: ``"raise"`` or ``"terminate"``.
        output_transform: maps ``engine.state.output`` to what is inspected (identity by default).
        image_key: the batch key whose metadata names the image files.

    Raises:
        ValueError: for an ``action`` other than ``raise`` / ``terminate``.
    """

    def __init__(
        self,
        loss_keys: Sequence[str] | None = None,
        action: str = "raise",
        output_transform: Callable[[Any], Any] = lambda x: x,
        image_key: str = "image",
    ) -> None:
        if action not in ("raise", "terminate"):
            raise ValueError(f"NaNGuard: action must be 'raise' or 'terminate', got '{action}'.")
        super().__init__(output_transform=lambda output: self._terms(output_transform(output)))
        self.loss_keys = None if loss_keys is None else list(loss_keys)
        self.action = action
        self.image_key = image_key
        self.last_finite: str | None = None

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
        return bool(torch.isfinite(torch.as_tensor(value).detach()).all()) if value is not None else True

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
        was_terminating, engine.should_terminate = engine.should_terminate, False
        super().__call__(engine)  # Ignite's TerminateOnNan: terminates the engine at a NaN / Inf term
        nonfinite = bool(engine.should_terminate)
        engine.should_terminate = was_terminating or nonfinite
        terms = self._output_transform(engine.state.output)
        if not nonfinite:
            first = next(iter(terms.items()), None)
            if first is not None:
                self.last_finite = f"{first[0]}={self._fmt(first[1])} at iteration {engine.state.iteration}"
            return
        bad = {k: v for k, v in terms.items() if not self._finite(v)}
        terms = ", ".join(f"{k}={self._fmt(v)}" for k, v in bad.items())
        files = batch_image_files(engine.state.batch, self.image_key)
        shown = ", ".join(files[:_MAX_FILES]) + (f" (and {len(files) - _MAX_FILES} more)" if len(files) > _MAX_FILES
                                                  else "")
        message = (
            f"Non-finite loss at epoch {engine.state.epoch}, iteration {engine.state.iteration}: {terms}. "
            "Training stopped; no checkpoint of this state was written. "
            f"Batch files: {shown or 'not recorded in the batch metadata'}. "
            f"Last finite loss: {self.last_finite or 'none in this run (it failed at its first iteration)'}. "
            "Check these images for NaN / Inf values or lower the learning rate, then rerun the same command to "
            "resume from the last checkpoint."
        )
        engine.state.nonfinite_loss = message
        logger.error(message)
        if self.action == "raise":
            raise NonFiniteLossError(message)

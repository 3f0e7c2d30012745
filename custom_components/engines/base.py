"""Shared plumbing of the phase-1 and phase-2 trainers: device moves, autocast, optimizer steps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Events
from monai.data import MetaTensor
from monai.engines import Trainer
from monai.utils import CommonKeys

__all__ = ["DiffusionTrainerBase", "plain", "to_device"]


def plain(t: torch.Tensor) -> torch.Tensor:
    """A ``MetaTensor`` as a plain tensor (no metadata tracking in the training maths).

    Args:
        t: a tensor or ``MetaTensor``.
    """
    return t.as_tensor() if isinstance(t, MetaTensor) else t


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor of a (nested) batch to ``device``.

    Args:
        batch: a tensor, dict, list or tuple of them.
        device: the target device.
        non_blocking: passed to ``Tensor.to``.
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    return batch


class DiffusionTrainerBase(Trainer):
    """A MONAI ``Trainer`` with the helpers both diffusion trainers need.

    Args:
        device: training device.
        max_epochs: number of epochs.
        train_data_loader: the training loader (a ``PairedLoader`` for co-training).
        epoch_length: iterations per epoch (``None``: ``len(train_data_loader)``).
        non_blocking: non-blocking host-to-device copies.
        amp: enable autocast.
        amp_dtype: ``"bfloat16"`` or ``"float16"`` (float16 uses a gradient scaler).
        grad_clip_norm: clip each network's gradient norm to this value (``None``: no clipping).
        handlers: Ignite handlers to attach.
        image_key: the image key of a batch.
        label_key: the label key of a batch.

    Raises:
        ValueError: for ``max_epochs < 1`` or an ``amp_dtype`` other than ``bfloat16`` / ``float16``.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        amp: bool = False,
        amp_dtype: str = "bfloat16",
        grad_clip_norm: float | None = None,
        handlers: Sequence | None = None,
        image_key: str = CommonKeys.IMAGE,
        label_key: str = CommonKeys.LABEL,
    ) -> None:
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        if amp_dtype not in ("bfloat16", "float16"):
            raise ValueError(f"amp_dtype must be 'bfloat16' or 'float16', got {amp_dtype!r}.")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            handlers=handlers,
            amp=False,  # autocast is handled here (bf16 needs no scaler)
            decollate=False,
        )
        self.use_amp = amp
        self.amp_dtype = getattr(torch, amp_dtype)
        self.grad_clip_norm = grad_clip_norm
        self.image_key = image_key
        self.label_key = label_key
        self.grad_scaler = torch.amp.GradScaler(enabled=amp and amp_dtype == "float16")
        if hasattr(train_data_loader, "set_epoch"):
            self.add_event_handler(Events.EPOCH_STARTED, lambda e: train_data_loader.set_epoch(e.state.epoch))

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the configured precision (a no-op when AMP is off)."""
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.state.device.type, dtype=self.amp_dtype)

    def step(self, loss: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer], params: Sequence[Iterable]) -> None:
        """Backward ``loss`` once and step every optimizer (zeroing gradients first).

        Args:
            loss: the scalar total loss.
            optimizers: the optimizers to step.
            params: per optimizer, the parameters to clip (when ``grad_clip_norm`` is set).
        """
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.grad_scaler.scale(loss).backward()
        for opt, ps in zip(optimizers, params):
            if self.grad_clip_norm is not None:
                self.grad_scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(list(ps), self.grad_clip_norm)
            self.grad_scaler.step(opt)
        self.grad_scaler.update()

    def split_image_label(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image and (optional) label of a batch dictionary, on the training device.

        Args:
            batch: a collated batch dictionary.

        Raises:
            KeyError: when the batch has no image key (the message lists its keys).
        """
        if self.image_key not in batch:
            raise KeyError(f"batch has no '{self.image_key}' key (keys: {sorted(batch)}).")
        x = batch[self.image_key].to(self.state.device, non_blocking=self.non_blocking)
        y = batch.get(self.label_key)
        if y is not None:
            y = y.to(self.state.device, non_blocking=self.non_blocking)
        return plain(x).float(), None if y is None else plain(y)

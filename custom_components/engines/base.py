"""Shared plumbing of the trainers (device moves, autocast, optimizer steps) and the semi-supervised trainer API
(:class:`SemiSupervisedTrainer`: a method is its ``compute_losses`` and ``post_step``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

__all__ = ["DiffusionTrainerBase", "SemiSupervisedTrainer", "plain", "to_device"]


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


class SemiSupervisedTrainer(DiffusionTrainerBase):
    """The semi-supervised trainer API: one iteration over a labelled + unlabelled batch, the method's maths in
    :meth:`compute_losses`, its after-step work (EMA teachers, queues) in :meth:`post_step`.

    The base does everything else: it reads a ``PairedLoader`` item, moves both batches to the device, puts
    ``networks`` in train mode, runs :meth:`compute_losses` under autocast, zeroes the gradients of ``optimizers``,
    backwards the total ``loss`` once, clips (``grad_clip_norm``, per optimizer over its parameters) and steps every
    optimizer, calls :meth:`post_step`, fires MONAI's iteration events and returns the detached loss dict as
    ``engine.state.output``. A method is a subclass with its networks and losses as constructor arguments (built
    by the config) and these two methods.

    Args:
        device: training device.
        max_epochs: number of epochs.
        train_data_loader: a ``PairedLoader`` of labelled and unlabelled batches.
        networks: the trained networks (put in train mode each iteration); the first is ``self.network``, the id
            MONAI handlers look for.
        optimizers: the optimizers stepped after the single backward pass.
        sup_loss: the supervised loss (``loss(logits, labels)``, e.g. the bundle's ``DiceCELoss``) as
            ``self.sup_loss``, for methods that use one.
        epoch_length: iterations per epoch (default: the loader's length).
        non_blocking: non-blocking copies.
        amp: autocast on.
        amp_dtype: ``"bfloat16"`` or ``"float16"``.
        grad_clip_norm: gradient-norm clipping per optimizer (``None``: off).
        train_handlers: Ignite handlers of the trainer.
        image_key: image key.
        label_key: label key.
        labeled_key: key of the labelled batch in a paired item.
        unlabeled_key: key of the unlabelled batch in a paired item.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        networks: Sequence[torch.nn.Module],
        optimizers: Sequence[torch.optim.Optimizer],
        sup_loss: torch.nn.Module | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        amp: bool = False,
        amp_dtype: str = "bfloat16",
        grad_clip_norm: float | None = None,
        train_handlers: Sequence | None = None,
        image_key: str = CommonKeys.IMAGE,
        label_key: str = CommonKeys.LABEL,
        labeled_key: str = "labeled",
        unlabeled_key: str = "unlabeled",
    ) -> None:
        if not networks or not optimizers:
            raise ValueError("a semi-supervised trainer needs at least one network and one optimizer.")
        super().__init__(device, max_epochs, train_data_loader, epoch_length, non_blocking, amp, amp_dtype,
                         grad_clip_norm, train_handlers, image_key, label_key)
        self.networks = list(networks)
        self.network = self.networks[0]  # the standard id MONAI handlers look for
        self.optimizers = list(optimizers)
        self.sup_loss = sup_loss
        self.labeled_key = labeled_key
        self.unlabeled_key = unlabeled_key

    def compute_losses(self, x_l: torch.Tensor, y: torch.Tensor, x_u: torch.Tensor,
                       epoch: int) -> dict[str, torch.Tensor]:
        """The method's maths: every loss term of one iteration, the total under ``loss`` (no optimizer step).

        Args:
            x_l: labelled images ``(B_l, C, *spatial)``.
            y: their labels ``(B_l, 1, *spatial)``.
            x_u: unlabelled images ``(B_u, C, *spatial)``.
            epoch: the 0-based epoch (:meth:`progress` gives the fraction of training done).
        """
        raise NotImplementedError

    def post_step(self) -> None:
        """Called after the optimizers stepped (an EMA teacher's update goes here); a no-op by default."""

    def check_inputs(self, x_l: torch.Tensor, x_u: torch.Tensor) -> None:
        """Reject batches the networks cannot take (a no-op by default)."""

    def progress(self) -> float:
        """The fraction of training done before the current iteration, in [0, 1] (for iteration ramp-ups)."""
        total = max(1, int(self.state.max_epochs or 1) * int(self.state.epoch_length or 1))
        return min(1.0, max(0, int(self.state.iteration) - 1) / total)

    def _iteration(self, engine: Engine, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        for key in (self.labeled_key, self.unlabeled_key):
            if key not in batchdata:
                raise KeyError(f"co-training batch has no '{key}' stream (keys: {sorted(batchdata)}); use a "
                               "PairedLoader.")
        x_l, y = self.split_image_label(batchdata[self.labeled_key])
        x_u, _ = self.split_image_label(batchdata[self.unlabeled_key])
        if y is None:
            raise ValueError(f"the labelled batch has no '{self.label_key}'.")
        self.check_inputs(x_l, x_u)
        for net in self.networks:
            net.train()
        with self.autocast():
            losses = self.compute_losses(x_l, y, x_u, engine.state.epoch - 1)
        self.step(losses[CommonKeys.LOSS], self.optimizers,
                  [[p for g in opt.param_groups for p in g["params"]] for opt in self.optimizers])
        self.post_step()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return {k: v.detach() for k, v in losses.items()}

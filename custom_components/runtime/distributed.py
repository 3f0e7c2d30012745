"""Multi-GPU (and multi-process CPU) training support for the phase-1 and phase-2 bundles.

The trainers call ``teacher.segment`` / ``teacher.reconstruct``, which call ``self.mask_net(...)`` and
``self.image_net(...)``. :func:`wrap_backbones` replaces those backbones in place by
:class:`StateDictTransparentDDP`, a ``DistributedDataParallel`` whose state dict is its inner module's, so
gradients are all-reduced (bucketed, overlapped with the backward pass) while ``teacher.pt``, ``model.pt`` and
``train_state.pt`` keep exactly the single-process keys (no ``module.`` prefix) and load in either setting.

Used by ``bundles/*/configs/multi_gpu_train.json`` under ``torchrun --nproc_per_node=N``: nccl on GPUs, gloo on
CPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "StateDictTransparentDDP",
    "distributed_device",
    "init_distributed",
    "is_rank_zero",
    "rank",
    "rank_zero_handlers",
    "strip_module_prefix",
    "unwrap_module",
    "wrap_backbones",
]


def rank() -> int:
    """This process's rank (0 when not distributed): Ignite's ``idist.get_rank()``, which finds a process group
    initialised by :func:`init_distributed` (plain ``torch.distributed``) as well as one of ``idist.Parallel``.

    Asked only while a process group exists: ``idist`` keeps the group it found, so after
    ``destroy_process_group()`` it would fail where a single process has rank 0.
    """
    return idist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_rank_zero() -> bool:
    """Whether this process writes files and logs (rank 0, or not distributed)."""
    return rank() == 0


def distributed_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu`` (``LOCAL_RANK`` defaults to 0)."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(device: torch.device | str | None = None, backend: str | None = None) -> torch.device:
    """Initialise the default process group from the ``torchrun`` environment (once) and return the device.

    Args:
        device: the training device (``None``: :func:`distributed_device`).
        backend: ``nccl`` or ``gloo``; ``None`` chooses nccl for a CUDA device and gloo otherwise.

    Raises:
        RuntimeError: when the ``torchrun`` environment variables are missing.
        ValueError: for a backend other than ``nccl`` / ``gloo``.
    """
    device = torch.device(device) if device is not None else distributed_device()
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if not dist.is_initialized() and missing:
        raise RuntimeError(
            f"runtime/distributed.py: environment variables {missing} are not set; launch multi_gpu_train.json with "
            "'torchrun --nproc_per_node=N -m monai.bundle run ...'."
        )
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"runtime/distributed.py: backend must be 'nccl' or 'gloo', got {backend!r}.")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return device


class StateDictTransparentDDP(DistributedDataParallel):
    """``DistributedDataParallel`` whose ``state_dict`` / ``load_state_dict`` use the wrapped module's keys.

    Saving goes through the inner module (also when the wrapper is a child of a bigger module); loading adds
    the ``module.`` level back with a pre-hook, so checkpoints written with or without the wrapper load into
    either.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._register_load_state_dict_pre_hook(self._add_module_prefix)

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """The inner module's state dict (no ``module.`` prefix).

        Args:
            args: positional form of ``destination, prefix, keep_vars`` (deprecated by PyTorch, still accepted).
            destination: dictionary to fill.
            prefix: key prefix.
            keep_vars: keep autograd variables.
        """
        return self.module.state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)

    @staticmethod
    def _add_module_prefix(state_dict: dict, prefix: str, *_: Any) -> None:
        for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "module.")]:
            state_dict[prefix + "module." + key[len(prefix):]] = state_dict.pop(key)


def unwrap_module(obj: Any) -> Any:
    """Return ``obj.module`` for ``DataParallel`` / ``DistributedDataParallel`` wrappers, else ``obj``.

    Args:
        obj: a network, possibly wrapped for data parallelism, or any other object.
    """
    if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return obj.module
    return obj


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a leading ``module.`` from every key when *all* keys carry it (a state dict saved from a DDP wrapper)."""
    keys = list(state_dict.keys())
    if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def wrap_backbones(
    network: nn.Module,
    names: Sequence[str] = ("mask_net", "image_net"),
    device: torch.device | str | None = None,
    **ddp_kwargs: Any,
) -> nn.Module:
    """Replace ``network.<name>`` by a :class:`StateDictTransparentDDP` of it for every name, in place.

    A no-op when no process group is initialised (single-process runs are unchanged). ``DistributedDataParallel``
    broadcasts rank 0's weights at construction, so every rank starts from the same weights. Call it after the
    networks are on their device and any pretrained weights are loaded, before training starts; optimizers built
    from the parameters earlier stay valid (the parameters are the same objects).

    Args:
        network: a ``DiffusionTeacher`` (or any module with these attributes).
        names: the backbone attributes to wrap (the student of co-training trains only ``mask_net``).
        device: the device of the backbones (``None``: that of their first parameter).
        ddp_kwargs: extra ``DistributedDataParallel`` arguments (default ``broadcast_buffers=False``).

    Raises:
        AttributeError: when ``network`` has no backbone of a given name.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return network
    ddp_kwargs.setdefault("broadcast_buffers", False)
    for name in names:
        sub = getattr(network, name, None)
        if not isinstance(sub, nn.Module):
            raise AttributeError(f"runtime/distributed.py: {type(network).__name__} has no backbone '{name}' to wrap.")
        if isinstance(sub, DistributedDataParallel):
            continue
        dev = torch.device(device) if device is not None else next(sub.parameters()).device
        ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
        setattr(network, name, StateDictTransparentDDP(sub, device_ids=ids, output_device=ids[0] if ids else None,
                                                       **ddp_kwargs))
    return network


def rank_zero_handlers(handlers: Sequence[Any], keep: Sequence[type] = ()) -> list[Any]:
    """All handlers on rank 0; on other ranks only those of the ``keep`` types (LR schedule, NaN guard, ...).

    Validation, logging and checkpoint writing then happen on rank 0 alone (other ranks wait at the next
    gradient all-reduce).

    Args:
        handlers: the training handlers.
        keep: handler types every rank needs (they must not write files on ranks other than 0).
    """
    if is_rank_zero():
        return list(handlers)
    return [h for h in handlers if isinstance(h, tuple(keep))]

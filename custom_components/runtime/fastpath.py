"""Speed switches measured by ``scripts/benchmark.py``: TF32, cuDNN autotuning, channels-last, ``torch.compile``.

Each switch is a small function applied to already-built networks, so trainers and configs stay unchanged;
a bundle turns one on with one expression in ``initialize`` (see ``docs/performance.md``). AMP is not here:
the trainers' own ``amp`` / ``amp_dtype`` arguments handle it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "set_backend_flags",
    "to_channels_last",
    "compile_backbones",
    "apply_fastpath",
    "backbones_of",
    "native_bf16",
]


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively, i.e. whether bf16 autocast pays there (the bundles' ``amp``
    default).

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and later). CPU: the AVX512-BF16 or AMX instructions (on CPUs
    without them oneDNN emulates bf16, which is slower than fp32). Measured on a 2-core AMD EPYC with AVX512-BF16:
    a ``ph2_cpu`` co-training step in bf16 autocast at about 1.5x the fp32 speed (``docs/performance.md``).

    Args:
        device: the training device.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        return any(bool(getattr(cpu, f, lambda: False)()) for f in ("_is_avx512_bf16_supported",
                                                                    "_is_amx_tile_supported"))
    return False


def set_backend_flags(tf32: bool | None = None, cudnn_benchmark: bool | None = None) -> dict[str, Any]:
    """Set the global TF32 and cuDNN-autotune flags; return the previous values (to restore them).

    Args:
        tf32: allow TF32 in float32 matrix products and convolutions (``None``: leave as is).
        cudnn_benchmark: let cuDNN time its algorithms on the first call of each shape (``None``: leave as is).
    """
    prev = {
        "matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    if tf32 is not None:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = bool(tf32)
    if cudnn_benchmark is not None:
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    return prev


def restore_backend_flags(prev: dict[str, Any]) -> None:
    """Undo :func:`set_backend_flags`.

    Args:
        prev: the dictionary :func:`set_backend_flags` returned.
    """
    torch.set_float32_matmul_precision(prev["matmul_precision"])
    torch.backends.cudnn.allow_tf32 = prev["cudnn_tf32"]
    torch.backends.cudnn.benchmark = prev["cudnn_benchmark"]


def _memory_format(spatial_dims: int) -> torch.memory_format:
    if spatial_dims == 2:
        return torch.channels_last
    if spatial_dims == 3:
        return torch.channels_last_3d
    raise ValueError(f"engines/fastpath.py: channels-last needs spatial_dims 2 or 3, got {spatial_dims}.")


def to_channels_last(module: nn.Module, spatial_dims: int) -> nn.Module:
    """Convert ``module``'s weights to channels-last and convert its first input likewise on every call (in place).

    The state-dict keys and values are unchanged (only strides differ), so checkpoints stay compatible.

    Args:
        module: a backbone taking ``(x, ...)`` with ``x`` of shape ``(B, C, *spatial)``.
        spatial_dims: 2 (``channels_last``) or 3 (``channels_last_3d``).
    """
    fmt = _memory_format(spatial_dims)
    module.to(memory_format=fmt)

    def pre_hook(_mod: nn.Module, args: tuple) -> tuple:
        if args and isinstance(args[0], torch.Tensor) and args[0].ndim == spatial_dims + 2:
            return (args[0].contiguous(memory_format=fmt), *args[1:])
        return args

    module.register_forward_pre_hook(pre_hook)
    return module


def compile_backbones(modules: Iterable[nn.Module], **compile_kwargs: Any) -> None:
    """``torch.compile`` each module in place (``nn.Module.compile``: state-dict keys keep no ``_orig_mod.``).

    Args:
        modules: the backbones (``teacher.mask_net``, ``teacher.image_net``, ``student.mask_net``, ...).
        compile_kwargs: passed to ``torch.compile`` (``mode``, ``dynamic``, ...).
    """
    for m in modules:
        if not isinstance(m, nn.Module):
            raise TypeError("engines/fastpath.py: compile_backbones expects nn.Module objects, got "
                            f"{type(m).__name__}.")
        m.compile(**compile_kwargs)


def backbones_of(*networks: nn.Module) -> list[nn.Module]:
    """The trained backbones of teachers / students / segmenters: each one's ``mask_net`` and ``image_net`` if any.

    Args:
        networks: ``DiffusionTeacher`` or ``MaskPathwaySegmenter`` objects (or plain backbones, returned as is).
    """
    out: list[nn.Module] = []
    for net in networks:
        found = [getattr(net, n) for n in ("mask_net", "image_net") if isinstance(getattr(net, n, None), nn.Module)]
        out.extend(found or [net])
    return out


def apply_fastpath(
    *networks: nn.Module,
    spatial_dims: int,
    channels_last: bool = False,
    compile: bool = False,
    tf32: bool | None = None,
    cudnn_benchmark: bool | None = None,
    compile_kwargs: dict | None = None,
) -> None:
    """One call that turns on the non-AMP switches for the given networks' backbones (in place).

    Args:
        networks: teachers, students or segmenters (see :func:`backbones_of`).
        spatial_dims: 2 or 3.
        channels_last: convert the backbones to channels-last.
        compile: ``torch.compile`` the backbones.
        tf32: global TF32 flag (``None``: leave as is).
        cudnn_benchmark: global cuDNN autotune flag (``None``: leave as is).
        compile_kwargs: passed to ``torch.compile``.
    """
    set_backend_flags(tf32, cudnn_benchmark)
    nets = backbones_of(*networks)
    if channels_last:
        for m in nets:
            to_channels_last(m, spatial_dims)
    if compile:
        compile_backbones(nets, **(compile_kwargs or {}))

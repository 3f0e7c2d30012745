"""Seeded Gaussian noise computed with torch ops from a tensor's shape (the deployable model's inference noise).

A counter-based generator: every element's flat index is hashed together with the seed by integer arithmetic
(products stay below 2**63, so int64 never overflows), the hashes become two uniforms and Box-Muller makes a
standard normal. There is no generator state and no data-dependent Python, so the same graph serves every input
size under ``torch.jit.trace``, ``torch.jit.script`` and ONNX export, and the noise is identical on every device.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["seeded_normal_like"]

_P = 2147483647  # 2**31 - 1, prime: every intermediate stays in [0, _P) and squares stay below 2**62


def _hash_uniform(idx: torch.Tensor, seed: int) -> torch.Tensor:
    h = idx * 1103515245 % _P
    h = (h + (seed * 2654435 + 12345) % _P) % _P
    h = (h * h + 7) % _P
    h = (h * h + 11) % _P
    h = h * 48271 % _P
    return (h.to(torch.float64) + 0.5) / _P


def seeded_normal_like(x: torch.Tensor, num_channels: int, seed: int) -> torch.Tensor:
    """Standard normal noise of shape ``(1, num_channels, *x.shape[2:])``, a pure function of that shape and ``seed``.

    Eager calls are cached per (shape, seed, device, dtype) (sliding windows and repeated validation reuse the
    same noise); the result is shared, so callers must not modify it in place. Traced or scripted calls compute
    it in the graph.

    Args:
        x: a tensor ``(B, C, *spatial)``; only its spatial shape, device and dtype are used.
        num_channels: channels of the noise.
        seed: the seed (any integer).
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return _compute(x, num_channels, seed)
    return _cached(tuple(int(s) for s in x.shape[2:]), int(num_channels), int(seed), x.device, x.dtype)


@functools.lru_cache(maxsize=32)
def _cached(spatial: tuple[int, ...], num_channels: int, seed: int, device: torch.device, dtype: torch.dtype
            ) -> torch.Tensor:
    return _compute(torch.empty((1, 1, *spatial), device=device, dtype=dtype), num_channels, seed)


def _compute(x: torch.Tensor, num_channels: int, seed: int) -> torch.Tensor:
    ones = torch.ones_like(x[:1, :1], dtype=torch.int64).repeat(1, num_channels, *([1] * (x.ndim - 2)))
    idx = ones.cumsum(-1)
    for d in range(x.ndim - 2, 0, -1):  # flat index of every element, from the shape only
        idx = idx + (ones.cumsum(d) - 1) * ones.sum(dim=list(range(d + 1, x.ndim)), keepdim=True)
    idx = idx - 1
    u1 = _hash_uniform(2 * idx, seed)
    u2 = _hash_uniform(2 * idx + 1, seed)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z.to(x.dtype)

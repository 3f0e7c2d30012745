"""Ignite/MONAI handlers: crash-safe checkpoints, best-model selection, NaN stop, reports."""

from .resumable import (
    BestModelSaver,
    NaNGuard,
    NonFiniteLossError,
    ResumableCheckpoint,
    atomic_torch_save,
    capture_rng_state,
    restore_rng_state,
    unwrap_module,
)

__all__ = [
    "BestModelSaver",
    "NaNGuard",
    "NonFiniteLossError",
    "ResumableCheckpoint",
    "atomic_torch_save",
    "capture_rng_state",
    "restore_rng_state",
    "unwrap_module",
]

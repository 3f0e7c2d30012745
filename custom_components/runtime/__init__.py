"""Run-time plumbing that is not an engine: backend fast paths, multi-GPU (DDP) setup and rank checks, atomic file
writes and random-state capture."""

from . import distributed, fastpath, files, rerun, rng
from .distributed import is_rank_zero, rank, strip_module_prefix, unwrap_module
from .files import atomic_torch_save, atomic_write, atomic_write_json
from .rng import capture_rng_state, restore_rng_state

__all__ = [
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "capture_rng_state",
    "distributed",
    "fastpath",
    "files",
    "is_rank_zero",
    "rank",
    "rerun",
    "restore_rng_state",
    "rng",
    "strip_module_prefix",
    "unwrap_module",
]

"""Run-time plumbing that is not an engine: backend fast paths and multi-GPU (DDP) setup."""

from . import distributed, fastpath

__all__ = ["distributed", "fastpath"]

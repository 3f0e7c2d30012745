"""Ignite/MONAI handlers: crash-safe resumable state, best-model and selected-model saving, NaN stop, reports."""

from .best_model import BestModelSaver
from .nan_guard import NaNGuard, NonFiniteLossError
from .resumable import ResumableCheckpoint
from .selected_model import SelectedModelSaver

__all__ = [
    "BestModelSaver",
    "NaNGuard",
    "NonFiniteLossError",
    "ResumableCheckpoint",
    "SelectedModelSaver",
]

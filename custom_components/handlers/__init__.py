"""Ignite/MONAI handlers: crash-safe resumable state, selected-model saving, NaN stop, reports."""

from .nan_guard import NaNGuard, NonFiniteLossError
from .resumable import ResumableCheckpoint
from .selected_model import SelectedModelSaver, selection_mode

__all__ = [
    "NaNGuard",
    "NonFiniteLossError",
    "ResumableCheckpoint",
    "SelectedModelSaver",
    "selection_mode",
]

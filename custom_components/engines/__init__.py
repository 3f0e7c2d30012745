"""Ignite/MONAI engines of the three phases: the shared trainer base, phase-1 pretraining and monitoring,
phase-2 co-training, and phase-2 model selection."""

from .base import DiffusionTrainerBase, plain, to_device
from .cotrain import CoTrainer, LinearRampUp
from .pretrain import (
    TeacherMonitorEvaluator,
    TeacherPretrainTrainer,
    assignment_dice,
    class_fractions,
    permutation_dice,
    shuffled_masks,
)
from .selection import (
    DualNetworkEvaluator,
    dice_per_threshold,
    evaluation_threshold,
    pick_threshold,
    selected_threshold,
    sweep_threshold,
    threshold_grid,
)

__all__ = [
    "CoTrainer",
    "DiffusionTrainerBase",
    "DualNetworkEvaluator",
    "LinearRampUp",
    "TeacherMonitorEvaluator",
    "TeacherPretrainTrainer",
    "assignment_dice",
    "class_fractions",
    "dice_per_threshold",
    "evaluation_threshold",
    "permutation_dice",
    "pick_threshold",
    "plain",
    "selected_threshold",
    "shuffled_masks",
    "sweep_threshold",
    "threshold_grid",
    "to_device",
]

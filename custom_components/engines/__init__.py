"""Ignite/MONAI engines of the three phases: the shared trainer base, phase-1 pretraining and monitoring,
phase-2 co-training, and phase-2 model selection."""

from .base import DiffusionTrainerBase, plain, to_device
from .cotrain import CoTrainer, LinearRampUp
from .pretrain import TeacherMonitorEvaluator, TeacherPretrainTrainer, class_fractions, permutation_dice
from .selection import DualNetworkEvaluator, dice_per_threshold

__all__ = [
    "CoTrainer",
    "DiffusionTrainerBase",
    "DualNetworkEvaluator",
    "LinearRampUp",
    "TeacherMonitorEvaluator",
    "TeacherPretrainTrainer",
    "class_fractions",
    "dice_per_threshold",
    "permutation_dice",
    "plain",
    "to_device",
]

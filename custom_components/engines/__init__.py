"""Ignite/MONAI engines: the shared trainer base and the semi-supervised trainer API, phase-1 pretraining and
monitoring, phase-2 co-training, the semi-supervised baselines, and model selection."""

from .base import DiffusionTrainerBase, SemiSupervisedTrainer, plain, to_device
from .baselines import (
    BCPTrainer,
    CPSTrainer,
    MeanTeacherTrainer,
    SigmoidRampUp,
    UAMTTrainer,
    UniMatchTrainer,
    consistency_mse,
    cutmix_box,
    masked_dice_ce,
    paste_mask,
    strong_intensity,
    uncertainty_masked_mse,
    unet_encoder_blocks,
)
from .cotrain import CoTrainer, LinearRampUp, ProgressRampUp
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
    "BCPTrainer",
    "CPSTrainer",
    "CoTrainer",
    "DiffusionTrainerBase",
    "DualNetworkEvaluator",
    "LinearRampUp",
    "MeanTeacherTrainer",
    "ProgressRampUp",
    "SemiSupervisedTrainer",
    "SigmoidRampUp",
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
    "UAMTTrainer",
    "UniMatchTrainer",
    "consistency_mse",
    "cutmix_box",
    "masked_dice_ce",
    "paste_mask",
    "strong_intensity",
    "uncertainty_masked_mse",
    "unet_encoder_blocks",
]

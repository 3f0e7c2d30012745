from .base import DiffusionTrainerBase, plain, to_device
from .cotrain import CoTrainer, LinearRampUp
from .monitor import BestAssignmentDice, OutputAverage
from .pretrain import (
    TeacherMonitorEvaluator,
    TeacherPretrainTrainer,
    assignment_dice,
    class_fractions,
    permutation_dice,
    shuffled_masks,
)
from .selection import DualNetworkEvaluator, SelectedModelSaver, dice_per_threshold, pick_threshold, selected_threshold

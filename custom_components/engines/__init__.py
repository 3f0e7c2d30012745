from .base import DiffusionTrainerBase, plain, to_device
from .cotrain import CoTrainer, LinearRampUp
from .monitor import OutputAverage
from .pretrain import TeacherMonitorEvaluator, TeacherPretrainTrainer, class_fractions, permutation_dice
from .selection import DualNetworkEvaluator, SelectedModelSaver, dice_per_threshold, pick_threshold, selected_threshold

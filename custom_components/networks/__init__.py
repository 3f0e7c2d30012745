from .class_alignment import align_teacher_classes, best_class_order, channel_class_dice, permute_teacher_classes
from .deployable import MaskPathwaySegmenter
from .io import check_weights, describe_architecture, load_teacher_weights
from .probe import ChannelProbe
from .rounds import RoundMode
from .teacher import (
    DiffusionTeacher,
    Reconstruction,
    background_mask,
    build_backbone,
    check_spatial_size,
    make_noise,
    normalized_entropy,
    probabilities_to_mask,
)
from .time_unet import BACKBONES, TimeConditionedUNet

__all__ = [
    "BACKBONES",
    "ChannelProbe",
    "DiffusionTeacher",
    "MaskPathwaySegmenter",
    "Reconstruction",
    "RoundMode",
    "TimeConditionedUNet",
    "align_teacher_classes",
    "background_mask",
    "best_class_order",
    "build_backbone",
    "channel_class_dice",
    "check_spatial_size",
    "check_weights",
    "describe_architecture",
    "load_teacher_weights",
    "make_noise",
    "normalized_entropy",
    "permute_teacher_classes",
    "probabilities_to_mask",
]

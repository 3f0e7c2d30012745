from .deployable import MaskPathwaySegmenter
from .teacher import (
    DiffusionTeacher,
    Reconstruction,
    background_mask,
    build_backbone,
    check_spatial_size,
    make_noise,
    normalized_entropy,
    one_hot_mask,
    probabilities_to_mask,
)
from .probe import ChannelProbe
from .rounds import RoundMode
from .io import check_weights, describe_architecture, load_teacher_weights

__all__ = [
    "ChannelProbe",
    "DiffusionTeacher",
    "MaskPathwaySegmenter",
    "Reconstruction",
    "RoundMode",
    "background_mask",
    "build_backbone",
    "check_spatial_size",
    "check_weights",
    "describe_architecture",
    "load_teacher_weights",
    "make_noise",
    "normalized_entropy",
    "one_hot_mask",
    "probabilities_to_mask",
]

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
from .io import check_weights, describe_architecture, load_teacher_weights
from .class_alignment import align_teacher_classes, best_class_order, channel_class_dice, permute_teacher_classes

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

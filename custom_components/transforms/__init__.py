"""MONAI transforms of the bundles: missing-label filling, pseudo-label confidence and masking, uncertainty,
the validation threshold of the post-processing."""

from .discrete import ThresholdForeground, ThresholdForegroundd
from .labels import FillMissingLabel, FillMissingLabelD, FillMissingLabeld, FillMissingLabelDict
from .pseudolabel import (
    CONFIDENCE_MODES,
    ConfidenceScore,
    ConfidenceScored,
    ConfidenceThreshold,
    ConfidenceThresholdd,
    LabelToOneHot,
    LabelToOneHotd,
    MaskUncertain,
    MaskUncertaind,
    OneHotToLabel,
    OneHotToLabeld,
)
from .uncertainty import PredictiveEntropy, PredictiveEntropyd

__all__ = [
    "CONFIDENCE_MODES",
    "ConfidenceScore",
    "ConfidenceScored",
    "ConfidenceThreshold",
    "ConfidenceThresholdd",
    "FillMissingLabel",
    "FillMissingLabelD",
    "FillMissingLabelDict",
    "FillMissingLabeld",
    "LabelToOneHot",
    "LabelToOneHotd",
    "MaskUncertain",
    "MaskUncertaind",
    "OneHotToLabel",
    "OneHotToLabeld",
    "PredictiveEntropy",
    "PredictiveEntropyd",
    "ThresholdForeground",
    "ThresholdForegroundd",
]

"""MONAI transforms of the bundles: missing-label filling, pseudo-label confidence score, uncertainty,
the validation threshold of the post-processing."""

from .discrete import ThresholdForeground, ThresholdForegroundd
from .labels import FillMissingLabel, FillMissingLabelD, FillMissingLabeld, FillMissingLabelDict
from .pseudolabel import CONFIDENCE_MODES, ConfidenceScore, ConfidenceScored
from .uncertainty import PredictiveEntropy, PredictiveEntropyd

__all__ = [
    "CONFIDENCE_MODES",
    "ConfidenceScore",
    "ConfidenceScored",
    "FillMissingLabel",
    "FillMissingLabelD",
    "FillMissingLabelDict",
    "FillMissingLabeld",
    "PredictiveEntropy",
    "PredictiveEntropyd",
    "ThresholdForeground",
    "ThresholdForegroundd",
]

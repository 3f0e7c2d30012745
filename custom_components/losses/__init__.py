"""Segmentation losses of METHOD.md: soft Dice against hard targets and cross pseudo-supervision."""

from .cps import (
    PSEUDO_WEIGHTINGS,
    CPSLoss,
    HardTargetDiceLoss,
    check_pseudo_settings,
    hard_labels,
    pseudo_labels,
    weighted_loss,
)

__all__ = ["PSEUDO_WEIGHTINGS", "CPSLoss", "HardTargetDiceLoss", "check_pseudo_settings", "hard_labels",
           "pseudo_labels", "weighted_loss"]

"""Segmentation losses of METHOD.md: soft Dice against hard targets and cross pseudo-supervision."""

from .cps import CPSLoss, HardTargetDiceLoss, hard_labels

__all__ = ["CPSLoss", "HardTargetDiceLoss", "hard_labels"]

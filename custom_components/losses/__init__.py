from .cps import CPSLoss, HardTargetDiceLoss, hard_labels

"""Inferers used by the bundles: the ``la_uamt`` sliding window and phase 3's multi-round pseudo-labelling."""

from custom_components.inferers.multiround import MultiRoundPseudoLabelInferer, multi_round_probabilities
from custom_components.inferers.uamt import UAMTSlidingWindowInferer, window_starts

__all__ = ["MultiRoundPseudoLabelInferer", "UAMTSlidingWindowInferer", "multi_round_probabilities", "window_starts"]

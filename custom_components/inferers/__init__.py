"""Inferers used by the bundles (the ``la_uamt`` sliding window)."""

from custom_components.inferers.uamt import UAMTSlidingWindowInferer, window_starts

__all__ = ["UAMTSlidingWindowInferer", "window_starts"]

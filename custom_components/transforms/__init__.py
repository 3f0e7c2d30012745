from .discrete import ThresholdForeground, ThresholdForegroundd

"""Diffusion-based semi-supervised segmentation components, referenced by the MONAI bundles in ``bundles/``."""

__version__ = "0.1.0"

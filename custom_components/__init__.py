"""Diffusion-based semi-supervised segmentation components, referenced by the MONAI bundles in ``bundles/``."""

__version__ = "0.1.0"

__all__ = ["__version__"]

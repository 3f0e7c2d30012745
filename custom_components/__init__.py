"""Diffusion-based semi-supervised segmentation components, referenced by the MONAI bundles in ``bundles/``."""

from custom_components.errors import install_excepthook

__version__ = "0.1.0"

__all__ = ["__version__"]

install_excepthook()  # a user error raised inside a bundle config ends the output with its message

"""Class-index masks written as palette PNGs: the pixel values stay the class indices, any viewer shows colours."""

from __future__ import annotations

from typing import Any

from monai.data import PILWriter

__all__ = ["MASK_PALETTE", "PalettePNGWriter"]

#: RGB of class 0 (background: black), 1 (white), then distinct colours; indices beyond repeat the cycle.
_COLOURS = [(0, 0, 0), (255, 255, 255), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25),
            (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)]
MASK_PALETTE: list[int] = [c for i in range(256) for c in (_COLOURS[i] if i < 2 else _COLOURS[2 + (i - 2) % 8])]


class PalettePNGWriter(PILWriter):
    """``PILWriter`` for masks of class indices: a single-channel 8-bit image is saved as a palette (``P``) PNG.

    Reading the file back (PIL ``np.asarray(Image.open(f))``, MONAI ``LoadImage``) gives the class indices
    (0 background, 1 foreground, ...); image viewers show 0 black, 1 white, 2+ in colours. Use it as
    ``SaveImaged(writer="custom_components.transforms.palette.PalettePNGWriter")`` for ``.png`` outputs.
    """

    @classmethod
    def create_backend_obj(cls, data_array: Any, dtype: Any = None, scale: int | None = 255,
                           reverse_indexing: bool = True, **kwargs: Any) -> Any:
        """The PIL image of :class:`monai.data.PILWriter`, turned into a palette image when it is 8-bit grey."""
        img = super().create_backend_obj(data_array, dtype=dtype, scale=scale, reverse_indexing=reverse_indexing,
                                         **kwargs)
        if img.mode != "L":
            return img
        pal = img.convert("P")  # L -> P keeps each value as its palette index
        pal.putpalette(MASK_PALETTE)
        return pal

"""Shared helpers of the dataset preparation scripts (``scripts/prepare_*.py``).

Readers for the raw formats (BMP incl. 1-bit, PNG, TIFF, JPEG via Pillow; NIfTI via nibabel; NRRD/MHA via
SimpleITK; HDF5 via h5py), writers for the project's on-disk format (2D PNG + uint8 class-index PNG, 3D NIfTI
float32 + uint8 NIfTI), resizing, statistics and the dataset ``datalist.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from custom_components.errors import UserError

__all__ = [
    "PreparationError",
    "IMAGE_2D_EXTS",
    "VOLUME_EXTS",
    "strip_ext",
    "require_dir",
    "read_image_2d",
    "read_mask_2d",
    "read_volume",
    "resize_pair_2d",
    "save_png_pair",
    "save_nifti_pair",
    "check_same_shape",
    "dataset_stats",
    "format_stats",
    "write_dataset_datalist",
]

IMAGE_2D_EXTS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
VOLUME_EXTS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


class PreparationError(UserError, ValueError):
    """A raw dataset is incomplete or inconsistent; the message names the file or folder and the problem."""


def strip_ext(name: str) -> str:
    """File name without its (possibly double) extension.

    Args:
        name: file name or path.
    """
    base = Path(name).name
    for ext in VOLUME_EXTS + IMAGE_2D_EXTS + (".h5",):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return Path(base).stem


def require_dir(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, raising ``PreparationError`` when it is not an existing folder.

    Args:
        path: folder.
        what: description used in the message.
    """
    p = Path(path)
    if not p.is_dir():
        raise PreparationError(f"{p}: missing folder ({what}).")
    return p


def read_image_2d(path: str | Path) -> np.ndarray:
    """Read a 2D image as uint8 ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB; alpha dropped, palettes expanded).

    Args:
        path: PNG/BMP/TIFF/JPEG file.
    """
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise PreparationError(f"{p}: missing file.")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("1", "L", "I;16", "I", "F"):
                arr = np.asarray(im.convert("L") if im.mode == "1" else im)
                if arr.dtype != np.uint8:
                    lo, hi = float(arr.min()), float(arr.max())
                    arr = ((arr - lo) / max(hi - lo, 1e-8) * 255).round().astype(np.uint8)
                return arr
            return np.asarray(im.convert("RGB"))
    except PreparationError:
        raise
    except Exception as e:
        raise PreparationError(f"{p}: unreadable image file ({type(e).__name__}: {e}).") from e


def read_mask_2d(path: str | Path) -> np.ndarray:
    """Read a 2D mask as an integer ``(H, W)`` array of its stored values (1-bit -> 0/1; RGB -> max over channels).

    Args:
        path: PNG/BMP/TIFF/JPEG file (1-bit, 8-bit, 16-bit, palette or RGB).
    """
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise PreparationError(f"{p}: missing file.")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode == "1":
                return np.asarray(im).astype(np.int64)
            if im.mode == "P":
                return np.asarray(im).astype(np.int64)  # palette index = class/instance id
            arr = np.asarray(im)
    except Exception as e:
        raise PreparationError(f"{p}: unreadable mask file ({type(e).__name__}: {e}).") from e
    if arr.ndim == 3:
        arr = arr[..., :3].max(-1)
    return arr.astype(np.int64)


def read_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a volume as ``(x, y, z)`` array (NIfTI voxel order) plus its spacing.

    Args:
        path: NIfTI (nibabel) or NRRD/MHA/MHD (SimpleITK) file.
    """
    p = Path(path)
    if not p.is_file():
        raise PreparationError(f"{p}: missing file.")
    try:
        if p.name.lower().endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(p))
            return np.asarray(img.dataobj), tuple(float(z) for z in img.header.get_zooms()[:3])
        import SimpleITK as sitk

        img = sitk.ReadImage(str(p))
        arr = sitk.GetArrayFromImage(img)  # (z, y, x)
        return np.transpose(arr, tuple(range(arr.ndim))[::-1]), tuple(float(s) for s in img.GetSpacing())
    except Exception as e:
        raise PreparationError(f"{p}: unreadable volume file ({type(e).__name__}: {e}).") from e


def check_same_shape(img_shape: Sequence[int], lab_shape: Sequence[int], img_path: Any, lab_path: Any) -> None:
    """Raise ``PreparationError`` naming both files when the spatial shapes differ.

    Args:
        img_shape: image spatial shape.
        lab_shape: mask spatial shape.
        img_path: image file (for the message).
        lab_path: mask file (for the message).
    """
    if tuple(img_shape) != tuple(lab_shape):
        raise PreparationError(
            f"{lab_path}: mask/image size mismatch, mask {tuple(lab_shape)} vs image {tuple(img_shape)} ({img_path})."
        )


def resize_pair_2d(
    image: np.ndarray, label: np.ndarray, size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize a 2D image (area when shrinking, bilinear when enlarging) and its label (nearest).

    Args:
        image: uint8 ``(H, W)`` or ``(H, W, 3)``.
        label: uint8 ``(H, W)`` class indices.
        size: output ``(H, W)``.
    """
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    shrink = h * w < image.shape[0] * image.shape[1]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    img = np.asarray(Image.fromarray(image).resize((w, h), resample))
    lab = np.asarray(Image.fromarray(label.astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST))
    return img, lab


def save_png_pair(image: np.ndarray, label: np.ndarray, img_path: Path, lab_path: Path) -> None:
    """Write a 2D image (uint8 grey/RGB) and its uint8 class-index label as PNG.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8.
        label: ``(H, W)`` class indices (< 256).
        img_path: output image file.
        lab_path: output label file.
    """
    from PIL import Image

    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image.astype(np.uint8))).save(img_path)
    Image.fromarray(np.ascontiguousarray(label.astype(np.uint8))).save(lab_path)


def save_nifti_pair(
    image: np.ndarray, label: np.ndarray, spacing: Sequence[float], img_path: Path, lab_path: Path
) -> None:
    """Write a 3D image (float32) and label (uint8) as NIfTI with a diagonal affine of ``spacing``.

    Args:
        image: ``(x, y, z)`` array.
        label: ``(x, y, z)`` class indices.
        spacing: voxel spacing (mm), 3 values.
        img_path: output image file (``.nii.gz``).
        lab_path: output label file (``.nii.gz``).
    """
    import nibabel as nib

    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([float(s) for s in spacing] + [1.0])
    ni = nib.Nifti1Image(np.asarray(image, np.float32), affine)
    ni.header.set_zooms(tuple(float(s) for s in spacing))
    nib.save(ni, str(img_path))
    nl = nib.Nifti1Image(np.asarray(label, np.uint8), affine)
    nl.set_data_dtype(np.uint8)
    nib.save(nl, str(lab_path))


def dataset_stats(
    shapes: Sequence[Sequence[int]], class_counts: Sequence[Sequence[int]] | np.ndarray, num_classes: int
) -> dict[str, Any]:
    """Summary statistics of a prepared dataset.

    Args:
        shapes: spatial shape of every case.
        class_counts: per case, the voxel count of every class.
        num_classes: number of classes.

    Returns:
        ``count``, ``shape_min``, ``shape_max``, ``most_common_shape``, ``class_fractions`` (pooled),
        ``foreground_fraction_per_case`` (mean, min, max of the non-background fraction).
    """
    cc = np.asarray(class_counts, np.float64).reshape(len(shapes), num_classes)
    arr = np.asarray(shapes)
    fg = 1.0 - cc[:, 0] / np.maximum(cc.sum(1), 1)
    return {
        "count": len(shapes),
        "shape_min": arr.min(0).tolist(),
        "shape_max": arr.max(0).tolist(),
        "most_common_shape": list(Counter(tuple(s) for s in shapes).most_common(1)[0][0]),
        "class_fractions": (cc.sum(0) / max(cc.sum(), 1)).round(4).tolist(),
        "foreground_fraction_per_case": {"mean": round(float(fg.mean()), 4), "min": round(float(fg.min()), 4),
                                         "max": round(float(fg.max()), 4)},
    }


def format_stats(name: str, stats: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """Human-readable statistics block printed by the preparation scripts.

    Args:
        name: dataset name.
        stats: output of ``dataset_stats``.
        extra: further ``key: value`` lines.
    """
    lines = [
        f"dataset {name}: {stats['count']} cases",
        f"  spatial shape: min {stats['shape_min']}, max {stats['shape_max']}, most common {stats['most_common_shape']}",
        "  class fractions (pooled): " + ", ".join(f"{i}: {f:.4f}" for i, f in enumerate(stats["class_fractions"])),
        "  foreground fraction per case: mean {mean:.4f}, min {min:.4f}, max {max:.4f}".format(
            **stats["foreground_fraction_per_case"]),
    ]
    for k, v in (extra or {}).items():
        lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def write_dataset_datalist(out_dir: Path, cases: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> Path:
    """Write ``<out_dir>/datalist.json``: metadata keys then all cases under ``"cases"``.

    Args:
        out_dir: dataset folder.
        cases: entries ``{"id", "image", "label"}`` with paths relative to ``out_dir``.
        meta: metadata (``name``, ``spatial_dims``, ``num_classes``, ``in_channels``, ``labels``, ``source``,
            ``official_test``, ``official_train``, ``stats``, ...).

    Returns:
        the datalist path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = dict(meta)
    data["cases"] = [dict(c) for c in cases]
    path = out_dir / "datalist.json"
    path.write_text(json.dumps(data, indent=2))
    return path

"""Shared pytest configuration and tiny on-disk datasets.

Fixtures ``tiny_dataset_2d`` and ``tiny_dataset_3d`` are *factories*: call them with the parameters you need and
they write a fresh dataset under a temporary folder and return that folder. Layout (``docs/ARCHITECTURE.md``)::

    <root>/imagesTr/case_000.png | .nii.gz     image (2D: RGB or grey PNG; 3D: float32 NIfTI, spacing in header)
    <root>/labelsTr/case_000.png | .nii.gz     uint8 class-index label (0..num_classes-1), same geometry
    <root>/datalist.json                        keys labeled / unlabeled (no "label") / validation / test

Example::

    def test_something(tiny_dataset_2d):
        root = tiny_dataset_2d(num_cases=6, size=24, num_classes=3, in_channels=1)
        datalist = root / "datalist.json"

Each case shows ``num_classes - 1`` nested blobs (class k inside class k-1) of random position on a noisy
background, so tiny networks learn something in a few iterations.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

# The project runs pytest with --import-mode=importlib, which puts no test folder on sys.path: append this one so
# that test modules in any subfolder can import the shared helpers next to this file
# (``from script_loader import load_script``). Appended, not prepended, so that it never shadows an installed package.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)

SPLIT_KEYS = ("labeled", "unlabeled", "validation", "test")


def split_counts(num_cases: int, splits: dict[str, int] | None = None) -> dict[str, int]:
    """How many cases go to each datalist key.

    Args:
        num_cases: total number of cases (at least 4 when ``splits`` is not given).
        splits: explicit counts per key (``labeled``, ``unlabeled``, ``validation``, ``test``); must sum to
            ``num_cases``.
    """
    if splits is not None:
        unknown = set(splits) - set(SPLIT_KEYS)
        if unknown:
            raise ValueError(f"tiny dataset: unknown split keys {sorted(unknown)}; use {SPLIT_KEYS}.")
        counts = {k: int(splits.get(k, 0)) for k in SPLIT_KEYS}
        if sum(counts.values()) != num_cases:
            raise ValueError(f"tiny dataset: splits {counts} sum to {sum(counts.values())}, not num_cases={num_cases}.")
        return counts
    if num_cases < 4:
        raise ValueError(f"tiny dataset: num_cases must be >= 4 (one per datalist key), got {num_cases}.")
    n_val = max(1, num_cases // 4)
    n_test = max(1, num_cases // 4)
    n_lab = max(1, (num_cases - n_val - n_test) // 2)
    return {"labeled": n_lab, "unlabeled": num_cases - n_val - n_test - n_lab, "validation": n_val, "test": n_test}


def _label_map(shape: Sequence[int], num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Nested ellipsoids: class k (1..K-1) is a smaller blob inside class k-1."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    label = np.zeros(shape, dtype=np.uint8)
    center = np.array([rng.uniform(0.35 * s, 0.65 * s) for s in shape])
    radius = np.array([rng.uniform(0.2 * s, 0.3 * s) for s in shape])
    for k in range(1, num_classes):
        scale = 1.0 - 0.6 * (k - 1) / max(1, num_classes - 1)
        dist = sum(((g - c) / (r * scale)) ** 2 for g, c, r in zip(grids, center, radius))
        label[dist <= 1.0] = k
    return label


def _image_from_label(label: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Intensity rising with the class index, plus Gaussian noise, in [0, 1]."""
    img = 0.2 + 0.6 * label.astype(np.float32) / max(1, num_classes - 1)
    img += rng.normal(0.0, 0.05, size=label.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def write_tiny_dataset(
    out_dir: str | Path,
    spatial_dims: int = 2,
    num_cases: int = 6,
    size: int | Sequence[int] = 24,
    num_classes: int = 2,
    in_channels: int | None = None,
    spacing: Sequence[float] | None = None,
    splits: dict[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Write images, labels and ``datalist.json`` under ``out_dir``; return ``out_dir``.

    Args:
        out_dir: dataset folder (created).
        spatial_dims: 2 (PNG) or 3 (NIfTI).
        num_cases: total number of cases, split over the four datalist keys by :func:`split_counts`.
        size: side length, or one length per spatial dimension.
        num_classes: number of classes including background (>= 2).
        in_channels: image channels; 2D: 1 (grey PNG) or 3 (RGB PNG), default 3; 3D: must be 1 (default).
        spacing: voxel spacing written in the NIfTI header (3D), default 1.0 per axis.
        splits: explicit counts per datalist key.
        seed: random seed; the same arguments always produce the same files.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"tiny dataset: spatial_dims must be 2 or 3, got {spatial_dims}.")
    if num_classes < 2 or num_classes > 255:
        raise ValueError(f"tiny dataset: num_classes must be in [2, 255], got {num_classes}.")
    in_channels = (3 if spatial_dims == 2 else 1) if in_channels is None else in_channels
    if spatial_dims == 2 and in_channels not in (1, 3):
        raise ValueError(f"tiny dataset: 2D PNG images need in_channels 1 or 3, got {in_channels}.")
    if spatial_dims == 3 and in_channels != 1:
        raise ValueError(f"tiny dataset: 3D NIfTI images are single-channel, got in_channels={in_channels}.")
    shape = (int(size),) * spatial_dims if isinstance(size, int) else tuple(int(s) for s in size)
    if len(shape) != spatial_dims or min(shape) < 4:
        raise ValueError(f"tiny dataset: size must give {spatial_dims} lengths >= 4, got {size}.")
    spacing = tuple(float(s) for s in (spacing or (1.0,) * spatial_dims))
    counts = split_counts(num_cases, splits)

    root = Path(out_dir)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ext = ".png" if spatial_dims == 2 else ".nii.gz"
    cases = []
    for i in range(num_cases):
        label = _label_map(shape, num_classes, rng)
        image = _image_from_label(label, num_classes, rng)
        name = f"case_{i:03d}{ext}"
        if spatial_dims == 2:
            from PIL import Image

            pixels = (image * 255).round().astype(np.uint8)
            if in_channels == 3:
                tint = np.array([1.0, 0.8, 0.6], dtype=np.float32)
                pixels = (pixels[..., None] * tint).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / "imagesTr" / name)
            Image.fromarray(label).save(root / "labelsTr" / name)
        else:
            import nibabel as nib

            affine = np.diag([*spacing, 1.0])
            nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(root / "imagesTr" / name))
            nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(root / "labelsTr" / name))
        cases.append({"image": f"imagesTr/{name}", "label": f"labelsTr/{name}"})

    datalist: dict = {
        "name": f"tiny_{spatial_dims}d",
        "spatial_dims": spatial_dims,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "labels": {str(k): ("background" if k == 0 else f"class_{k}") for k in range(num_classes)},
        "seed": seed,
        "source": "tests/conftest.py",
    }
    if spatial_dims == 3:
        datalist["spacing"] = list(spacing)
    start = 0
    for key in SPLIT_KEYS:
        part = cases[start : start + counts[key]]
        start += counts[key]
        datalist[key] = [{"image": c["image"]} for c in part] if key == "unlabeled" else part
    (root / "datalist.json").write_text(json.dumps(datalist, indent=2))
    return root


@pytest.fixture
def tiny_dataset_2d(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``tiny_dataset_2d(num_cases=6, size=24, num_classes=2, in_channels=3, **kw) -> dataset folder``."""

    def make(
        num_cases: int = 6, size: int | Sequence[int] = 24, num_classes: int = 2, in_channels: int = 3, **kwargs
    ) -> Path:
        out = tmp_path_factory.mktemp("tiny2d")
        return write_tiny_dataset(out, 2, num_cases, size, num_classes, in_channels, **kwargs)

    return make


@pytest.fixture
def tiny_dataset_3d(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``tiny_dataset_3d(num_cases=6, size=16, num_classes=2, in_channels=1, **kw) -> dataset folder``."""

    def make(
        num_cases: int = 6, size: int | Sequence[int] = 16, num_classes: int = 2, in_channels: int = 1, **kwargs
    ) -> Path:
        out = tmp_path_factory.mktemp("tiny3d")
        return write_tiny_dataset(out, 3, num_cases, size, num_classes, in_channels, **kwargs)

    return make


def write_cases_datalist(folder: Path, n: int = 20) -> Path:
    """A prepared dataset's ``datalist.json`` (``"cases"`` only, no image files) of ``n`` 2D RGB binary cases under
    ``folder/ds``; for runner and split tests that never read the images."""
    ds = folder / "ds"
    ds.mkdir(parents=True)
    cases = [{"image": f"imagesTr/case_{i:03d}.png", "label": f"labelsTr/case_{i:03d}.png"} for i in range(n)]
    p = ds / "datalist.json"
    p.write_text(json.dumps({"name": "fake", "spatial_dims": 2, "num_classes": 2, "in_channels": 3, "cases": cases}))
    return p


@pytest.fixture
def cases_datalist() -> Callable[..., Path]:
    """``cases_datalist(folder, n=20) -> datalist.json``: see ``write_cases_datalist``."""
    return write_cases_datalist

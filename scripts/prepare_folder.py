#!/usr/bin/env python
"""Generic converter: a folder of images and a folder of masks, matched by file stem, into the project's format.

Images and masks may be PNG/BMP/TIFF/JPEG (2D -> PNG) or NIfTI/NRRD/MHA (3D -> NIfTI). A mask matches the image
of the same stem, optionally with a suffix (``--mask-suffix _mask``: ``a.png`` <-> ``a_mask.png``). Mask values
must be class indices 0..K-1 unless ``--binarize`` (value > 0 -> 1) or ``--label-map`` (e.g. ``0:0,128:1,255:2``;
unmapped values are an error) is given.

Example (HMEPS-like greyscale data):
    python scripts/prepare_folder.py --images raw/images --masks raw/masks --mask-suffix _mask --binarize \
        --out /work/data/hmeps --name HMEPS
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from custom_components.data.prepare import (
    IMAGE_2D_EXTS,
    VOLUME_EXTS,
    PreparationError,
    check_same_shape,
    dataset_stats,
    format_stats,
    read_image_2d,
    read_mask_2d,
    read_volume,
    require_dir,
    resize_pair_2d,
    save_nifti_pair,
    save_png_pair,
    strip_ext,
    write_dataset_datalist,
)


def parse_label_map(text: str) -> dict[int, int]:
    """Parse ``"0:0,255:1"`` into ``{0: 0, 255: 1}``.

    Args:
        text: comma-separated ``raw:class`` pairs.
    """
    try:
        pairs = [t.split(":") for t in text.split(",") if t.strip()]
        return {int(float(k)): int(v) for k, v in pairs}
    except ValueError as e:
        raise PreparationError(f"--label-map '{text}': expected comma-separated 'raw:class' pairs.") from e


def _is_supported(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(IMAGE_2D_EXTS + VOLUME_EXTS)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        exit status 0.
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="folder of images")
    ap.add_argument("--masks", required=True, help="folder of masks")
    ap.add_argument("--out", required=True, help="output dataset folder")
    ap.add_argument("--mask-suffix", default="", help="suffix of mask stems, e.g. _mask")
    ap.add_argument("--binarize", action="store_true", help="mask value > 0 -> 1")
    ap.add_argument("--label-map", default=None, help="raw:class pairs, e.g. 0:0,128:1,255:2")
    ap.add_argument("--name", default="folder", help="dataset name stored in the datalist")
    ap.add_argument("--grey", action="store_true", help="2D: convert images to one grey channel")
    ap.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), default=None, help="2D only")
    ap.add_argument("--spacing", type=float, nargs=3, default=None, help="3D: override the header spacing")
    a = ap.parse_args(argv)
    if a.binarize and a.label_map:
        raise PreparationError("--binarize and --label-map are exclusive.")
    img_dir, mask_dir = require_dir(a.images, "images"), require_dir(a.masks, "masks")
    lmap = parse_label_map(a.label_map) if a.label_map else None
    masks = {}
    for p in sorted(mask_dir.iterdir()):
        if _is_supported(p):
            stem = strip_ext(p.name)
            if a.mask_suffix and stem.endswith(a.mask_suffix):
                stem = stem[: -len(a.mask_suffix)]
            masks[stem] = p
    images = [p for p in sorted(img_dir.iterdir()) if _is_supported(p)]
    if not images:
        raise PreparationError(f"{img_dir}: no image file (PNG/BMP/TIFF/JPEG/NIfTI/NRRD) found.")
    seen: dict[str, Path] = {}
    for img_p in images:
        stem = strip_ext(img_p.name)
        if stem in seen:
            raise PreparationError(f"{img_p}: duplicate case id '{stem}' (also {seen[stem]}); rename one of them.")
        seen[stem] = img_p
    out = Path(a.out)
    labels_raw, records = [], []
    dims = set()
    for img_p in images:
        stem = strip_ext(img_p.name)
        if stem not in masks:
            raise PreparationError(f"{img_p}: no mask '{stem}{a.mask_suffix}.*' in {mask_dir}.")
        lab_p = masks[stem]
        if img_p.name.lower().endswith(VOLUME_EXTS):
            img, spacing = read_volume(img_p)
            lab, lab_spacing = read_volume(lab_p)
            check_same_shape(img.shape[:3], lab.shape, img_p, lab_p)
            if not a.spacing and spacing is not None and lab_spacing is not None and not np.allclose(
                spacing, lab_spacing, rtol=1e-3, atol=1e-4
            ):
                raise PreparationError(
                    f"{lab_p}: image/mask spacing mismatch, mask {tuple(lab_spacing)} vs image {tuple(spacing)} "
                    f"({img_p}); pass --spacing to override both."
                )
            spacing = tuple(a.spacing) if a.spacing else spacing
            dims.add(3)
        else:
            img, spacing = read_image_2d(img_p), None
            if a.grey and img.ndim == 3:
                img = np.round(img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
            lab = read_mask_2d(lab_p)
            check_same_shape(img.shape[:2], lab.shape, img_p, lab_p)
            dims.add(2)
        if lmap is not None:
            bad = sorted(set(np.unique(lab).tolist()) - set(lmap))
            if bad:
                raise PreparationError(f"{lab_p}: mask values {bad[:5]} missing from --label-map.")
            lut_keys = np.array(sorted(lmap))
            lab = np.array([lmap[k] for k in lut_keys])[np.searchsorted(lut_keys, lab)]
        elif a.binarize:
            lab = (lab > 0).astype(np.int64)
        else:
            vals = np.unique(lab)
            if vals.min() < 0 or vals.max() > 254 or not np.all(vals == np.round(vals)):
                raise PreparationError(f"{lab_p}: mask values {vals[:5].tolist()} are not class indices; "
                                       "use --binarize or --label-map.")
        labels_raw.append(int(np.max(lab)))
        records.append((stem, img, lab.astype(np.uint8), spacing))
    if len(dims) > 1:
        raise PreparationError(f"{img_dir}: mixes 2D and 3D images.")
    nd = dims.pop()
    num_classes = (max(lmap.values()) + 1) if lmap else (2 if a.binarize else max(max(labels_raw) + 1, 2))
    channels = {(1 if img.ndim == nd else img.shape[-1]) for _, img, _, _ in records}
    if len(channels) > 1:  # checked before anything is written, so a prepared dataset in --out stays intact
        raise PreparationError(f"{img_dir}: images have different channel counts {sorted(channels)}; try --grey.")
    cases, shapes, counts = [], [], []
    for stem, img, lab, spacing in records:
        if nd == 2:
            if a.resize:
                img, lab = resize_pair_2d(img, lab, a.resize)
            ext = ".png"
            save_png_pair(img, lab, out / "imagesTr" / f"{stem}{ext}", out / "labelsTr" / f"{stem}{ext}")
        else:
            ext = ".nii.gz"
            save_nifti_pair(img, lab, spacing, out / "imagesTr" / f"{stem}{ext}", out / "labelsTr" / f"{stem}{ext}")
        cases.append({"id": stem, "image": f"imagesTr/{stem}{ext}", "label": f"labelsTr/{stem}{ext}"})
        shapes.append(lab.shape)
        counts.append(np.bincount(lab.ravel(), minlength=num_classes)[:num_classes])
    stats = dataset_stats(shapes, counts, num_classes)
    meta = {
        "name": a.name, "spatial_dims": nd, "num_classes": num_classes, "in_channels": channels.pop(),
        "labels": {str(i): ("background" if i == 0 else f"class{i}") for i in range(num_classes)},
        "source": f"folders {img_dir} + {mask_dir}; prepared by scripts/prepare_folder.py",
        "stats": stats,
    }
    path = write_dataset_datalist(out, cases, meta)
    print(format_stats(a.name, stats, {"datalist": path}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

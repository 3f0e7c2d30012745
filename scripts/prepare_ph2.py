#!/usr/bin/env python
"""Prepare PH2 (dermoscopy, 200 cases) from its official layout into PNG + datalist.json.

Input (official distribution, any of these as ROOT): the folder holding ``PH2Dataset``, ``PH2Dataset`` itself,
or ``PH2 Dataset images``; cases ``IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` (RGB) and
``IMDxxx/IMDxxx_lesion/IMDxxx_lesion.bmp`` (1-bit; IMD002 is 24-bit 0/255). The lossy ``.jpg`` copies are ignored.

Output: ``OUT/imagesTr/IMDxxx.png`` (RGB), ``OUT/labelsTr/IMDxxx.png`` (uint8 0/1), ``OUT/datalist.json``.

Examples:
    python scripts/prepare_ph2.py /work/data/raw/ph2 /work/data/ph2
    python scripts/prepare_ph2.py /work/data/raw/ph2 /work/data/ph2_128 --resize 128 128
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from custom_components.data.prepare import (
    PreparationError,
    check_same_shape,
    dataset_stats,
    format_stats,
    read_image_2d,
    read_mask_2d,
    resize_pair_2d,
    save_png_pair,
    write_dataset_datalist,
)


def find_cases_dir(root: Path) -> Path:
    """Locate the ``PH2 Dataset images`` folder under ``root``.

    Args:
        root: user-given root.
    """
    for cand in (root / "PH2Dataset" / "PH2 Dataset images", root / "PH2 Dataset images", root):
        if cand.is_dir() and any(re.fullmatch(r"IMD\d+", p.name) for p in cand.iterdir()):
            return cand
    raise PreparationError(f"{root}: missing folder ('PH2Dataset/PH2 Dataset images/IMDxxx' not found).")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        exit status 0.
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="raw PH2 folder (official layout)")
    ap.add_argument("out", help="output dataset folder")
    ap.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), default=None,
                    help="write a resized copy (image area/bilinear, mask nearest)")
    a = ap.parse_args(argv)
    cases_dir = find_cases_dir(Path(a.root))
    out = Path(a.out)
    ids = sorted(p.name for p in cases_dir.iterdir() if p.is_dir() and re.fullmatch(r"IMD\d+", p.name))
    cases, shapes, counts, native = [], [], [], []
    for cid in ids:
        img_p = cases_dir / cid / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp"
        lab_p = cases_dir / cid / f"{cid}_lesion" / f"{cid}_lesion.bmp"
        img = read_image_2d(img_p)
        raw = read_mask_2d(lab_p)
        check_same_shape(img.shape[:2], raw.shape, img_p, lab_p)
        vals = np.unique(raw)
        if not set(vals.tolist()) <= {0, 1, 255}:
            raise PreparationError(f"{lab_p}: unexpected mask values {vals[:8].tolist()} (expected 0/1 or 0/255).")
        lab = (raw > 0).astype(np.uint8)
        native.append(img.shape[:2])
        if a.resize:
            img, lab = resize_pair_2d(img, lab, a.resize)
        save_png_pair(img, lab, out / "imagesTr" / f"{cid}.png", out / "labelsTr" / f"{cid}.png")
        cases.append({"id": cid, "image": f"imagesTr/{cid}.png", "label": f"labelsTr/{cid}.png"})
        shapes.append(lab.shape)
        counts.append(np.bincount(lab.ravel(), minlength=2)[:2])
    if not cases:
        raise PreparationError(f"{cases_dir}: no IMDxxx case folder found.")
    stats = dataset_stats(shapes, counts, 2)
    native_sizes = sorted({tuple(s) for s in native})
    meta = {
        "name": "PH2", "spatial_dims": 2, "num_classes": 2, "in_channels": 3,
        "labels": {"0": "background", "1": "lesion"},
        "source": f"PH2 official layout ({cases_dir}); prepared by scripts/prepare_ph2.py",
        "resize": list(a.resize) if a.resize else None,
        "stats": stats,
    }
    path = write_dataset_datalist(out, cases, meta)
    print(format_stats("PH2", stats, {"native sizes (H, W)": native_sizes, "datalist": path}))
    return 0


if __name__ == "__main__":
    from custom_components.errors import run_cli

    sys.exit(run_cli(main))

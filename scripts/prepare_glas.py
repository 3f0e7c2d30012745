#!/usr/bin/env python
"""Prepare GlaS (gland segmentation, H&E) from its official layout into PNG + datalist.json.

Input: ROOT holding ``train_N.bmp`` + ``train_N_anno.bmp`` (85), ``testA_N`` (60) and ``testB_N`` (20) pairs
(the official "Warwick QU Dataset" folder). Annotations are instance maps: they are binarised (> 0).

Output: ``OUT/imagesTr/<name>.png`` (RGB), ``OUT/labelsTr/<name>.png`` (uint8 0/1), ``OUT/datalist.json`` with
all cases under ``cases``, the official test sets (testA + testB) under ``official_test`` (make_split uses them as
the test split) and each one under ``official_test_a`` / ``official_test_b``.

Example:
    python scripts/prepare_glas.py "/data/raw/Warwick QU Dataset (Released 2016_07_08)" /work/data/glas
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
    require_dir,
    resize_pair_2d,
    save_png_pair,
    write_dataset_datalist,
)

_PAT = re.compile(r"(train|testA|testB)_(\d+)\.bmp", re.IGNORECASE)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        exit status 0.
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="raw GlaS folder (official layout)")
    ap.add_argument("out", help="output dataset folder")
    ap.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), default=None,
                    help="write a resized copy (image area/bilinear, mask nearest)")
    a = ap.parse_args(argv)
    root = require_dir(a.root, "GlaS root")
    out = Path(a.out)
    found = []
    for p in root.iterdir():
        m = _PAT.fullmatch(p.name)
        if m:
            found.append((m.group(1), int(m.group(2)), p))
    if not found:
        raise PreparationError(f"{root}: no 'train_N.bmp' / 'testA_N.bmp' / 'testB_N.bmp' image found.")
    order = {"train": 0, "testa": 1, "testb": 2}
    found.sort(key=lambda t: (order[t[0].lower()], t[1]))
    cases, shapes, counts, groups = [], [], [], {"train": [], "testa": [], "testb": []}
    for grp, _, img_p in found:
        cid = img_p.name[: -len(".bmp")]
        lab_p = img_p.with_name(f"{cid}_anno.bmp")
        if not lab_p.is_file():
            raise PreparationError(f"{lab_p}: missing annotation file for {img_p}.")
        img = read_image_2d(img_p)
        inst = read_mask_2d(lab_p)
        check_same_shape(img.shape[:2], inst.shape, img_p, lab_p)
        lab = (inst > 0).astype(np.uint8)
        if a.resize:
            img, lab = resize_pair_2d(img, lab, a.resize)
        save_png_pair(img, lab, out / "imagesTr" / f"{cid}.png", out / "labelsTr" / f"{cid}.png")
        cases.append({"id": cid, "image": f"imagesTr/{cid}.png", "label": f"labelsTr/{cid}.png"})
        groups[grp.lower()].append(cid)
        shapes.append(lab.shape)
        counts.append(np.bincount(lab.ravel(), minlength=2)[:2])
    stats = dataset_stats(shapes, counts, 2)
    meta = {
        "name": "GlaS", "spatial_dims": 2, "num_classes": 2, "in_channels": 3,
        "labels": {"0": "background", "1": "gland"},
        "source": f"GlaS official layout ({root}); prepared by scripts/prepare_glas.py",
        "resize": list(a.resize) if a.resize else None,
        "stats": stats,
        "official_test": groups["testa"] + groups["testb"],
        "official_test_a": groups["testa"],
        "official_test_b": groups["testb"],
    }
    path = write_dataset_datalist(out, cases, meta)
    print(format_stats("GlaS", stats, {"train / testA / testB": f"{len(groups['train'])} / {len(groups['testa'])} / "
                                       f"{len(groups['testb'])}", "datalist": path}))
    return 0


if __name__ == "__main__":
    from custom_components.errors import run_cli

    sys.exit(run_cli(main))

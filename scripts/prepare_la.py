#!/usr/bin/env python
"""Prepare LA 2018 (left atrium, LGE-MRI) into NIfTI + datalist.json, from either official layout.

Layouts (``--layout auto`` detects them):

- ``uamt``: ``ROOT/2018LA_Seg_Training Set/<CASE>/mri_norm2.h5`` (datasets ``image`` float32, ``label`` uint8)
  with ``ROOT/train.list`` and ``ROOT/test.list`` (ROOT may also be the folder holding ``data/``). The h5 files
  carry no spacing: ``--spacing`` (default 0.625 mm isotropic) is written in the NIfTI headers.
- ``raw`` (challenge): ``ROOT/<CASE>/lgemri.nrrd`` + ``laendo.nrrd`` (label 255 -> 1), also under
  ``ROOT/Training Set``; spacing taken from the NRRD header; intensities kept as stored (no normalisation).

Output: ``OUT/imagesTr/<CASE>.nii.gz`` (float32), ``OUT/labelsTr/<CASE>.nii.gz`` (uint8 0/1), ``OUT/datalist.json``
with all cases under ``cases`` and, when the list files exist, ``official_train`` / ``official_test`` in file order.

Example:
    python scripts/prepare_la.py /work/data/raw/la/data /work/data/la
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from custom_components.data.prepare import (
    PreparationError,
    check_same_shape,
    dataset_stats,
    format_stats,
    read_volume,
    save_nifti_pair,
    write_dataset_datalist,
)
from custom_components.data.splits import read_id_list

UAMT_DIR = "2018LA_Seg_Training Set"


def detect_layout(root: Path) -> tuple[str, Path]:
    """Return ``(layout, cases_dir)`` for a raw LA folder.

    Args:
        root: user-given root.
    """
    if not root.is_dir():
        raise PreparationError(f"{root}: missing folder (LA root).")
    for base in (root, root / "data"):
        if (base / UAMT_DIR).is_dir() and list((base / UAMT_DIR).glob("*/mri_norm2.h5")):
            return "uamt", base / UAMT_DIR
    for base in (root, root / "Training Set", root / "data"):
        if base.is_dir() and list(base.glob("*/lgemri.nrrd")):
            return "raw", base
    raise PreparationError(
        f"{root}: missing folder: neither '{UAMT_DIR}/<CASE>/mri_norm2.h5' nor '<CASE>/lgemri.nrrd' was found."
    )


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "image" not in f or "label" not in f:
                raise PreparationError(f"{path}: HDF5 file lacks the 'image' and 'label' datasets (has {list(f)}).")
            return np.asarray(f["image"][()], np.float32), np.asarray(f["label"][()])
    except PreparationError:
        raise
    except Exception as e:
        raise PreparationError(f"{path}: unreadable HDF5 file ({type(e).__name__}: {e}).") from e


def _find_list(names: Sequence[Path]) -> Path | None:
    return next((p for p in names if p.is_file()), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        exit status 0.
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="raw LA folder")
    ap.add_argument("out", help="output dataset folder")
    ap.add_argument("--layout", choices=("auto", "uamt", "raw"), default="auto")
    ap.add_argument("--spacing", type=float, nargs=3, default=[0.625, 0.625, 0.625],
                    help="spacing written for the h5 layout (mm)")
    ap.add_argument("--train-list", default=None, help="default: ROOT/train.list if present")
    ap.add_argument("--test-list", default=None, help="default: ROOT/test.list if present")
    a = ap.parse_args(argv)
    root = Path(a.root)
    layout, cases_dir = detect_layout(root)
    if a.layout != "auto" and a.layout != layout:
        raise PreparationError(f"{root}: --layout {a.layout} requested but the folder holds the {layout} layout.")
    out = Path(a.out)
    if layout == "uamt":
        ids = sorted(p.parent.name for p in cases_dir.glob("*/mri_norm2.h5"))
    else:
        ids = sorted(p.parent.name for p in cases_dir.glob("*/lgemri.nrrd"))
    list_bases = [root, cases_dir.parent, root / "data"]
    train_p = Path(a.train_list) if a.train_list else _find_list([b / "train.list" for b in list_bases])
    test_p = Path(a.test_list) if a.test_list else _find_list([b / "test.list" for b in list_bases])
    official_train = read_id_list(train_p) if train_p else None
    official_test = read_id_list(test_p) if test_p else None
    for name, lst, p in (("train", official_train, train_p), ("test", official_test, test_p)):
        missing = [i for i in (lst or []) if i not in set(ids)]
        if missing:
            raise PreparationError(f"{p}: {len(missing)} {name} id(s) without a case folder, e.g. {missing[:3]}.")

    cases, shapes, counts, spacings = [], [], [], set()
    for cid in ids:
        if layout == "uamt":
            src = cases_dir / cid / "mri_norm2.h5"
            img, lab = _read_h5(src)
            spacing = tuple(a.spacing)
            check_same_shape(img.shape, lab.shape, f"{src}:image", f"{src}:label")
        else:
            img_p, lab_p = cases_dir / cid / "lgemri.nrrd", cases_dir / cid / "laendo.nrrd"
            img, spacing = read_volume(img_p)
            lab, _ = read_volume(lab_p)
            check_same_shape(img.shape, lab.shape, img_p, lab_p)
            src = lab_p
        vals = np.unique(lab)
        if not set(vals.tolist()) <= {0, 1, 255}:
            raise PreparationError(f"{src}: unexpected label values {vals[:8].tolist()} (expected 0/1 or 0/255).")
        lab = (lab > 0).astype(np.uint8)
        save_nifti_pair(img, lab, spacing, out / "imagesTr" / f"{cid}.nii.gz", out / "labelsTr" / f"{cid}.nii.gz")
        cases.append({"id": cid, "image": f"imagesTr/{cid}.nii.gz", "label": f"labelsTr/{cid}.nii.gz"})
        shapes.append(lab.shape)
        counts.append(np.bincount(lab.ravel(), minlength=2)[:2])
        spacings.add(tuple(round(s, 4) for s in spacing))
    if not cases:
        raise PreparationError(f"{cases_dir}: no case found.")
    stats = dataset_stats(shapes, counts, 2)
    meta = {
        "name": "LA2018", "spatial_dims": 3, "num_classes": 2, "in_channels": 1,
        "labels": {"0": "background", "1": "left_atrium"},
        "spacing": list(next(iter(spacings))) if len(spacings) == 1 else None,
        "source": f"LA 2018 {layout} layout ({cases_dir}); prepared by scripts/prepare_la.py",
        "stats": stats,
    }
    if official_train is not None:
        meta["official_train"] = official_train
    if official_test is not None:
        meta["official_test"] = official_test
    path = write_dataset_datalist(out, cases, meta)
    print(format_stats("LA2018", stats, {
        "layout": layout, "spacing": sorted(spacings),
        "official_train": len(official_train) if official_train is not None else "none",
        "official_test": len(official_test) if official_test is not None else "none", "datalist": path}))
    return 0


if __name__ == "__main__":
    from custom_components.errors import run_cli

    sys.exit(run_cli(main))

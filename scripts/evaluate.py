#!/usr/bin/env python
"""Evaluate a folder of predicted masks against a datalist's labels under a named protocol.

Predictions (PNG or NIfTI, or any format MONAI's ``LoadImage`` reads, searched recursively) hold class indices
and are matched to the entries of a datalist split by file stem: a prediction ``<stem><postfix>.<ext>`` matches
the entry whose image or label file has stem ``<stem>``. Writes ``metrics.csv`` and ``metrics.json`` and prints
a table. Example::

    python scripts/evaluate.py --pred-dir eval/preds --datalist data/la/datalist.json --protocol la_uamt \\
        --postfix _seg --output-dir eval/metrics_la_uamt
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from custom_components.metrics import (
    PROTOCOLS,
    compute_case_metrics,
    file_stem,
    format_table,
    get_protocol,
    summarize,
    write_reports,
)

PRED_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_SPACING_KEYS = ("pixdim", "spacing", "original_pixdim")


def _fail(msg: str) -> None:
    raise SystemExit(f"scripts/evaluate.py: {msg}")


def find_predictions(pred_dir: Path, postfix: str = "") -> dict[str, Path]:
    """Map each prediction's stem (``postfix`` removed) to its path.

    Args:
        pred_dir: folder searched recursively for files with a known extension.
        postfix: suffix of the stem to remove (e.g. ``_seg`` for ``case_1_seg.nii.gz``); files without it are skipped.
    """
    found: dict[str, Path] = {}
    for path in sorted(pred_dir.rglob("*")):
        if not path.is_file() or not path.name.lower().endswith(PRED_EXTENSIONS):
            continue
        stem = file_stem(path)
        if postfix:
            if not stem.endswith(postfix):
                continue
            stem = stem[: -len(postfix)]
        if stem in found:
            _fail(f"two predictions have the stem {stem!r}: {found[stem]} and {path}.")
        found[stem] = path
    return found


def load_mask(path: Path) -> tuple[np.ndarray, list[float] | None]:
    """Read a label map and its voxel spacing (``None`` for formats without one, such as PNG).

    Args:
        path: mask file.
    """
    from monai.transforms import LoadImage

    img = LoadImage(image_only=True)(str(path))
    spacing = [float(s) for s in img.pixdim] if any(k in img.meta for k in _SPACING_KEYS) else None
    arr = np.asarray(img)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and path.name.lower().endswith((".png", ".bmp", ".tif", ".tiff"))):
        _fail(f"{path} must be a single-channel 2D or 3D label map, got shape {arr.shape}.")
    return arr, spacing


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line arguments.

    Args:
        argv: arguments without the program name (``None``: ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pred-dir", required=True, type=Path, help="folder of predicted masks (class indices)")
    p.add_argument("--datalist", required=True, type=Path, help="datalist JSON with image/label paths")
    p.add_argument("--split", default="test", help="datalist key to evaluate (default: test)")
    p.add_argument("--protocol", default="clean", choices=sorted(PROTOCOLS), help="evaluation protocol")
    p.add_argument("--output-dir", type=Path, default=None, help="default: <pred-dir>/metrics_<protocol>")
    p.add_argument("--num-classes", type=int, default=None, help="default: the datalist's num_classes")
    p.add_argument("--postfix", default="", help="suffix of prediction stems to remove before matching")
    p.add_argument("--largest-cc", action="store_true", help="keep the largest connected component per class")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, write ``metrics.csv`` / ``metrics.json`` and print the summary table; return 0.

    Args:
        argv: command-line arguments without the program name.
    """
    args = parse_args(argv)
    if not args.datalist.is_file():
        _fail(f"datalist {args.datalist} does not exist.")
    if not args.pred_dir.is_dir():
        _fail(f"prediction folder {args.pred_dir} does not exist.")
    meta: dict[str, Any] = json.loads(args.datalist.read_text())
    entries = meta.get(args.split)
    if not isinstance(entries, list) or not entries:
        _fail(f"{args.datalist} has no non-empty list {args.split!r}.")
    num_classes = args.num_classes if args.num_classes is not None else meta.get("num_classes")
    if not isinstance(num_classes, int):
        _fail(f"{args.datalist} has no integer 'num_classes'; pass --num-classes.")
    class_names = meta.get("labels")
    if class_names is not None and len(class_names) != num_classes:
        class_names = None
    protocol = get_protocol(args.protocol, largest_cc=True) if args.largest_cc else get_protocol(args.protocol)
    default_spacing = meta.get("spacing")

    preds = find_predictions(args.pred_dir, args.postfix)
    root = args.datalist.parent
    matched: list[tuple[str, Path, Path]] = []
    missing: list[str] = []
    for i, entry in enumerate(entries):
        if "label" not in entry:
            _fail(f"{args.datalist}: entry {i} of {args.split!r} has no 'label'.")
        stems = [file_stem(entry["label"])] + ([file_stem(entry["image"])] if "image" in entry else [])
        hit = next((s for s in stems if s in preds), None)
        if hit is None:
            missing.append(stems[-1])
        else:
            matched.append((hit, preds[hit], root / entry["label"]))
    if missing:
        _fail(
            f"no prediction in {args.pred_dir} for {len(missing)} of {len(entries)} {args.split!r} entries "
            f"(postfix {args.postfix!r}): {missing[:10]}."
        )

    rows = []
    for stem, pred_path, label_path in matched:
        pred, _ = load_mask(pred_path)
        label, spacing = load_mask(label_path)
        if spacing is None and default_spacing is not None and len(default_spacing) == label.ndim:
            spacing = [float(s) for s in default_spacing]
        try:
            rows.append(compute_case_metrics(pred, label, num_classes, protocol, spacing, stem, class_names))
        except (ValueError, TypeError) as e:
            _fail(f"{pred_path} vs {label_path}: {e}")
    summary = summarize(rows, num_classes, protocol, class_names)
    out_dir = args.output_dir or args.pred_dir / f"metrics_{protocol.name}"
    csv_path, json_path = write_reports(rows, summary, out_dir, protocol)
    if not args.quiet:
        print(format_table(summary))
        print(f"wrote {csv_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

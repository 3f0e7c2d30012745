#!/usr/bin/env python
"""Merge reviewed labels and confident pseudo-labels into a new datalist for another co-training run.

Rules (a human label always wins):

- reviewed labels (a folder of corrected labels, matched to ``unlabeled`` images by file name) join ``labeled``
  with ``"source": "reviewed"``;
- pseudo-labels of ``pseudolabels.json`` (the pseudolabel bundle's output) with ``score >= threshold`` whose image
  is still unlabelled join ``labeled`` with ``"source": "pseudo"`` and their ``score``;
- every other unlabelled image stays in ``unlabeled``;
- a pseudo-label or reviewed label for an image that already has a human label in ``labeled`` is never used: the
  existing entry is kept unchanged and the case is reported; ``validation`` and ``test`` are copied unchanged
  (paths are only re-based when the new datalist lives in another folder).

Example::

    python scripts/merge_pseudolabels.py --datalist data/datalist.json \\
        --pseudolabels bundles/pseudolabel/outputs/pseudolabels/pseudolabels.json --threshold 0.9 \\
        --reviewed data/reviewed_labels --out data/splits/datalist_round2.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custom_components.runtime.files import atomic_write_json  # noqa: E402

__all__ = ["MergeError", "merge_pseudolabels", "main"]

LABEL_EXTS = (".nii.gz", ".nii", ".png", ".nrrd", ".mha", ".tif", ".tiff", ".bmp")
#: file-name suffixes a reviewed label may carry after the image's stem (``case_003_seg.png``)
REVIEWED_SUFFIXES = ("", "_seg", "_label", "_pseudo", "_reviewed")


class MergeError(ValueError):
    """A merge input is invalid (the message names the file and the problem)."""


def _stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for ext in LABEL_EXTS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def _abs(base: Path, p: str) -> str:
    return os.path.normpath(p if os.path.isabs(p) else str(base / p))


def _rebase(entry: dict[str, Any], src: Path, dst: Path, keys: Sequence[str] = ("image", "label")) -> dict[str, Any]:
    out = dict(entry)
    if src.resolve() == dst.resolve():
        return out
    for k in keys:
        if isinstance(out.get(k), str) and not os.path.isabs(out[k]):
            out[k] = os.path.relpath(_abs(src, out[k]), dst)
    return out


def _load_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise MergeError(f"{what} '{path}' does not exist.")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MergeError(f"{what} '{path}' is not valid JSON: {e}.") from e
    if not isinstance(doc, dict):
        raise MergeError(f"{what} '{path}' must hold a JSON object, got {type(doc).__name__}.")
    return doc


def _reviewed_index(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise MergeError(f"reviewed-labels folder '{folder}' does not exist or is not a folder.")
    index: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower().endswith(LABEL_EXTS):
            s = _stem(p)
            if s in index:
                raise MergeError(f"reviewed-labels folder '{folder}': '{index[s].name}' and '{p.name}' have the same "
                                 f"name stem '{s}'.")
            index[s] = p
    return index


def _match_reviewed(image: str, index: dict[str, Path]) -> Path | None:
    s = _stem(image)
    for suffix in REVIEWED_SUFFIXES:
        if s + suffix in index:
            return index[s + suffix]
    return None


def merge_pseudolabels(
    datalist: str | os.PathLike,
    out: str | os.PathLike,
    pseudolabels: str | os.PathLike | None = None,
    threshold: float = 0.9,
    reviewed: str | os.PathLike | None = None,
    list_key: str = "pseudolabels",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the merged datalist to ``out`` and return a summary.

    Args:
        datalist: the datalist of the previous co-training run (keys ``labeled``, ``unlabeled``, ...).
        out: the new datalist file (must differ from ``datalist``).
        pseudolabels: the pseudolabel bundle's ``pseudolabels.json`` (``None``: reviewed labels only).
        threshold: minimal score of a pseudo-label to join ``labeled``.
        reviewed: a folder of reviewed (corrected) labels matched to unlabelled images by name
            (``<image stem><suffix>.<ext>``, suffix one of ``"", "_seg", "_label", "_pseudo", "_reviewed"``).
        list_key: the list key in ``pseudolabels``.
        overwrite: replace an existing ``out``.

    Returns:
        counts: ``reviewed``, ``pseudo``, ``below_threshold``, ``unlabeled``, ``protected`` (human labels that a
        pseudo-label or reviewed label would have replaced: kept), ``unknown`` (pseudo-labels of images not in the
        datalist), plus the ``protected_images`` list.

    Raises:
        MergeError: missing or malformed inputs, a missing pseudo-label file, or ``out`` already existing.
    """
    src, dst_file = Path(datalist), Path(out)
    if not 0.0 <= threshold <= 1.0:
        raise MergeError(f"threshold must be in [0, 1], got {threshold}.")
    if dst_file.resolve() == src.resolve():
        raise MergeError(f"output '{dst_file}' is the input datalist: write the merged datalist to a new file.")
    if dst_file.exists() and not overwrite:
        raise MergeError(f"output '{dst_file}' already exists; pass --overwrite to replace it.")
    doc = _load_json(src, "datalist")
    base, dst = src.parent, dst_file.parent
    for key in ("labeled", "unlabeled"):
        if not isinstance(doc.get(key, []), list):
            raise MergeError(f"datalist '{src}': '{key}' must be a list.")
    labeled = [dict(e) for e in doc.get("labeled", [])]
    unlabeled = [dict(e) for e in doc.get("unlabeled", [])]
    human = {_abs(base, e["image"]) for e in labeled}
    unl_abs = {_abs(base, e["image"]): e for e in unlabeled}
    summary: dict[str, Any] = {"reviewed": 0, "pseudo": 0, "below_threshold": 0, "unlabeled": 0, "protected": 0,
                               "unknown": 0, "protected_images": []}
    new_label: dict[str, dict[str, Any]] = {}  # abs image -> new labeled entry (absolute paths)

    if reviewed is not None:
        index = _reviewed_index(Path(reviewed))
        for e in labeled:
            if _match_reviewed(e["image"], index) is not None:
                summary["protected"] += 1
                summary["protected_images"].append(e["image"])
        for img_abs, e in unl_abs.items():
            lab = _match_reviewed(img_abs, index)
            if lab is not None:
                new_label[img_abs] = {**e, "image": img_abs, "label": str(lab.resolve()), "source": "reviewed"}
                summary["reviewed"] += 1

    if pseudolabels is not None:
        pl_path = Path(pseudolabels)
        pl = _load_json(pl_path, "pseudo-label list")
        entries = pl.get(list_key)
        if not isinstance(entries, list):
            raise MergeError(f"pseudo-label list '{pl_path}' has no '{list_key}' list (keys {sorted(pl)}).")
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not {"image", "pseudo_label", "score"} <= set(e):
                raise MergeError(f"pseudo-label list '{pl_path}': entry {i} needs 'image', 'pseudo_label' and 'score', "
                                 f"got {e!r}.")
            img_abs = _abs(pl_path.parent, e["image"])
            if img_abs in human:
                summary["protected"] += 1  # a pseudo-label never replaces a human label
                summary["protected_images"].append(e["image"])
                continue
            if img_abs not in unl_abs:
                summary["unknown"] += 1
                continue
            if img_abs in new_label:  # reviewed beats pseudo
                continue
            if float(e["score"]) < threshold:
                summary["below_threshold"] += 1
                continue
            lab_abs = _abs(pl_path.parent, e["pseudo_label"])
            if not os.path.isfile(lab_abs):
                raise MergeError(f"pseudo-label list '{pl_path}': pseudo-label file '{lab_abs}' of entry {i} does not "
                                 "exist.")
            entry = {**unl_abs[img_abs], "image": img_abs, "label": lab_abs, "source": "pseudo",
                     "score": float(e["score"])}
            if e.get("uncertainty"):
                entry["uncertainty"] = _abs(pl_path.parent, e["uncertainty"])
            new_label[img_abs] = entry
            summary["pseudo"] += 1

    def rel(entry: dict[str, Any]) -> dict[str, Any]:
        r = dict(entry)
        for k in ("image", "label", "uncertainty"):
            if isinstance(r.get(k), str) and os.path.isabs(r[k]):
                r[k] = os.path.relpath(r[k], dst.resolve())
        return r

    merged = dict(doc)
    merged["labeled"] = [_rebase(e, base, dst) for e in labeled] + [rel(new_label[k]) for k in sorted(new_label)]
    merged["unlabeled"] = [_rebase(e, base, dst) for img, e in unl_abs.items() if img not in new_label]
    for key in ("validation", "test"):
        if key in doc:
            merged[key] = [_rebase(e, base, dst) for e in doc[key]]
    summary["unlabeled"] = len(merged["unlabeled"])
    merged["merged_from"] = {
        "datalist": os.path.relpath(src.resolve(), dst.resolve()),
        "pseudolabels": os.path.relpath(Path(pseudolabels).resolve(), dst.resolve()) if pseudolabels else None,
        "reviewed": os.path.relpath(Path(reviewed).resolve(), dst.resolve()) if reviewed else None,
        "threshold": threshold,
        **{k: v for k, v in summary.items() if k != "protected_images"},
    }
    dst.mkdir(parents=True, exist_ok=True)
    atomic_write_json(merged, dst_file)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datalist", required=True, help="datalist of the previous run")
    ap.add_argument("--out", required=True, help="the new datalist file")
    ap.add_argument("--pseudolabels", default=None, help="pseudolabels.json of the pseudolabel bundle")
    ap.add_argument("--threshold", type=float, default=0.9,
                    help="minimal confidence score of a pseudo-label (default 0.9)")
    ap.add_argument("--reviewed", default=None, help="folder of reviewed labels, matched to unlabelled images by name")
    ap.add_argument("--list-key", default="pseudolabels", help="list key in the pseudo-label file")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    if args.pseudolabels is None and args.reviewed is None:
        ap.error("give --pseudolabels, --reviewed, or both")
    try:
        s = merge_pseudolabels(args.datalist, args.out, args.pseudolabels, args.threshold, args.reviewed,
                               args.list_key, args.overwrite)
    except MergeError as e:
        print(f"merge_pseudolabels: error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: +{s['reviewed']} reviewed, +{s['pseudo']} pseudo (score >= {args.threshold}), "
        f"{s['below_threshold']} below threshold, {s['unlabeled']} still unlabelled"
    )
    if s["protected"]:
        print(f"kept {s['protected']} existing human label(s) untouched (a pseudo/reviewed label matched them): "
              f"{s['protected_images']}")
    if s["unknown"]:
        print(f"ignored {s['unknown']} pseudo-label(s) of images not in the datalist's unlabeled list")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
r"""Generic converter: folders of images, their masks and (optionally) images without masks, into the project's format.

Images and masks may be PNG/BMP/TIFF/JPEG/GIF (2D -> PNG) or NIfTI/NRRD/MHA (3D -> NIfTI). The mask of an image is
found by name: ``--mask-pattern`` (default ``{id}``) with ``{id}`` the image's name without extension, or what
``--id-regex`` captures from it; masks may have another extension than their images. Mask values must be class
indices 0..K-1 unless ``--binarize`` (value > 0 -> 1) or ``--label-map`` (e.g. ``0:0,128:1,255:2``) is given.
Images without any mask go in with ``--unlabeled-images DIR`` (repeatable); a labelled image whose mask is
missing is an error unless ``--no-mask-as-unlabeled``. Nothing is written before every file has been read and
checked: NaN / Inf image voxels (unless ``--replace-nonfinite``), a 3D mask whose affine (spacing, direction,
origin) differs from its image's, a mask value outside the label set (``--num-classes``), a class without any
voxel in all masks (unless ``--allow-empty-classes``) and a non-empty ``--out`` (unless ``--overwrite``, which
removes the earlier ``imagesTr/``, ``labelsTr/``, ``splits/`` and ``datalist.json``) are errors naming the file.

Examples:
    python scripts/prepare_folder.py --images raw/images --masks raw/masks --mask-pattern '{id}_mask' --binarize \
        --unlabeled-images raw/unlabelled --out /work/data/mine --name mine
    # DRIVE: 21_training.tif <-> 21_manual1.gif
    python scripts/prepare_folder.py --images DRIVE/training/images --masks DRIVE/training/1st_manual \
        --id-regex '^(\d+)_' --mask-pattern '{id}_manual1' --binarize --out /work/data/drive
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from custom_components.data.prepare import format_stats, parse_label_map, prepare_folder
from custom_components.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="folder of labelled images")
    ap.add_argument("--masks", required=True, help="folder of their masks")
    ap.add_argument("--out", required=True, help="output dataset folder")
    ap.add_argument("--unlabeled-images", action="append", default=[], metavar="DIR",
                    help="folder of images without masks (repeatable)")
    ap.add_argument("--mask-pattern", default=None, help="mask name without extension, {id} = case id (default {id})")
    ap.add_argument("--mask-suffix", default="", help="shorthand for --mask-pattern '{id}SUFFIX', e.g. _mask")
    ap.add_argument("--id-regex", default=None,
                    help="regex taking the case id from an image name (named group 'id', else group 1)")
    ap.add_argument("--no-mask-as-unlabeled", action="store_true",
                    help="an image of --images without a mask becomes unlabelled instead of an error")
    ap.add_argument("--binarize", action="store_true", help="mask value > 0 -> 1")
    ap.add_argument("--label-map", default=None, help="raw:class pairs, e.g. 0:0,128:1,255:2")
    ap.add_argument("--name", default="folder", help="dataset name stored in the datalist")
    ap.add_argument("--grey", action="store_true", help="2D: convert images to one grey channel")
    ap.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), default=None, help="2D only")
    ap.add_argument("--spacing", type=float, nargs=3, default=None,
                    help="3D: override the header spacing (image and mask headers are then not compared)")
    ap.add_argument("--num-classes", type=int, default=None,
                    help="declared label set 0..K-1 (default: from --label-map/--binarize or the largest mask value)")
    ap.add_argument("--replace-nonfinite", action="store_true",
                    help="set NaN/Inf image voxels to the image's smallest finite value (reported) instead of failing")
    ap.add_argument("--allow-empty-classes", action="store_true",
                    help="a class without any voxel in all masks (or all-empty masks) is a warning, not an error")
    ap.add_argument("--overwrite", action="store_true",
                    help="--out may hold an earlier dataset: its imagesTr/, labelsTr/, splits/, datalist.json are "
                         "removed first")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        exit status 0 (a ``PreparationError`` propagates; ``run_cli`` turns it into exit status 2).
    """
    ap = build_parser()
    a = ap.parse_args(argv)
    if a.mask_pattern and a.mask_suffix:
        ap.error("--mask-pattern and --mask-suffix are exclusive")
    path, stats = prepare_folder(
        a.images, a.masks, a.out, unlabeled_images=a.unlabeled_images,
        mask_pattern=a.mask_pattern or "{id}" + a.mask_suffix, id_regex=a.id_regex,
        no_mask_as_unlabeled=a.no_mask_as_unlabeled, binarize=a.binarize,
        label_map=parse_label_map(a.label_map) if a.label_map else None, name=a.name, grey=a.grey,
        resize=a.resize, spacing=a.spacing, num_classes=a.num_classes, replace_nonfinite=a.replace_nonfinite,
        allow_empty_classes=a.allow_empty_classes, overwrite=a.overwrite,
    )
    n_unl = len(json.loads(path.read_text()).get("unlabeled", []))
    extra: dict = {"unlabelled images": n_unl, "datalist": path}
    if stats.get("removed"):
        extra["removed from the earlier dataset"] = ", ".join(stats["removed"])
    print(format_stats(a.name, stats, extra))
    for f, n in stats.get("nonfinite_replaced", {}).items():
        print(f"WARNING: {f}: {n} non-finite voxel(s) replaced by the image's smallest finite value", file=sys.stderr)
    for w in stats.get("warnings", []):
        print(f"WARNING: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

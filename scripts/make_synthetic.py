#!/usr/bin/env python
"""Write the built-in synthetic dataset (images, labels, datalist.json) and optionally one split, or, with
--folders, the same kind of cases as a user's raw folders (images/, masks/, unlabelled/, new/; no datalist).

Examples:
    python scripts/make_synthetic.py --out /tmp/synthetic2d
    python scripts/make_synthetic.py --out /tmp/synthetic3d --spatial-dims 3 --num-cases 40 --image-size 48
    python scripts/make_synthetic.py --out /tmp/syn --labeled-ratio 0.1 --seed 0   # also writes splits/...
    python scripts/make_synthetic.py --out /tmp/syn4 --num-classes 4 --rare-class-prob 0.3   # 4 classes, one rare
    python scripts/make_synthetic.py --out my_data --folders --num-cases 6 --num-unlabelled 20 --num-new 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from custom_components.data.synthetic import make_synthetic_dataset, make_synthetic_folders


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--spatial-dims", type=int, default=2, choices=(2, 3))
    p.add_argument("--num-cases", type=int, default=120)
    p.add_argument("--image-size", type=int, nargs="+", default=None, help="one int or one per axis")
    p.add_argument("--num-classes", type=int, default=2,
                   help="classes incl. background: 2 binary; 3 adds a core inside each lesion; 4.. add striped "
                        "structures")
    p.add_argument("--rare-class-prob", type=float, default=1.0,
                   help="with --num-classes >= 4: probability that the last class (made small) appears in a case")
    p.add_argument("--in-channels", type=int, default=None, help="default 3 (2D) / 1 (3D)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (also the split seed)")
    p.add_argument("--spacing", type=float, nargs="+", default=[1.0], help="3D voxel spacing")
    p.add_argument("--labeled-ratio", type=float, default=None, help="also write splits/datalist_r<ratio>_s<seed>.json")
    p.add_argument("--folders", action="store_true",
                   help="write raw folders as a user has them: images/ and masks/ (same names, class indices; "
                        "--num-cases of them), unlabelled/ and new/ (images only); no datalist")
    p.add_argument("--num-unlabelled", type=int, default=20, help="with --folders: images without a mask")
    p.add_argument("--num-new", type=int, default=3, help="with --folders: images to segment after training")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        exit status 0.
    """
    p = build_parser()
    a = p.parse_args(argv)
    size = None if a.image_size is None else (a.image_size[0] if len(a.image_size) == 1 else a.image_size)
    spacing = a.spacing[0] if len(a.spacing) == 1 else a.spacing
    t0 = time.time()
    if a.folders:
        if a.labeled_ratio is not None:
            p.error("--labeled-ratio splits a dataset; with --folders run prepare_folder.py and make_split.py")
        try:
            written = make_synthetic_folders(
                a.out, spatial_dims=a.spatial_dims, num_labelled=a.num_cases, num_unlabelled=a.num_unlabelled,
                num_new=a.num_new, image_size=size, num_classes=a.num_classes, in_channels=a.in_channels,
                seed=a.seed, spacing=spacing, rare_class_prob=a.rare_class_prob,
            )
        except ValueError as e:
            p.error(str(e))
        print(f"wrote {a.spatial_dims}D, {a.num_classes}-class folders under {a.out} in {time.time() - t0:.1f} s: "
              + ", ".join(f"{d}/ {len(f)}" for d, f in written.items()))
        return 0
    path = make_synthetic_dataset(
        a.out, spatial_dims=a.spatial_dims, num_cases=a.num_cases, image_size=size, num_classes=a.num_classes,
        in_channels=a.in_channels, seed=a.seed, spacing=spacing, rare_class_prob=a.rare_class_prob,
    )
    meta = json.loads(path.read_text())
    print(f"wrote {len(meta['cases'])} cases ({meta['spatial_dims']}D, size {meta['image_size']}, "
          f"{meta['num_classes']} classes, {meta['in_channels']} channels) to {path} in {time.time() - t0:.1f} s")
    if a.labeled_ratio is not None:
        from custom_components.data.splits import make_split, write_split

        split = make_split(path, labeled_ratio=a.labeled_ratio, seed=a.seed)
        out = write_split(split, path.parent)
        print(f"split -> {out}: "
              + ", ".join(f"{k} {len(split[k])}" for k in ("labeled", "unlabeled", "validation", "test")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

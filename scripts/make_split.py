#!/usr/bin/env python
"""Make per-regime datalists ``<dataset_dir>/splits/datalist_r<ratio>_s<seed>.json`` from a prepared dataset.

Images without a mask (the ``unlabeled`` list written by ``prepare_folder.py --unlabeled-images``) go into the
``unlabeled`` list of every split whole; only the labelled cases are divided into labelled / validation / test
(``--ratio 1.0``: every labelled training case keeps its label). ``--val-list`` / ``--test-list`` files of ids
(one per line, e.g. an official test set) win over the fractions.

Examples:
    python scripts/make_split.py data/mine/datalist.json --ratio 1.0 --test-list official_test.txt
    python scripts/make_split.py /work/data/ph2/datalist.json --ratio 0.05 0.1 0.2 1.0 --seed 0
    python scripts/make_split.py /work/data/la/datalist.json --ratio 0.05 0.1 0.2   # uses official_train/test
    python scripts/make_split.py data/datalist.json --ratio 0.1 --official-test test.list --official-train train.list
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from custom_components.data.splits import make_split, read_id_list, write_split
from custom_components.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datalist", help="dataset datalist.json holding all cases under 'cases'")
    p.add_argument("--ratio", type=float, nargs="+", required=True, help="labelled ratio(s) in (0, 1]")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="split seed(s)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--test-list", "--official-test", dest="official_test", default=None,
                   help="file with the test ids, one per line")
    p.add_argument("--val-list", default=None, help="file with the validation ids, one per line")
    p.add_argument("--official-train", default=None, help="file with training ids in order, one per line")
    p.add_argument("--no-official", action="store_true", help="ignore official lists stored in the datalist")
    p.add_argument("--labeled-first-n", type=int, default=None, help="labelled = first N of the training pool")
    p.add_argument("--min-labeled", type=int, default=1)
    p.add_argument("--out", default=None, help="output file (only with one ratio and one seed)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        exit status 0 (a ``SplitError`` propagates; ``run_cli`` turns it into exit status 2).
    """
    a = build_parser().parse_args(argv)
    if a.out and (len(a.ratio) > 1 or len(a.seed) > 1):
        build_parser().error("--out needs exactly one --ratio and one --seed")
    dl = Path(a.datalist)
    ot = read_id_list(a.official_test) if a.official_test else None
    otr = read_id_list(a.official_train) if a.official_train else None
    vl = read_id_list(a.val_list) if a.val_list else None
    for seed in a.seed:
        for ratio in a.ratio:
            split = make_split(
                dl, labeled_ratio=ratio, seed=seed, val_fraction=a.val_fraction, test_fraction=a.test_fraction,
                official_test=ot, official_train=otr, min_labeled=a.min_labeled, labeled_first_n=a.labeled_first_n,
                use_official=not a.no_official, val_ids=vl,
            )
            out = write_split(split, dl.parent, a.out)
            counts = ", ".join(f"{k} {len(split[k])}" for k in ("labeled", "unlabeled", "validation", "test"))
            print(f"ratio {ratio:g} seed {seed}: {counts} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

#!/usr/bin/env python
"""Make per-regime datalists ``<dataset_dir>/splits/datalist_r<ratio>_s<seed>.json`` from a prepared dataset.

Images without a mask (the ``unlabeled`` list written by ``prepare_folder.py --unlabeled-images``) go into the
``unlabeled`` list of every split whole; only the labelled cases are divided into labelled / validation / test
(``--ratio 1.0``: every labelled training case keeps its label). ``--val-list`` / ``--test-list`` files of ids
(one per line, e.g. an official test set) win over the fractions.

With few labelled cases (20 or fewer) a held-out test split of 1-4 images says nothing; ``--folds K`` (or
``--cv``: K = 5) writes ``splits/datalist_cv<k>_f<i>_s<seed>.json`` instead: k-fold cross-validation over the
labelled cases (one case per fold when there are fewer than K), the fold's cases as ``test``, the other labelled
cases + the whole unlabelled pool training, validation carved from the training fold (none under 3 cases:
``"selection": "last"``). A ratio split whose test or validation split has fewer than 5 cases prints a warning.

Examples:
    python scripts/make_split.py data/mine/datalist.json --folds 5
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

from custom_components.data.splits import FEW_LABELS, fold_filename, make_folds, make_split, read_id_list, write_split
from custom_components.errors import run_cli
from custom_components.metrics.stats import MIN_CASES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datalist", help="dataset datalist.json holding all cases under 'cases'")
    p.add_argument("--ratio", type=float, nargs="+", default=None, help="labelled ratio(s) in (0, 1]")
    p.add_argument("--folds", type=int, default=None,
                   help="k-fold cross-validation over the labelled cases instead of a ratio split (few labels)")
    p.add_argument("--cv", action="store_true", help="the same as --folds 5")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="split seed(s)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="validation fraction (default 0.1 of the labelled cases; --folds: 0.2 of the training fold)")
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
    if a.cv and a.folds is None:
        a.folds = 5
    if a.folds is not None:
        return _folds(a)
    if a.ratio is None:
        build_parser().error("give --ratio, or --folds / --cv for cross-validation")
    if a.out and (len(a.ratio) > 1 or len(a.seed) > 1):
        build_parser().error("--out needs exactly one --ratio and one --seed")
    dl = Path(a.datalist)
    ot = read_id_list(a.official_test) if a.official_test else None
    otr = read_id_list(a.official_train) if a.official_train else None
    vl = read_id_list(a.val_list) if a.val_list else None
    for seed in a.seed:
        for ratio in a.ratio:
            split = make_split(
                dl, labeled_ratio=ratio, seed=seed, val_fraction=0.1 if a.val_fraction is None else a.val_fraction,
                test_fraction=a.test_fraction,
                official_test=ot, official_train=otr, min_labeled=a.min_labeled, labeled_first_n=a.labeled_first_n,
                use_official=not a.no_official, val_ids=vl,
            )
            out = write_split(split, dl.parent, a.out)
            counts = ", ".join(f"{k} {len(split[k])}" for k in ("labeled", "unlabeled", "validation", "test"))
            print(f"ratio {ratio:g} seed {seed}: {counts} -> {out}")
            small = [f"{k} has {len(split[k])} case(s)" for k in ("test", "validation") if len(split[k]) < MIN_CASES]
            if small:
                n_lab = len(split["labeled"]) + len(split["validation"]) + len(split["test"])
                print(f"WARNING: {' and '.join(small)} (fewer than {MIN_CASES}): a score or a model selection on "
                      f"so few cases is noise. With {n_lab} labelled cases"
                      + (" use cross-validation: --folds 5 (each labelled case is tested once)."
                         if n_lab <= FEW_LABELS else " raise --test-fraction / --val-fraction."), file=sys.stderr)
    return 0


def _folds(a: argparse.Namespace) -> int:
    if a.out:
        build_parser().error("--out is not used with --folds (one file per fold)")
    dl = Path(a.datalist)
    for seed in a.seed:
        folds = make_folds(dl, num_folds=a.folds, seed=seed,
                           val_fraction=0.2 if a.val_fraction is None else a.val_fraction)
        for f in folds:
            out = write_split(f, dl.parent, dl.parent / "splits" / fold_filename(f["num_folds"], f["fold"], seed))
            counts = ", ".join(f"{k} {len(f[k])}" for k in ("labeled", "unlabeled", "validation", "test"))
            sel = "" if f["selection"] == "best" else " (no validation: the last checkpoint is kept)"
            print(f"fold {f['fold']}/{f['num_folds']} seed {seed}: {counts}{sel} -> {out}")
        n = sum(len(f["test"]) for f in folds)
        if n > FEW_LABELS:
            print(f"note: {n} labelled cases; cross-validation is meant for {FEW_LABELS} or fewer (a held-out "
                  "--ratio split is also fine).")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

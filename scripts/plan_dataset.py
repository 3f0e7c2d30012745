#!/usr/bin/env python
"""Plan the training of a prepared dataset from its fingerprint, the machine and a time budget -> ``plan.json``.

The plan (``custom_components/experiments/plan.py``) chooses the working resolution (the thinnest labelled
structure stays at least 3 px wide; never upsampled), patches and a sliding window for images still too large,
the batch, the channel widths and the iterations per phase (the same for every compared method) that fit the time
budget; each choice comes with a ``reason``.

Examples:
    python scripts/plan_dataset.py data/mine --time-budget 30m
    python scripts/plan_dataset.py data/mine/datalist.json --time-budget 2h --methods supervised full --out plan.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from custom_components.errors import UserError, run_cli
from custom_components.experiments.plan import fingerprint, machine, make_plan, parse_duration


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="prepared dataset folder (with datalist.json) or its datalist.json")
    p.add_argument("--time-budget", required=True, help="wall time for all runs, e.g. 30m, 2h, 1h30m")
    p.add_argument("--methods", nargs="+", default=["supervised", "cps", "full"], help="compared methods")
    p.add_argument("--runs", type=int, default=None,
                   help="training runs per method (default: the cross-validation folds with <= 20 labelled cases)")
    p.add_argument("--out", default=None, help="output file (default <dataset>/plan.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0."""
    a = build_parser().parse_args(argv)
    src = Path(a.dataset)
    dl = src / "datalist.json" if src.is_dir() else src
    if not dl.is_file():
        raise UserError(f"{dl}: no datalist.json (prepare the dataset first: scripts/prepare_folder.py).")
    try:
        budget = parse_duration(a.time_budget)
        plan = make_plan(fingerprint(dl), machine(), budget, methods=a.methods, runs=a.runs)
    except ValueError as e:
        raise UserError(str(e)) from e
    out = Path(a.out) if a.out else dl.parent / "plan.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(plan, indent=2))
    for key in ("resolution", "patch", "batch_size", "channels", "iterations"):
        print(f"{key}: {plan[key]['reason']}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

#!/usr/bin/env python
"""Experiment runner (command line of ``custom_components.experiments``): splits, training of every method, test
evaluation, aggregation, tables and figures.

For a prepared dataset (``datalist.json`` with ``"cases"``) and every labelled ratio and seed, trains the requested
methods (``custom_components/experiments/methods.py``) with the bundles under a profile (bundle settings in
``bundles/<phase>/configs/profiles/<profile>.json``, iteration budgets in
``custom_components/experiments/profiles/<profile>.json``), evaluates them on the test split and writes
``<results_dir>/<dataset>.md``, ``.json`` and figures. Resumable; see ``custom_components/experiments/runner.py``.

Examples::

    python scripts/run_experiments.py --dataset work_dirs/default_data/synthetic_2d/datalist.json --profile quick \\
        --methods supervised cps_diffusion full upper --ratios 0.1 --seeds 0
    python scripts/run_experiments.py --dataset /work/data/ph2_128/datalist.json --profile ph2 \\
        --methods supervised cps_diffusion full upper --ratios 0.05 0.1 0.2 --seeds 0 1 2 --protocol paper2d clean
    python scripts/run_experiments.py ... --methods full --rounds 1 --round-mode chained   # ablation
    python scripts/run_experiments.py ... --override cotrain:max_epochs=50 --override "*:num_workers=0"
    python scripts/run_experiments.py --dataset data/mine --methods supervised full --cv 5   # few labels

With at most 20 labelled cases and no official test split the runner cross-validates by default (``--cv``): each
labelled case is tested once, the scores are pooled over the folds, and the recommended model (the best method,
supervised-only included) is retrained on every labelled case into ``<work_dir>/<name>/recommended/``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from custom_components.experiments import METHODS, Experiment, RunnerError, RunnerSettings, available_profiles
from custom_components.experiments.environment import REPO_ROOT, relative_path
from custom_components.experiments.methods import DEFAULT_ROUND_MODE, DEFAULT_ROUNDS
from custom_components.experiments.runner import PROTOCOL_NAMES, parse_iterations, parse_override


def build_parser() -> argparse.ArgumentParser:
    """The command-line arguments (one per ``RunnerSettings`` field)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="the dataset's datalist.json (with 'cases') or its folder")
    p.add_argument("--name", default=None, help="dataset name in outputs (default: the dataset folder's name)")
    p.add_argument("--profile", choices=[*available_profiles(), "auto"], default="quick",
                   help="a named profile (the benchmarks), or auto: the dataset's plan.json (scripts/plan_dataset.py)")
    p.add_argument("--plan", default=None, help="--profile auto: the plan file (default <dataset dir>/plan.json)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                   help="; ".join(f"{m.name}: {m.description}" for m in METHODS.values()))
    p.add_argument("--ratios", nargs="+", type=float, default=[0.1], help="labelled ratios in (0, 1]")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="split seeds (also the training seeds)")
    p.add_argument("--seed-ratios", nargs="+", default=[], metavar="SEED=R[,R...]",
                   help="run SEED only at these ratios (e.g. 1=0.1: a second seed at 10 %% only); default: all")
    p.add_argument("--protocol", nargs="+", choices=PROTOCOL_NAMES, default=["clean"],
                   help="evaluation protocol(s); the first one is plotted (la_uamt: 3D, the UA-MT sliding window)")
    p.add_argument("--largest-cc", action="store_true",
                   help="keep the largest connected component of the prediction before the metrics")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="diffusion rounds R of the full method")
    p.add_argument("--round-mode", choices=("independent", "chained"), default=DEFAULT_ROUND_MODE)
    p.add_argument("--backbone", choices=("diffusion_unet", "fast"), default=None,
                   help="backbone of both diffusion pathways in phase 1 and the co-training methods (default: the "
                        "bundles', fast: the supervised UNet's layout with the timestep, docs/performance.md; "
                        "diffusion_unet: MONAI's DiffusionModelUNet, the paper's); given, it marks the run names "
                        "(full_diffusion_unet)")
    p.add_argument("--round-batch", choices=("all", "unlabeled"), default=None,
                   help="the diffusion rounds on the unlabelled half only (the bundles' default, unlabeled) or the "
                        "whole batch (all, the paper's); given, it marks the run names (full_all)")
    p.add_argument("--no-pretrain", action="store_true", help="full method without phase 1 (ablation)")
    p.add_argument("--override", action="append", default=[], metavar="PHASE:KEY=VALUE",
                   help="bundle id for one phase (supervised, teacher_pretrain, cotrain, or * for all); "
                        "VALUE is JSON when it parses; repeatable")
    p.add_argument("--iterations", nargs="+", default=[], metavar="PHASE=N",
                   help="override the profile's iteration budget of a phase (e.g. cotrain=400 teacher_pretrain=300)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="validation fraction (default 0.1 of a ratio split's labelled cases, 0.2 of a cross-validation "
                        "fold's training cases; a fold's carve-out under 3 cases is dropped: the last checkpoint)")
    p.add_argument("--cv", type=int, default=None, metavar="K",
                   help="K-fold cross-validation over the labelled cases (0: off). Default: 5 folds (one case per fold "
                        "with fewer) when the dataset has at most 20 labelled cases and no official test split, else "
                        "ratio splits; the output says which")
    p.add_argument("--no-final-model", action="store_true",
                   help="after cross-validation, do not retrain the recommended method on every labelled case")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--work-dir", default=str(REPO_ROOT / "work_dirs"))
    p.add_argument("--results-dir", default=str(REPO_ROOT / "docs" / "results"))
    p.add_argument("--num-qualitative", type=int, default=4, help="test cases in the qualitative figure")
    p.add_argument("--num-threads", type=int, default=None,
                   help="OMP/MKL threads of each bundle process unless already set in the environment "
                        "(default: the profile's num_threads, 1 for quick; else the cores / --jobs with --jobs > 1 and "
                        "torch's default, all cores, for one run at a time; 0 = torch's default)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained side by side (separate processes; one small 2D run leaves most of a GPU idle). "
                        "CPU threads per run default to the cores divided by --jobs")
    p.add_argument("--force", action="store_true", help="delete and rerun phases whose settings changed")
    p.add_argument("--phase1-ratio", type=float, default=None,
                   help="the ratio whose split phase 1 uses (default: the smallest of --ratios); give the smallest "
                        "ratio of an earlier call on the same --name/--work-dir to reuse its phase 1 in an ablation")
    return p


def settings_from_args(args: argparse.Namespace) -> RunnerSettings:
    """``RunnerSettings`` from parsed arguments.

    Raises:
        RunnerError: a malformed ``--override`` / ``--iterations`` or a setting out of range.
    """
    return RunnerSettings(
        dataset=Path(args.dataset), name=args.name, profile=args.profile, plan=args.plan, methods=list(args.methods),
        ratios=list(args.ratios), seeds=list(args.seeds), seed_ratios=parse_seed_ratios(args.seed_ratios),
        protocols=list(args.protocol), largest_cc=True if args.largest_cc else None, rounds=args.rounds,
        round_mode=args.round_mode, backbone=args.backbone, round_batch=args.round_batch,
        pretrain=not args.no_pretrain,
        overrides=[parse_override(o) for o in args.override], iterations=parse_iterations(args.iterations),
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, work_dir=Path(args.work_dir),
        results_dir=Path(args.results_dir), num_qualitative=args.num_qualitative, num_threads=args.num_threads,
        jobs=args.jobs, force=args.force, phase1_ratio=args.phase1_ratio, cv=args.cv,
        final_model=not args.no_final_model)


def parse_seed_ratios(items: Sequence[str]) -> dict[int, list[float]]:
    """Parse ``SEED=R[,R...]`` items of ``--seed-ratios``.

    Raises:
        RunnerError: not of that form.
    """
    out: dict[int, list[float]] = {}
    for item in items:
        seed, _, rs = item.partition("=")
        try:
            out[int(seed)] = [float(r) for r in rs.split(",")]
        except ValueError:
            raise RunnerError(f"--seed-ratios {item!r}: expected SEED=R[,R...], e.g. 1=0.1.") from None
    return out


def command_line(argv: Sequence[str]) -> str:
    """The command for the results page, with absolute paths written relative to the repository."""
    def rel(a: str) -> str:
        return relative_path(a) if a.startswith("/") else a

    return "python scripts/run_experiments.py " + shlex.join(rel(a) for a in argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        exit status (0 on success, 1 on a runner error, printed last on stderr).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        Experiment(settings_from_args(args), command_line(argv)).run()
    except RunnerError as e:
        print(f"scripts/run_experiments.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from custom_components.errors import run_cli

    sys.exit(run_cli(main))

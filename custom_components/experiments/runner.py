"""Experiment runner: splits, training of every method, test evaluation, then the report.

For a prepared dataset (a ``datalist.json`` holding every case under ``"cases"``, as written by
``scripts/prepare_*.py`` or ``make_synthetic_dataset``) and every labelled ratio and seed, ``Experiment.run``

1. writes the deterministic split ``<work_dir>/<dataset>/splits/datalist_r<ratio>_s<seed>.json``
   (``make_split`` + ``write_split``; the dataset folder itself is never modified);
2. runs the requested methods (``methods.METHODS``), each phase as ``python -m monai.bundle run`` in a subprocess
   on a *copy* of the bundle's ``configs/`` folder under ``<work_dir>/<dataset>/<method>/r<ratio>_s<seed>/<phase>/``
   (the bundles derive ``bundle_root`` from the config file's folder, so models, logs and evaluation outputs land
   there and never inside ``bundles/``). The stacked files are ``train.json``, ``profile_3d.json`` (3D data),
   ``profiles/<profile>.json`` and ``runner_overrides.json`` (dataset ids, the schedule from the profile's
   iteration budget, the method's ids, the user's ``--override``); ``command.sh`` in the same folder reruns the
   phase by hand. Phase 1 uses no label, so it is trained once per seed (under ``<work_dir>/<dataset>/phase1/``)
   and shared by every ratio and every ablation of the call (``Experiment.run_phase1``);
3. evaluates every run on the ``test`` split with the bundle's ``evaluate.json`` under each protocol
   (``<phase>/eval/test_<protocol>/metrics.json``);
4. aggregates per (method, ratio) over seeds and writes ``<results_dir>/<dataset>.md``, ``.json`` and figures
   (``report``), with paths relative to the repository.

Resumable: a finished phase leaves ``runner_done.json`` (its settings fingerprint and wall time) and is skipped
on the next call; an interrupted phase is continued by the bundle's own resumable checkpoint. A phase whose
settings, or whose data (``runtime.rerun.data_fingerprint`` of its datalist: the datalist's bytes and the size
and modification time of every file it lists), changed since its folder was made is refused (``force`` deletes
and reruns it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..metrics.stats import compare_rows
from ..runtime.rerun import data_fingerprint
from . import report
from .budget import Profile, available_profiles, load_profile, schedule_ids
from .environment import REPO_ROOT, environment_info, relative_path
from .methods import DEFAULT_ROUND_MODE, DEFAULT_ROUNDS, METHODS, PHASES, Method, run_name

__all__ = ["BUNDLES_DIR", "DONE_MARKER", "Experiment", "PHASES", "PROTOCOL_NAMES", "RunnerError", "RunnerSettings",
           "SETTINGS_FILE", "fingerprint", "overrides_for", "parse_override", "run_bundle", "run_tasks",
           "write_splits"]

BUNDLES_DIR = REPO_ROOT / "bundles"
PROTOCOL_NAMES = ("clean", "paper2d", "la_uamt")
DONE_MARKER = "runner_done.json"
SETTINGS_FILE = "runner_settings.json"
OVERRIDES_FILE = "runner_overrides.json"
EVAL_OVERRIDES_FILE = "runner_eval_overrides.json"


class RunnerError(RuntimeError):
    """A problem the user must fix (bad argument, failed phase, changed settings)."""


# --------------------------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``PHASE:KEY=VALUE`` (``PHASE`` in ``supervised``, ``teacher_pretrain``, ``cotrain`` or ``*``).

    ``VALUE`` is read as JSON when it parses (``50``, ``1e-3``, ``[32,32]``, ``true``, ``""``), else kept as a string.

    Args:
        text: the override as given on the command line.

    Returns:
        ``(phase, key, value)``.

    Raises:
        RunnerError: not of that form, or an unknown phase.
    """
    m = re.fullmatch(r"\s*([A-Za-z_*]+)\s*:\s*([^=\s]+)\s*=(.*)", text, flags=re.S)
    if not m:
        raise RunnerError(f"--override {text!r}: expected PHASE:KEY=VALUE, e.g. cotrain:max_epochs=50.")
    phase, key, raw = m.group(1), m.group(2), m.group(3).strip()
    if phase != "*" and phase not in PHASES:
        raise RunnerError(f"--override {text!r}: unknown phase {phase!r}; use one of {list(PHASES)} or '*'.")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return phase, key, value


def parse_iterations(items: Sequence[str]) -> dict[str, int]:
    """Parse ``PHASE=N`` budgets (``--iterations cotrain=400``).

    Raises:
        RunnerError: not of that form, an unknown phase or ``N < 1``.
    """
    out = {}
    for item in items:
        phase, _, n = item.partition("=")
        if phase not in PHASES or not n.isdigit() or int(n) < 1:
            raise RunnerError(f"--iterations {item!r}: expected PHASE=N with PHASE in {sorted(PHASES)} and N >= 1.")
        out[phase] = int(n)
    return out


def overrides_for(phase: str, overrides: Sequence[tuple[str, str, Any]]) -> dict[str, Any]:
    """The user overrides that apply to ``phase`` (``*`` first, then phase-specific), in command-line order.

    Args:
        phase: a phase name.
        overrides: parsed overrides from ``parse_override``.
    """
    out: dict[str, Any] = {}
    for p, k, v in overrides:
        if p == "*":
            out[k] = v
    for p, k, v in overrides:
        if p == phase:
            out[k] = v
    return out


@dataclass
class RunnerSettings:
    """Everything one runner call needs (the CLI fills it from its arguments).

    Args:
        dataset: the dataset's ``datalist.json`` (with ``"cases"``) or its folder.
        name: dataset name in outputs (default: the dataset folder's name).
        profile: profile name (``budget.available_profiles()``), or ``auto``: the settings of the dataset's plan
            (``plan``, default ``<dataset_dir>/plan.json`` from ``scripts/plan_dataset.py``).
        methods: registered method names (``methods.METHODS``).
        ratios: labelled ratios in (0, 1].
        seeds: split seeds (also the training seeds).
        seed_ratios: ``{seed: ratios}`` restricting some seeds to some ratios (``--seed-ratios 1=0.1``: seed 1
            only at 10 %); seeds not listed run at every ratio.
        protocols: evaluation protocols; the first one is plotted. ``la_uamt`` (3D) evaluates with the bundles'
            ``uamt_inferer`` (``UAMTSlidingWindowInferer`` at ``uamt_roi_size`` / ``uamt_strides``).
        largest_cc: keep the largest connected component before the metrics (``None``: the protocol's default).
        rounds: diffusion rounds ``R`` of the diffusion methods.
        round_mode: ``independent`` or ``chained``.
        backbone: both pathways' backbone in phase 1 and the co-training methods (``None``: the bundles' default,
            ``fast``; ``diffusion_unet``, the paper's); given, it marks the run's name (``full_diffusion_unet``) and
            phase 1's folder.
        round_batch: the diffusion methods' ``round_batch`` (``None``: the bundles' default, ``unlabeled``;
            ``all``, the paper's); given, it marks the run's name (``full_all``).
        pretrain: run phase 1 before the methods that have one (``--no-pretrain`` clears it).
        overrides: ``(phase, key, value)`` bundle ids (``parse_override``).
        iterations: ``{phase: N}`` replacing the profile's iteration budgets.
        val_fraction: validation fraction of the splits (``None``: 0.1 of a ratio split's labelled cases, 0.2 of a
            cross-validation fold's training cases).
        test_fraction: test fraction of the splits.
        work_dir: where runs are trained.
        results_dir: where the results page and figures go.
        num_qualitative: test cases in the qualitative figure.
        num_threads: OpenMP threads per bundle process (``None``: the profile's default; 0: torch's default).
        jobs: runs side by side.
        force: delete and rerun phases whose settings changed.
        phase1_ratio: the labelled ratio whose split phase 1 uses (its probe's labels); ``None``: the smallest of
            ``ratios``. Set it to the smallest ratio of an earlier call on the same work folder, so that an ablation
            at one ratio reuses that call's phase 1 instead of training its own; it must not exceed any ratio of
            this call (the nested splits then give the probe no label a run lacks).
        plan: the ``plan.json`` of ``--profile auto`` (default: next to the dataset's ``datalist.json``).
        cv: cross-validation over the labelled cases (``make_folds``): ``K >= 2`` folds, 0 = off (ratio splits),
            ``None`` = automatic: 5 folds (one case per fold with fewer) when the dataset has at most
            ``FEW_LABELS`` (20) labelled cases, images without masks (``unlabeled``) and no official test split.
            Every method trains on each fold (its other labelled cases plus the whole unlabelled pool) and is tested
            on the fold's cases; ``ratios`` and fixed-ratio methods (``upper``) do not apply.
        final_model: after cross-validation, train the recommended method on every labelled case (the delivered
            model; ``make_all_labelled_split``).

    Raises:
        RunnerError: a setting out of range (checked when the object is made).
    """

    dataset: Path
    name: str | None = None
    profile: str = "quick"
    methods: Sequence[str] = ("supervised", "cps_diffusion", "full", "upper")
    ratios: Sequence[float] = (0.1,)
    seeds: Sequence[int] = (0,)
    seed_ratios: Mapping[int, Sequence[float]] = field(default_factory=dict)
    protocols: Sequence[str] = ("clean",)
    largest_cc: bool | None = None
    rounds: int = DEFAULT_ROUNDS
    round_mode: str = DEFAULT_ROUND_MODE
    backbone: str | None = None
    round_batch: str | None = None
    pretrain: bool = True
    overrides: Sequence[tuple[str, str, Any]] = field(default_factory=list)
    iterations: Mapping[str, int] = field(default_factory=dict)
    val_fraction: float | None = None
    test_fraction: float = 0.3
    work_dir: Path = REPO_ROOT / "work_dirs"
    results_dir: Path = REPO_ROOT / "docs" / "results"
    num_qualitative: int = 4
    num_threads: int | None = None
    jobs: int = 1
    force: bool = False
    phase1_ratio: float | None = None
    plan: Path | None = None
    cv: int | None = None
    final_model: bool = True

    def __post_init__(self) -> None:
        self.dataset, self.work_dir, self.results_dir = Path(self.dataset), Path(self.work_dir), Path(self.results_dir)
        if self.cv is not None and (self.cv < 0 or self.cv == 1):
            raise RunnerError(f"--cv must be 0 (off) or >= 2 folds, got {self.cv}.")
        if any(not 0.0 < float(r) <= 1.0 for r in self.ratios):
            raise RunnerError(f"--ratios must be in (0, 1], got {list(self.ratios)}.")
        if self.rounds < 0:
            raise RunnerError(f"--rounds must be >= 0, got {self.rounds}.")
        if self.jobs < 1:
            raise RunnerError(f"--jobs must be >= 1, got {self.jobs}.")
        if self.backbone not in (None, "diffusion_unet", "fast") or self.round_batch not in (None, "all", "unlabeled"):
            raise RunnerError(f"--backbone {self.backbone!r} / --round-batch {self.round_batch!r}: use diffusion_unet "
                              "or fast / all or unlabeled.")
        r_min = min(float(r) for r in self.ratios)
        if self.phase1_ratio is not None and not 0.0 < float(self.phase1_ratio) <= r_min:
            raise RunnerError(f"--phase1-ratio {self.phase1_ratio}: must be in (0, {r_min:g}] (the smallest "
                              "of --ratios), so that phase 1's probe sees no label a run lacks.")
        if self.profile not in [*available_profiles(), "auto"]:
            raise RunnerError(f"--profile {self.profile!r}: unknown; available: {available_profiles()}.")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise RunnerError(f"--methods {unknown}: unknown; registered: {list(METHODS)}.")
        bad = [p for p in self.protocols if p not in PROTOCOL_NAMES]
        if bad:
            raise RunnerError(f"--protocol {bad}: unknown; use {list(PROTOCOL_NAMES)}.")
        self.seed_ratios = {int(k): [float(r) for r in v] for k, v in dict(self.seed_ratios).items()}
        stray = {k: v for k, v in self.seed_ratios.items()
                 if k not in {int(x) for x in self.seeds} or not set(v) <= {float(r) for r in self.ratios}}
        if stray:
            raise RunnerError(f"--seed-ratios {stray}: every seed must be in --seeds {list(self.seeds)} and every "
                              f"ratio in --ratios {list(self.ratios)}.")


def fingerprint(obj: Any) -> str:
    """Short stable hash of a JSON-serialisable object.

    Args:
        obj: the object.
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_splits(datalist: Path, out_dir: Path, ratios: Sequence[float], seeds: Sequence[int],
                 val_fraction: float = 0.1, test_fraction: float = 0.3) -> dict[tuple[float, int], Path]:
    """Write one deterministic split per (ratio, seed) into ``out_dir`` (paths rewritten relative to it).

    Args:
        datalist: the dataset's ``datalist.json`` (with ``"cases"``).
        out_dir: folder for ``datalist_r<ratio>_s<seed>.json``.
        ratios: labelled ratios in (0, 1].
        seeds: split seeds.
        val_fraction: validation fraction (``make_split``).
        test_fraction: test fraction (``make_split``).

    Returns:
        ``{(ratio, seed): path}``.
    """
    from custom_components.data.splits import make_split, split_filename, write_split

    out: dict[tuple[float, int], Path] = {}
    for r in ratios:
        for s in seeds:
            split = make_split(datalist, labeled_ratio=float(r), seed=int(s), val_fraction=val_fraction,
                               test_fraction=test_fraction)
            out[(float(r), int(s))] = write_split(split, datalist.parent, out_dir / split_filename(r, s))
    return out


def write_folds(datalist: Path, out_dir: Path, num_folds: int, seeds: Sequence[int], val_fraction: float = 0.2
                ) -> dict[str, Path]:
    """Write the cross-validation folds of every seed (``make_folds``) into ``out_dir``.

    Args:
        datalist: the dataset's ``datalist.json`` (with ``"cases"``).
        out_dir: folder for ``datalist_cv<k>_f<i>_s<seed>.json``.
        num_folds: wanted folds (fewer when there are fewer labelled cases).
        seeds: split seeds.
        val_fraction: validation carved from each training fold (none under 3 cases: ``"selection": "last"``).

    Returns:
        ``{"cv<k>_f<i>_s<seed>": path}`` in seed, then fold order.
    """
    from custom_components.data.splits import fold_filename, make_folds, write_split

    out: dict[str, Path] = {}
    for seed in seeds:
        for fold in make_folds(datalist, num_folds=num_folds, seed=int(seed), val_fraction=val_fraction):
            name = fold_filename(fold["num_folds"], fold["fold"], seed)
            out[split_tag(Path(name))] = write_split(fold, datalist.parent, out_dir / name)
    return out


def split_tag(split_path: Path) -> str:
    """A split file's tag, the name of its run folders: ``datalist_r0.1_s0.json -> r0.1_s0``,
    ``datalist_cv4_f2_s0.json -> cv4_f2_s0``, ``datalist_all_s0.json -> all_s0``."""
    return Path(split_path).stem.removeprefix("datalist_")


# --------------------------------------------------------------------------------------------------------------
# running bundles
# --------------------------------------------------------------------------------------------------------------
_EPOCH_END = re.compile(r"Epoch: (\d+)/(\d+), Iter: (\d+)/(\d+) -- (.*)")
_KEEP = ("Metrics --", "new best model", "Traceback", "Error", "ERROR", "NaN", "protocol:", "class", "---+")


def _console_line(line: str, prefix: str) -> str | None:
    """Shorten a bundle log line for the console (one line per epoch, validations, errors, tables)."""
    s = line.rstrip()
    m = _EPOCH_END.search(s)
    if m:
        if m.group(3) != m.group(4):
            return None
        terms = re.findall(r"(loss\w*|train_loss): ([-\d.eE+naif]+)", m.group(5))
        short = " ".join(f"{k}={v}" for k, v in terms[:4])
        return f"{prefix} epoch {m.group(1)}/{m.group(2)} {short}"
    if "Cannot find the metadata config file" in s or "logging.conf" in s:
        return None
    if "Metrics -- train_" in s:  # supervised training metric: one line per epoch is enough
        return None
    if any(k in s for k in _KEEP):
        return f"{prefix} {s.split(' - INFO - ')[-1][:200]}"
    return None


def bundle_command(config_files: Sequence[Path]) -> list[str]:
    """``python -m monai.bundle run --config_file [...]`` for stacked config files."""
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", str([str(c) for c in config_files])]


def run_bundle(config_files: Sequence[Path], log_path: Path, prefix: str, env: Mapping[str, str] | None = None,
               quiet: bool = False) -> float:
    """Run ``python -m monai.bundle run --config_file [...]`` in a subprocess; stream its output to ``log_path``.

    Args:
        config_files: the stacked config files (the first one's folder is the bundle root's ``configs``).
        log_path: log file (appended).
        prefix: console prefix.
        env: environment of the subprocess (default: this process's).
        quiet: print nothing but errors.

    Returns:
        wall time in seconds.

    Raises:
        RunnerError: the bundle failed (with the tail of its log).
    """
    cmd = bundle_command(config_files)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tail: list[str] = []
    with open(log_path, "a") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                cwd=str(config_files[0].parent.parent), env=dict(env or os.environ))
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            tail = (tail + [line.rstrip()])[-40:]
            if not quiet:
                c = _console_line(line, prefix)
                if c:
                    print(c, flush=True)
        rc = proc.wait()
    if rc != 0:
        raise RunnerError(f"{prefix} failed (exit code {rc}); log: {log_path}\n  " + "\n  ".join(tail))
    return time.time() - t0


def run_tasks(fn: Callable[..., dict[str, Any]], tasks: Sequence[tuple[Any, ...]], jobs: int = 1
              ) -> list[dict[str, Any]]:
    """Run ``fn(*task)`` for every task, ``jobs`` at a time; results in the order of ``tasks``.

    Runs are independent (own folders, own subprocesses, own seeds), so running them side by side changes no result;
    it only fills a GPU (or the CPU cores) that one small run leaves idle. With ``jobs > 1`` the most expensive
    methods (``Method.cost``) start first, a failed run does not stop the others (they finish and keep their
    outputs, so a rerun skips them), and every failure is reported at the end.

    Args:
        fn: the function running one task (``Experiment.run_one``).
        tasks: argument tuples; the first item is the method name.
        jobs: number of runs at a time (1: one after the other, stopping at the first failure).

    Raises:
        RunnerError: naming every failed run.
    """
    if jobs < 1:
        raise RunnerError(f"--jobs must be >= 1, got {jobs}.")
    if jobs == 1 or len(tasks) <= 1:
        return [fn(*t) for t in tasks]
    from concurrent.futures import ThreadPoolExecutor

    def cost(task: tuple[Any, ...]) -> int:
        m = METHODS.get(str(task[0]))
        return m.cost if m is not None else 1

    # most expensive first; among equally expensive runs the seeds alternate, so that runs starting together need
    # different (shared) phase-1 runs instead of waiting for the same one
    rank = [sum(1 for j in range(i) if cost(tasks[j]) == cost(tasks[i]) and tasks[j][2] == tasks[i][2])
            for i in range(len(tasks))]
    order = sorted(range(len(tasks)), key=lambda i: (-cost(tasks[i]), rank[i], i))
    print(f"[runner] {len(tasks)} runs, {min(jobs, len(tasks))} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=min(jobs, len(tasks)), thread_name_prefix="run") as pool:
        futures = {i: pool.submit(fn, *tasks[i]) for i in order}
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        errors: list[str] = []
        for i in order:
            try:
                results[i] = futures[i].result()
            except RunnerError as e:
                errors.append(f"{tasks[i][0]} ratio {tasks[i][1]} seed {tasks[i][2]}: {e}")
    if errors:
        raise RunnerError(f"{len(errors)} of {len(tasks)} runs failed (the others finished and are kept):\n"
                          + "\n".join(errors))
    return [r for r in results if r is not None]


def _configured(files: Sequence[Path], key: str, overrides: Mapping[str, Any], default: Any = None) -> Any:
    """The value of a top-level id after stacking ``files`` and ``overrides`` (what the bundle will use)."""
    from monai.bundle import ConfigParser

    if key in overrides:
        return overrides[key]
    parser = ConfigParser()
    parser.read_config([str(f) for f in files if Path(f).is_file()])
    if key not in parser:
        return default
    return parser.get_parsed_content(key, instantiate=False)


# --------------------------------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------------------------------
class Experiment:
    """Plans and runs every (method, ratio, seed) of one dataset; see the module docstring.

    Args:
        settings: the runner settings.
        command: the command line, for the report.

    Raises:
        RunnerError: the dataset's datalist is missing, malformed or a split rather than a case list.
    """

    def __init__(self, settings: RunnerSettings, command: str) -> None:
        self.settings = s = settings
        self.command = command
        self.datalist = Path(s.dataset).resolve()
        if self.datalist.is_dir():
            self.datalist = self.datalist / "datalist.json"
        if not self.datalist.is_file():
            raise RunnerError(f"{self.datalist}: datalist not found (give --dataset <dataset_dir>/datalist.json).")
        try:
            self.meta = json.loads(self.datalist.read_text())
        except json.JSONDecodeError as e:
            raise RunnerError(f"{self.datalist}: malformed JSON ({e}).") from e
        if not self.meta.get("cases"):
            raise RunnerError(f"{self.datalist}: no 'cases' list; give the dataset's datalist.json written by "
                              "scripts/prepare_*.py or make_synthetic_dataset, not a split.")
        self.name = s.name or self.datalist.parent.name
        self.work = Path(s.work_dir).resolve() / self.name
        self.results_dir = Path(s.results_dir).resolve()
        self.plan_ids: dict[str, Any] = {}  # --profile auto: the plan's bundle ids (a named profile's bundle file)
        self.plan_path: Path | None = None
        self.plan_reasons: dict[str, str] = {}
        if s.profile == "auto":  # one source of settings: the dataset's plan.json (scripts/plan_dataset.py)
            from .plan import PlanError, bundle_ids, load_plan, plan_profile

            self.plan_path = Path(s.plan) if s.plan else self.datalist.parent / "plan.json"
            try:
                plan = load_plan(self.plan_path)
                self.plan_reasons = {k: plan[k]["reason"] for k in ("resolution", "patch", "batch_size", "channels",
                                                                       "iterations") if k in plan}
                self.plan_ids = bundle_ids(plan)
                self.profile: Profile = plan_profile(plan).with_iterations(s.iterations)
            except PlanError as e:
                raise RunnerError(f"--profile auto: {e}") from e
        else:
            self.profile = load_profile(s.profile).with_iterations(s.iterations)
        if self.profile.spatial_dims is not None and self.profile.spatial_dims != self.spatial_dims:
            raise RunnerError(f"--profile {s.profile}: made for {self.profile.spatial_dims}D data, but {self.datalist} "
                              f"is {self.spatial_dims}D.")
        self.overrides = list(s.overrides)
        self.env = dict(os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        threads = s.num_threads if s.num_threads is not None else (self.profile.num_threads or 0)
        if threads == 0 and s.jobs > 1:  # runs side by side share the cores
            threads = max(1, (os.cpu_count() or 1) // s.jobs)
        if threads > 0:  # oversubscribed OpenMP threads slow small CPU runs down by 10x or more on shared cores
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                self.env.setdefault(var, str(threads))
        self.cv_folds, self.cv_reason = self._cross_validation()
        self.runs: list[dict[str, Any]] = []
        self.phase1_splits: dict[int, Path] = {}  # seed -> the split whose images (and probe labels) phase 1 uses
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @property
    def spatial_dims(self) -> int:
        return int(self.meta.get("spatial_dims", 2))

    def _cross_validation(self) -> tuple[int, str]:
        """``(folds, why)``: the number of cross-validation folds (0: ratio splits) and the reason, for the output."""
        from custom_components.data.splits import FEW_LABELS

        n, cv = len(self.meta["cases"]), self.settings.cv
        if cv is not None:
            return (cv, f"--cv {cv}: {min(cv, n)}-fold cross-validation over the {n} labelled cases") if cv else (
                0, "--cv 0: ratio splits")
        if self.meta.get("official_test"):
            return 0, "the dataset has an official test split: ratio splits, tested on it"
        if not self.meta.get("unlabeled"):  # every image has a mask: the ratio splits hide the others' labels
            return 0, (f"{n} labelled cases and no unlabelled images: ratio splits (the labels of the unlabelled "
                       "part hidden; --cv K to cross-validate)")
        if n <= FEW_LABELS:
            return 5, (f"{n} labelled cases (at most {FEW_LABELS}) and no official test split: {min(5, n)}-fold "
                       "cross-validation over the labelled cases, each scored once as test (--cv 0 turns it off)")
        return 0, f"{n} labelled cases: ratio splits (--cv K for cross-validation)"

    # -- settings --------------------------------------------------------------------------------------------
    def data_overrides(self) -> dict[str, Any]:
        """Dataset-derived ids: spatial_dims, in_channels, num_classes from the datalist's metadata; in 3D a
        validation batch of 1 (validation volumes may differ in size)."""
        out: dict[str, Any] = {}
        for k in ("spatial_dims", "in_channels", "num_classes"):
            if k in self.meta:
                out[k] = int(self.meta[k])
        if self.spatial_dims == 3:
            out["val_batch_size"] = 1
        return out

    def bundle_files(self, bundle: str, configs: Path, files: Sequence[str]) -> list[Path]:
        """The stacked config files of a phase: ``files`` (``train.json`` first) with ``profile_3d.json`` (3D
        data) second and the profile's ``profiles/<name>.json`` before the runner's own override files."""
        out = [configs / f for f in files]
        if self.spatial_dims == 3 and (BUNDLES_DIR / bundle / "configs" / "profile_3d.json").is_file():
            out.insert(1, configs / "profile_3d.json")
        prof = Path("profiles") / f"{self.profile.name}.json"
        if (BUNDLES_DIR / bundle / "configs" / prof).is_file():
            runner_files = [i for i, f in enumerate(out) if f.name in (OVERRIDES_FILE, EVAL_OVERRIDES_FILE)]
            out.insert(runner_files[0] if runner_files else len(out), configs / prof)
        return out

    def phase_settings(self, phase: str, split: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        """The ids of ``runner_overrides.json`` for one phase: dataset, schedule, method settings, user overrides.

        The iteration budget is turned into epochs with the batch size the bundle will actually use (its
        ``train.json``, ``profile_3d.json``, the profile file, the method's ids and the user's overrides).

        Args:
            phase: ``supervised``, ``teacher_pretrain`` or ``cotrain``.
            split: the loaded split datalist.
            extra: method-specific ids (teacher_ckpt, rounds, ...).
        """
        user = overrides_for(phase, self.overrides)
        s: dict[str, Any] = self.data_overrides()
        s.update(self.plan_ids)  # --profile auto: where a named profile stacks its bundle file
        s["seed"] = int(split["seed"])
        if phase == "teacher_pretrain" and not split.get("validation"):  # a fold without validation: phase 1 only
            s["val_key"] = "labeled"  # monitors (probe, class fractions) on the labelled training cases
        s.update(extra)
        files = self.bundle_files(phase, BUNDLES_DIR / phase / "configs", ["train.json"])
        bs = int(_configured(files, "batch_size", {**s, **user}, 8))
        n_lab, n_unl = len(split["labeled"]), len(split.get("unlabeled", []))
        try:
            s.update(schedule_ids(phase, self.profile.phases[phase], n_lab, n_unl, bs, user))
        except ValueError as e:
            raise RunnerError(f"{phase}: {e}") from e
        s.update(user)
        return s

    # -- one phase -------------------------------------------------------------------------------------------
    def config_list(self, phase_dir: Path, bundle: str, files: Sequence[str]) -> list[Path]:
        """The stacked config files of a phase's copy (``bundle_files`` under ``phase_dir/configs``)."""
        return self.bundle_files(bundle, phase_dir / "configs", files)

    def run_phase(self, phase_dir: Path, bundle: str, settings: Mapping[str, Any], label: str,
                  method_files: Sequence[str] = ()) -> dict[str, Any]:
        """Train one phase unless its marker says it is done with the same settings.

        Args:
            phase_dir: the phase's work folder (its ``configs/`` is a copy of the bundle's).
            bundle: bundle folder name under ``bundles/``.
            settings: ids for ``runner_overrides.json``.
            label: console prefix.
            method_files: the method's override files (``Method.overrides``), stacked after ``train.json``.

        Returns:
            the marker record (``wall_time_s``, ``fingerprint``, ...).

        Raises:
            RunnerError: the folder was made with other settings (and ``force`` is off), or training failed.
        """
        src = BUNDLES_DIR / bundle / "configs"
        configs = {p.relative_to(src).as_posix(): p.read_text() for p in sorted(src.rglob("*.json"))}
        fp = fingerprint({"bundle": bundle, "profile": self.profile.name, "settings": settings, "configs": configs,
                          **({"method_files": list(method_files)} if method_files else {})})
        # the data itself (datalist bytes, sizes and modification times of its files): re-preparing a dataset in
        # place retrains (--force) or refuses, instead of reporting the old result as done
        data_fp = data_fingerprint(settings["datalist"]) if settings.get("datalist") else None
        marker, sfile = phase_dir / DONE_MARKER, phase_dir / SETTINGS_FILE
        if sfile.is_file():
            old = json.loads(sfile.read_text())
            new_data = data_fp is not None and old.get("data_fingerprint") not in (None, data_fp)
            if old.get("fingerprint") != fp or new_data:
                why = (f"trained on other data: {settings['datalist']} or the files it lists changed since (a "
                       "re-prepared dataset?)" if old.get("fingerprint") == fp
                       else f"made with other settings or another version of bundles/{bundle}/configs")
                if not self.settings.force:
                    raise RunnerError(
                        f"{phase_dir}: {why} (see {sfile}); rerun with --force to delete and retrain it, or use "
                        "another --work-dir.")
                print(f"{label} {'data' if old.get('fingerprint') == fp else 'settings'} changed: deleting "
                      f"{phase_dir}", flush=True)
                shutil.rmtree(phase_dir)
            elif marker.is_file():
                if data_fp is not None and old.get("data_fingerprint") is None:  # recorded before data fingerprints
                    sfile.write_text(json.dumps({**old, "data_fingerprint": data_fp}, indent=2))
                rec = json.loads(marker.read_text())
                print(f"{label} done earlier ({rec.get('wall_time_s', 0):.0f} s), skipped", flush=True)
                return rec
        phase_dir.mkdir(parents=True, exist_ok=True)
        if not (phase_dir / "configs").is_dir():  # a complete bundle folder: training makes its configs self-contained
            shutil.copytree(src, phase_dir / "configs")
            shutil.copytree(src.parent / "docs", phase_dir / "docs", dirs_exist_ok=True)
            shutil.copy2(src.parent / "LICENSE", phase_dir / "LICENSE")
        (phase_dir / "configs" / OVERRIDES_FILE).write_text(json.dumps(settings, indent=2))
        sfile.write_text(json.dumps({"fingerprint": fp, "data_fingerprint": data_fp, "bundle": bundle,
                                     "profile": self.profile.name, "settings": settings}, indent=2))
        files = self.config_list(phase_dir, bundle, ["train.json", *method_files, OVERRIDES_FILE])
        self._write_command(phase_dir / "command.sh", files)
        print(f"{label} training: {settings.get('max_epochs')} epochs -> {phase_dir}", flush=True)
        resumed = (phase_dir / "models" / "train_state.pt").is_file()
        t = run_bundle(files, phase_dir / "train.log", label, self.env)
        rec = {"fingerprint": fp, "data_fingerprint": data_fp, "wall_time_s": t,
               "resumed": resumed, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
               "device": environment_info()["device"]}
        marker.write_text(json.dumps(rec, indent=2))
        print(f"{label} finished in {t:.0f} s", flush=True)
        return rec

    def evaluate_phase(self, phase_dir: Path, bundle: str, protocol: str, label: str) -> tuple[Path, float | None]:
        """Evaluate ``models/model.pt`` on the test split under ``protocol`` (skipped when already done).

        Args:
            phase_dir: the trained phase's folder (its ``runner_overrides.json`` builds the same network).
            bundle: bundle name.
            protocol: protocol name.
            label: console prefix.

        Returns:
            the ``metrics.json`` path and the evaluation wall time (``None`` when skipped).

        Raises:
            RunnerError: no ``model.pt``, or the evaluation wrote no metrics.
        """
        out_dir = phase_dir / "eval" / f"test_{protocol}{'_lcc' if self.settings.largest_cc else ''}"
        metrics = out_dir / "metrics.json"
        model = phase_dir / "models" / "model.pt"
        if not model.is_file():
            raise RunnerError(f"{model}: missing after training; see {phase_dir / 'train.log'}.")
        base = {"eval_key": "test", "eval_protocol": protocol, "output_dir": str(out_dir)}
        ev = {**base, **self.eval_ids(protocol, bundle)}
        record = out_dir / "runner_eval.json"  # the ids this evaluation ran with: other ids -> evaluate again
        if metrics.is_file() and metrics.stat().st_mtime >= model.stat().st_mtime:
            try:
                done_with = json.loads(record.read_text()) if record.is_file() else base
                if json.loads(metrics.read_text()).get("protocol") == protocol and done_with == ev:
                    return metrics, None
            except json.JSONDecodeError:
                pass
        (phase_dir / "configs" / EVAL_OVERRIDES_FILE).write_text(json.dumps(ev, indent=2))
        files = self.config_list(phase_dir, bundle, ["train.json", "evaluate.json", OVERRIDES_FILE,
                                                     EVAL_OVERRIDES_FILE])
        self._write_command(phase_dir / f"command_eval_{protocol}.sh", files)
        t = run_bundle(files, phase_dir / f"eval_{protocol}.log", f"{label} eval[{protocol}]", self.env)
        if not metrics.is_file():
            raise RunnerError(f"{metrics}: not written by the evaluation; see {phase_dir / f'eval_{protocol}.log'}.")
        record.write_text(json.dumps(ev, indent=2))
        return metrics, t

    def eval_ids(self, protocol: str, bundle: str = "cotrain") -> dict[str, Any]:
        """Bundle ids of the test evaluation under ``protocol``: ``la_uamt`` swaps the inferer for the bundles'
        ``uamt_inferer`` (the UA-MT window of ``profile_3d.json``, scaled by a reduced-resolution profile) and
        chooses the binary threshold again on the validation split under that window (``threshold_source``:
        training's selection swept it with the cheaper validation window, whose probabilities differ), and
        ``largest_cc`` is passed when set.

        Raises:
            RunnerError: ``la_uamt`` on 2D data.
        """
        out: dict[str, Any] = {}
        if protocol == "la_uamt":
            if self.spatial_dims != 3:
                raise RunnerError(f"--protocol la_uamt: a 3D protocol (the UA-MT sliding window), but {self.datalist} "
                                  f"is {self.spatial_dims}D.")
            out["eval_inferer"] = "@uamt_inferer"
            # training selected its threshold with the cheaper validation window: choose it again under this one
            out["threshold_source"] = "validation"
            if bundle == "supervised":  # the UA-MT window already averages softmax probabilities of the logits
                out["pred_softmax"] = False
        if self.settings.largest_cc is not None:
            out["largest_cc"] = bool(self.settings.largest_cc)
        return out

    @staticmethod
    def _write_command(path: Path, files: Sequence[Path]) -> None:
        path.write_text("#!/usr/bin/env bash\n# reruns this phase (resumes from models/train_state.pt if present)\n"
                        f"cd {shlex.quote(str(path.parent))}\n{shlex.join(bundle_command(files))}\n")

    def run_phase1(self, seed: int, split_path: Path, label: str,
                   method_ids: Mapping[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
        """Phase 1 for ``seed``, trained once and shared by every ratio and ablation of the call.

        Phase 1 never lets a label change the teacher, and every ratio of a seed trains on the same images (the
        labelled and unlabelled sets only divide the training split differently), so one teacher serves them all.
        Its datalist is the split of the smallest ratio of this call (``phase1_splits``); that ratio's labelled set
        is contained in every larger ratio's (nested splits), so the monitoring probe sees no label a run lacks.
        The folder ``<work>/phase1/<split>_<settings hash>/teacher_pretrain`` is shared; runs side by side wait
        for the one that trains it.

        Args:
            seed: split seed.
            split_path: the run's own split (used when no shared split was planned).
            label: console prefix of the run.
            method_ids: the method's ``phase1_settings`` (a method's own phase 1 when they differ).

        Returns:
            the phase folder and its marker record.
        """
        tp_path = self.phase1_splits.get(int(seed), split_path)
        tp_split = json.loads(tp_path.read_text())
        settings = {"dataset_dir": str(self.datalist.parent), "datalist": str(tp_path),
                    **self.phase_settings("teacher_pretrain", tp_split, {**self.backbone_ids(), **(method_ids or {})})}
        phase_dir = self.work / "phase1" / f"{split_tag(tp_path)}_{fingerprint(settings)[:8]}" / "teacher_pretrain"
        with self._locks_guard:
            lock = self._locks.setdefault(phase_dir, threading.Lock())
        with lock:
            return phase_dir, self.run_phase(phase_dir, "teacher_pretrain", settings,
                                             f"{label}[phase 1 {phase_dir.parent.name}]")

    def backbone_ids(self) -> dict[str, Any]:
        """``{"backbone": ...}`` when ``--backbone`` was given (else the bundles' default, ``fast``)."""
        return {"backbone": self.settings.backbone} if self.settings.backbone is not None else {}

    # -- one run ---------------------------------------------------------------------------------------------
    def run_one(self, method: str, ratio: float, seed: int, split_path: Path) -> dict[str, Any]:
        """Train and evaluate one (method, ratio, seed) on one split (a ratio split or a cross-validation fold).

        Args:
            method: a registered method name.
            ratio: labelled ratio of the split.
            seed: split seed.
            split_path: the split datalist.
        """
        run = self.train_run(method, ratio, seed, split_path)
        run_dir, bundle, label = Path(run["folder"]), run["bundle"], run.pop("label")
        eval_t, evaluated = 0.0, False
        for proto in self.settings.protocols:
            path, t = self.evaluate_phase(run_dir / bundle, bundle, proto, f"{label}[{bundle}]")
            run["metrics"][proto] = str(path)
            cal = path.parent / "threshold_calibration.json"  # threshold_source "validation" (la_uamt)
            if cal.is_file():
                run.setdefault("test_thresholds", {})[proto] = json.loads(cal.read_text())
            eval_t += t or 0.0
            evaluated |= t is not None
        run["eval_time_s"] = eval_t if evaluated else None
        prev = run_dir / "run.json"
        if not evaluated and prev.is_file():  # every evaluation was done earlier: keep the time measured then
            run["eval_time_s"] = json.loads(prev.read_text()).get("eval_time_s")
        (run_dir / "run.json").write_text(json.dumps(run, indent=2))
        return run

    def train_run(self, method: str, ratio: float, seed: int, split_path: Path) -> dict[str, Any]:
        """Train one method on one split (phase 1 first where it has one), in ``<work>/<method>/<split tag>/``.

        Returns:
            the run record (no ``metrics`` yet; ``label``: the console prefix).
        """
        s = self.settings
        m: Method = METHODS[method]
        split = json.loads(split_path.read_text())
        name = run_name(m, s.rounds, s.round_mode, s.pretrain)
        extra = m.bundle_settings(s.rounds, s.round_mode)
        if m.bundle == "cotrain" and self.backbone_ids():
            name += f"_{s.backbone}"
            extra.update(self.backbone_ids())
        if m.diffusion and s.round_batch is not None:
            name += f"_{s.round_batch}"
            extra["round_batch"] = s.round_batch
        tag = split_tag(split_path)
        run_dir = self.work / name / tag
        label = (f"[{name} r={report.ratio_tag(ratio)} s={seed}]" if tag == f"r{report.ratio_tag(ratio)}_s{seed}"
                 else f"[{name} {tag}]")
        times: list[float] = []
        resumed = False
        if "teacher_pretrain" in m.phases(s.pretrain):
            tp_dir, rec = self.run_phase1(seed, split_path, label, m.phase1_settings)
            times.append(rec["wall_time_s"])
            resumed |= bool(rec.get("resumed"))
            extra["teacher_ckpt"] = str(tp_dir / "models" / "teacher.pt")
            extra["teacher_fingerprint"] = rec["fingerprint"]  # retrain phase 2 when phase 1 changed
        bundle = m.bundle
        settings = {"dataset_dir": str(self.datalist.parent), "datalist": str(split_path),
                    **self.phase_settings(bundle, split, extra)}
        rec = self.run_phase(run_dir / bundle, bundle, settings, f"{label}[{bundle}]", m.overrides)
        times.append(rec["wall_time_s"])
        resumed |= bool(rec.get("resumed"))
        run: dict[str, Any] = {"train_time_covers_resumed_part_only": resumed, "method": name, "base_method": method,
                               "ratio": float(ratio), "seed": int(seed), "num_labeled": len(split["labeled"]),
                               "split": tag, "folder": str(run_dir), "bundle": bundle, "train_time_s": sum(times),
                               "phase_times_s": times, "metrics": {}, "label": label}
        if split.get("fold") is not None:  # a cross-validation fold
            run.update(fold=int(split["fold"]), num_folds=int(split["num_folds"]))
        sel = run_dir / bundle / "models" / "model_selection.json"
        if sel.is_file():
            run["selection"] = json.loads(sel.read_text())
        run["warnings"] = list((run.get("selection") or {}).get("warnings", []))  # degenerate results
        run["warnings"] += [f"dataset {self.datalist}: {w}" for w in self.meta.get("warnings", [])]  # prepare_folder
        if "teacher_pretrain" in m.phases(s.pretrain):
            from custom_components.engines.pretrain import phase1_warnings

            run["warnings"] += phase1_warnings(tp_dir / "eval" / "metrics.csv")
        for w in run["warnings"]:
            print(f"{label} WARNING {w}", flush=True)
        return run

    # -- all -------------------------------------------------------------------------------------------------
    def tasks(self, splits: Mapping[tuple[float, int], Path]) -> list[tuple[str, float, int, Path]]:
        """``(method, ratio, seed, split)`` of every run, seed by seed, in the order of ``methods``, at the ratios of
        each seed (``ratios_of``)."""
        s = self.settings
        return [(method, ratio, int(seed), splits[(ratio, int(seed))])
                for seed in s.seeds for method in s.methods
                for ratio in ([METHODS[method].fixed_ratio] if METHODS[method].fixed_ratio is not None
                              else self.ratios_of(int(seed)))
                if METHODS[method].fixed_ratio is None or int(seed) not in s.seed_ratios]

    def ratios_of(self, seed: int) -> list[float]:
        """The ratios ``seed`` runs at (``--seed-ratios``; default every ratio). A seed restricted by
        ``--seed-ratios`` runs no fixed-ratio method (the upper bound)."""
        return sorted(self.settings.seed_ratios.get(int(seed), [float(r) for r in self.settings.ratios]))

    def run(self) -> dict[str, Any]:
        """Run every requested (method, ratio, seed), or every method on every cross-validation fold, then aggregate
        and write the reports."""
        s = self.settings
        n_pool = len(self.meta.get("unlabeled", []))  # images without a mask: in every split's 'unlabeled' whole
        print(f"[runner] dataset {self.name}: {len(self.meta['cases'])} cases"
              + (f" + {n_pool} images without a mask" if n_pool else "") + f"; splits in {self.work / 'splits'}",
              flush=True)
        print(f"[runner] protocol: {self.cv_reason}", flush=True)
        if self.cv_folds:
            splits: Mapping[Any, Path] = write_folds(self.datalist, self.work / "splits", self.cv_folds, s.seeds,
                                                     self.val_fraction)
            fixed = [m for m in s.methods if METHODS[m].fixed_ratio is not None]
            if fixed:
                print(f"[runner] cross-validation: {fixed} left out (every labelled case of a fold already trains)",
                      flush=True)
            print(f"[runner] cross-validation: {len(splits) // len(s.seeds)} folds per seed; every labelled case of "
                  "a fold's training part trains, with the whole unlabelled pool (--ratios does not apply)", flush=True)
            seed_of = {tag: int(json.loads(p.read_text())["seed"]) for tag, p in splits.items()}
            tasks = [(m, 1.0, int(seed), path) for seed in s.seeds for m in s.methods
                     if METHODS[m].fixed_ratio is None for tag, path in splits.items() if seed_of[tag] == int(seed)]
            self.phase1_splits = {}  # each fold's phase 1 trains on that fold's images: never on its test cases
        else:
            fixed_r = {METHODS[m].fixed_ratio for m in s.methods if METHODS[m].fixed_ratio is not None}
            p1 = {float(s.phase1_ratio)} if s.phase1_ratio is not None else set()
            ratios = sorted({float(r) for r in s.ratios} | fixed_r | p1)
            splits = write_splits(self.datalist, self.work / "splits", ratios, s.seeds, self.val_fraction,
                                  s.test_fraction)
            if any("teacher_pretrain" in METHODS[m].phases(s.pretrain) for m in s.methods):
                # one phase 1 per seed, monitored with the smallest ratio's (nested) labelled set
                self.phase1_splits = {int(seed): splits[(float(s.phase1_ratio) if s.phase1_ratio is not None
                                                         else min(self.ratios_of(int(seed))), int(seed))]
                                      for seed in s.seeds}
            tasks = self.tasks(splits)
        t_all = time.time()
        self.runs.extend(run_tasks(self.run_one, tasks, s.jobs))
        return self.report(time.time() - t_all, splits)

    @property
    def val_fraction(self) -> float:
        """``--val-fraction``, else 0.1 of a ratio split's labelled cases, 0.2 of a fold's training cases."""
        v = self.settings.val_fraction
        return float(v) if v is not None else (0.2 if self.cv_folds else 0.1)

    def deliver(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        """The model delivered for prediction, copied to ``<work>/<dataset>/recommended/`` (a complete trained bundle
        folder: ``configs/inference.json`` predicts with it).

        After cross-validation it is the recommended method **retrained on every labelled case** (plus the whole
        unlabelled pool) with the folds' schedule (the same iteration budget, ``make_all_labelled_split``: validation
        carved by the same rule, none under 3 cases, then the last checkpoint), under
        ``<work>/<dataset>/<method>/all_s<seed>/``; it has no test score of its own (the folds measured the method).
        With a test split it is the recommended method's run of the first seed, as tested.

        Args:
            rec: ``report.recommend``'s choice.

        Returns:
            ``{"delivered": folder, "how": sentence, "predict_command": command}`` (``delivered`` ``None`` when
            ``final_model`` is off after cross-validation).
        """
        from custom_components.data.splits import all_labelled_filename, make_all_labelled_split, write_split

        s = self.settings
        seed = int(s.seeds[0])
        if self.cv_folds:
            if not s.final_model:
                return {"delivered": None, "how": "not trained (--no-final-model)", "predict_command": None}
            split = make_all_labelled_split(self.datalist, seed=seed, val_fraction=self.val_fraction)
            path = write_split(split, self.datalist.parent, self.work / "splits" / all_labelled_filename(seed))
            run = self.train_run(str(rec["base_method"]), 1.0, seed, path)
            n_val = len(split["validation"])
            how = (f"{rec['method']} retrained on all {len(self.meta['cases'])} labelled cases "
                   f"({n_val} of them for validation)" if n_val else
                   f"{rec['method']} retrained on all {len(self.meta['cases'])} labelled cases (no validation: "
                   "the last checkpoint)") + (" + the unlabelled images" if split["unlabeled"] else "") + \
                ", with the folds' iteration budget (split seed " + f"{seed})"
        else:
            runs = sorted((r for r in self.runs if r["method"] == rec["method"]
                           and float(r["ratio"]) == float(rec["ratio"])), key=lambda r: int(r["seed"]))
            run = runs[0]
            how = (f"{rec['method']}'s run at {100 * float(rec['ratio']):g} % labels, split seed {run['seed']}, as "
                   "tested above")
        src, dest = Path(run["folder"]) / run["bundle"], self.work / "recommended"
        if dest.exists():
            shutil.rmtree(dest)

        def skip(folder: str, names: list[str]) -> set[str]:  # training state and outputs; configs + models travel
            top = Path(folder) == src
            return {n for n in names if n.startswith("train_state.pt") or top and (
                n in ("eval", DONE_MARKER, SETTINGS_FILE, "run.json") or n.endswith((".log", ".sh")))}

        shutil.copytree(src, dest, ignore=skip)
        record = {"method": rec["method"], "basis": rec["basis"], "score": rec["score"], "trained_in": str(src),
                  "how": how}
        (dest / "recommended.json").write_text(json.dumps(record, indent=2))
        cmd = (f"python -m monai.bundle run --config_file {relative_path(dest / 'configs' / 'inference.json')} "
               f"--input_dir <folder of new images> --output_dir predictions/{self.name}")
        return {"delivered": str(dest), "how": how, "predict_command": cmd}

    def report(self, total_s: float, splits: Mapping[Any, Path]) -> dict[str, Any]:
        """Aggregate, recommend a model (and deliver it: ``deliver``), write ``<dataset>.md/.json`` and figures,
        print the table.

        Args:
            total_s: wall time of this call's training and evaluation.
            splits: the split files (``{(ratio, seed): path}``, or ``{fold tag: path}`` after cross-validation).
        """
        s = self.settings
        try:
            tables = {p: compare_rows(report.aggregate(self.runs, p)) for p in s.protocols}
        except report.ReportError as e:
            raise RunnerError(str(e)) from e
        self.results_dir.mkdir(parents=True, exist_ok=True)
        figures = []
        try:
            fig = report.dice_vs_ratio_figure(tables[s.protocols[0]],
                                              self.results_dir / f"{self.name}_dice_vs_ratio.png",
                                              title=f"{self.name}: test Dice ({s.protocols[0]})")
            if fig:
                figures.append(fig.name)
        except Exception as e:  # noqa: BLE001 - a figure must not lose the measured table
            print(f"[runner] warning: Dice-vs-ratio plot failed: {type(e).__name__}: {e}", flush=True)
        try:
            fig = report.dice_vs_time_figure(tables[s.protocols[0]], self.results_dir / f"{self.name}_dice_vs_time.png",
                                             title=f"{self.name}: test Dice ({s.protocols[0]}) vs training time")
            if fig:
                figures.append(fig.name)
        except Exception as e:  # noqa: BLE001 - a figure must not lose the measured table
            print(f"[runner] warning: Dice-vs-time plot failed: {type(e).__name__}: {e}", flush=True)
        try:
            fig = self.qualitative()
            if fig:
                figures.append(fig.name)
        except Exception as e:  # noqa: BLE001
            print(f"[runner] warning: qualitative figure failed: {type(e).__name__}: {e}", flush=True)
        env = environment_info()
        settings = {
            "dataset": relative_path(self.datalist), "profile": s.profile, "methods": list(s.methods),
            "ratios": [float(r) for r in s.ratios], "seeds": [int(x) for x in s.seeds], "protocols": list(s.protocols),
            "rounds (full)": s.rounds, "round_mode (full)": s.round_mode, "phase 1 (full)": s.pretrain,
            "backbone": s.backbone or "bundle default", "round_batch (full)": s.round_batch or "bundle default",
            "overrides": [f"{p}:{k}={json.dumps(v)}" for p, k, v in self.overrides],
            "profile budgets": {k: vars(v) for k, v in self.profile.phases.items()},
            "profile bundle settings": (f"{relative_path(self.plan_path)}: {json.dumps(self.plan_ids)}"
                                        if self.plan_path else f"bundles/<phase>/configs/profiles/{s.profile}.json"),
            **{f"plan: {k}": v for k, v in self.plan_reasons.items()},
            "evaluation protocol": self.cv_reason,
            "splits": {(k if isinstance(k, str) else f"r{report.ratio_tag(k[0])}_s{k[1]}"): relative_path(p)
                       for k, p in splits.items()},
            "wall time of this call (s)": round(total_s, 1),
        }
        rec = report.recommend(tables[s.protocols[0]], self.runs, cross_validated=bool(self.cv_folds))
        if rec:
            rec.update(self.deliver(rec))
        md = report.write_markdown(self.results_dir / f"{self.name}.md", self.name, tables, env, self.command,
                                   settings, self.runs, figures, recommendation=rec)
        runs = [{**r, "folder": relative_path(r["folder"]),
                 "metrics": {k: relative_path(v) for k, v in r.get("metrics", {}).items()}} for r in self.runs]
        if rec and rec.get("delivered"):
            rec = {**rec, "delivered": relative_path(rec["delivered"])}
        payload = {"dataset": self.name, "command": self.command, "environment": env, "settings": settings,
                   "tables": tables, "runs": runs, "recommendation": rec}
        (self.results_dir / f"{self.name}.json").write_text(json.dumps(payload, indent=2, default=str))
        for proto, rows in tables.items():
            print(f"\n[runner] test results, dataset {self.name}, protocol {proto} "
                  f"(mean ± std over per-case values):", flush=True)
            print(report.format_console_table(rows), flush=True)
        for line in report.recommendation_lines(rec):
            print(f"[runner] {line}", flush=True)
        print(f"\n[runner] wrote {md}, {self.results_dir / (self.name + '.json')} and {len(figures)} figure(s); "
              f"total wall time {total_s:.0f} s", flush=True)
        return payload

    def qualitative(self) -> Path | None:
        """The qualitative figure of the first finished co-training run (the full method's first, else cps's) at
        the smallest ratio (``report.qualitative_figure``)."""
        cands = [r for r in self.runs if METHODS[r["base_method"]].bundle == "cotrain"]
        cands.sort(key=lambda r: (not METHODS[r["base_method"]].pretrain, r["ratio"], r["seed"]))
        if not cands or self.settings.num_qualitative < 1:
            return None
        run = cands[0]
        phase_dir = Path(run["folder"]) / "cotrain"
        files = self.config_list(phase_dir, "cotrain", ["train.json", OVERRIDES_FILE])
        proto = self.settings.protocols[0]
        selection = dict(run.get("selection") or {})
        if proto in (run.get("test_thresholds") or {}):  # the figure applies the threshold the test applied
            selection["threshold"] = run["test_thresholds"][proto]["threshold"]
        return report.qualitative_figure(files, phase_dir / "models", self.results_dir / f"{self.name}_qualitative.png",
                                         self.settings.num_qualitative, selection or None, proto)

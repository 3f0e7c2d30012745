#!/usr/bin/env python
"""Inference-settings ablation of trained co-training runs (METHOD.md, mask pathway: which inference setting is best
is an empirical question): test Dice and seconds per image of the deployable model under each setting.

For every run folder given (``<work>/<dataset>/<method>/r<ratio>_s<seed>``, as the experiment runner writes them)
the trained ``cotrain`` phase's configs and ``models/model.pt`` + ``model_selection.json`` are copied under
``--out`` (the run folders are only read), and for every inference setting

1. the foreground threshold is chosen again on the **validation** split for that setting, exactly as training's
   selection does it (the training validation loader at ``roi_size``, the 0.02-step sweep of
   ``custom_components.engines.selection``, ties to the threshold nearest 0.5): a threshold tuned for the default one
   pass is not the best one for an 8-draw mean or a DDIM mask;
2. the test split is evaluated with the bundle's ``evaluate.json`` (the repository's, stacked on the run's training
   configs) under the protocol, with the setting's ids (``sampler``, ``ddim_steps``, ``num_draws``,
   ``infer_timestep``) and that threshold;
3. the deployable network's forward time on the test images is measured (the fastest of ``--repeats`` passes over
   the test batches, after the evaluation's own pass has warmed it up: on a shared machine the fastest pass is the
   one least slowed by other jobs).

Settings: one pass at each ``--timesteps`` (the first is the reference: the ``t`` the model was validated with),
ensembles of ``--draws`` seeded draws at the first ``t``, DDIM with each of ``--ddim-steps`` steps. The page has Dice
(mean over all test cases and over seeds with its seed spread), the paired per-case difference against the reference
with a bootstrap 95 % interval (``custom_components/metrics/stats.py``), seconds per image and its ratio to the
reference measured in the same call.

Example::

    python scripts/inference_ablation.py --runs work_dirs/ph2_32_cpu_3seeds/full/r0.1_s{0,1,2} \\
        --out /tmp/inference_ablation --page docs/results/ph2_32_cpu_inference.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from custom_components.errors import UserError, run_cli
from custom_components.experiments import report
from custom_components.experiments.environment import environment_info, relative_path
from custom_components.experiments.runner import EVAL_OVERRIDES_FILE, OVERRIDES_FILE, SETTINGS_FILE
from custom_components.metrics.stats import compare_rows, format_interval, format_spread

PHASE = "cotrain"


class AblationError(UserError):
    """A run folder that cannot be evaluated (missing files), or bad arguments."""


def settings_list(timesteps: Sequence[int], draws: Sequence[int], ddim_steps: Sequence[int]) -> list[dict[str, Any]]:
    """The inference settings, the reference (one pass at ``timesteps[0]``) first.

    Args:
        timesteps: one-pass ``t`` values; the first is the reference and the ``t`` of the ensembles.
        draws: ensemble sizes (> 1).
        ddim_steps: DDIM step counts.
    """
    if not timesteps:
        raise AblationError("--timesteps: give at least the reference t.")
    t0 = int(timesteps[0])
    out = [{"name": f"one pass t={int(t)}", "ids": {"sampler": "one_pass", "num_draws": 1, "infer_timestep": int(t)},
            "passes": 1} for t in timesteps]
    out += [{"name": f"ensemble {int(n)} t={t0}", "ids": {"sampler": "one_pass", "num_draws": int(n),
                                                           "infer_timestep": t0}, "passes": int(n)} for n in draws]
    out += [{"name": f"DDIM {int(s)} steps", "ids": {"sampler": "ddim", "ddim_steps": int(s), "num_draws": 1,
                                                      "infer_timestep": t0}, "passes": int(s)} for s in ddim_steps]
    names = [s["name"] for s in out]
    if len(set(names)) != len(names):
        raise AblationError(f"duplicate settings: {names}.")
    return out


def copy_run(run_dir: Path, out_dir: Path, repo_configs: Path) -> tuple[Path, dict[str, Any]]:
    """Copy a run's trained cotrain phase (configs, model, selection) to ``out_dir/<method>_<run>/cotrain``.

    The repository's ``evaluate.json`` replaces the run's copy (it carries the sampler ids), everything else is the
    run's own (the settings training recorded in its configs).

    Returns:
        the copied phase folder and the run's record (``run.json``).

    Raises:
        AblationError: a file the evaluation needs is missing.
    """
    phase = run_dir / PHASE
    need = [run_dir / "run.json", phase / "configs" / "train.json", phase / "configs" / OVERRIDES_FILE,
            phase / "models" / "model.pt", phase / "models" / "model_selection.json"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise AblationError(f"{run_dir}: not a finished co-training run; missing {', '.join(missing)}.")
    rec = json.loads((run_dir / "run.json").read_text())
    dest = out_dir / f"{rec['method']}_{run_dir.name}" / PHASE
    old_model = dest / "models" / "model.pt"
    if dest.exists() and not (old_model.is_file() and old_model.read_bytes() == (phase / "models" /
                                                                                "model.pt").read_bytes()):
        shutil.rmtree(dest)  # another model: its evaluations are stale
    if (dest / "configs").exists():
        shutil.rmtree(dest / "configs")
    shutil.copytree(phase / "configs", dest / "configs")
    shutil.copy2(repo_configs / "evaluate.json", dest / "configs" / "evaluate.json")
    (dest / "models").mkdir(parents=True, exist_ok=True)
    for f in ("model.pt", "model_selection.json"):
        shutil.copy2(phase / "models" / f, dest / "models" / f)
    if (phase / SETTINGS_FILE).is_file():
        shutil.copy2(phase / SETTINGS_FILE, dest / SETTINGS_FILE)
    return dest, rec


def train_stack(phase_dir: Path) -> list[str]:
    """The run's stacked training configs: ``train.json``, ``profile_3d.json`` (3D), its profile, the runner's ids
    (the order the runner stacks them in, ``Experiment.bundle_files``)."""
    configs = phase_dir / "configs"
    overrides = json.loads((configs / OVERRIDES_FILE).read_text())
    files = [configs / "train.json"]
    if int(overrides.get("spatial_dims", 2)) == 3 and (configs / "profile_3d.json").is_file():
        files.append(configs / "profile_3d.json")
    profile = None
    if (phase_dir / SETTINGS_FILE).is_file():
        profile = json.loads((phase_dir / SETTINGS_FILE).read_text()).get("profile")
    if profile and (configs / "profiles" / f"{profile}.json").is_file():
        files.append(configs / "profiles" / f"{profile}.json")
    return [str(f) for f in files]


def _parser(files: Sequence[str], overrides: Mapping[str, Any]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(files))
    parser.update(dict(overrides))
    return parser


def validation_threshold(phase_dir: Path, ids: Mapping[str, Any], device: torch.device) -> tuple[float, float]:
    """The threshold training's selection would choose for this setting: the deployable model (with the setting's
    ids) on the training validation loader, per-case Dice per swept threshold, best mean, ties nearest 0.5.

    Returns:
        ``(threshold, validation Dice at it)``.
    """
    from custom_components.engines.selection import sweep_threshold

    files = train_stack(phase_dir) + [str(phase_dir / "configs" / OVERRIDES_FILE)]
    over = {"bundle_root": str(phase_dir), "ckpt_dir": str(phase_dir / "models"), "device": str(device),
            "cache_rate": 0.0, **{k: v for k, v in ids.items() if k == "infer_timestep"},
            **{f"deployable_def#{k}": v for k, v in ids.items() if k != "infer_timestep"}}
    parser = _parser(files, over)
    net = parser.get_parsed_content("deployable_def").to(device).eval()
    net.load_state_dict(torch.load(phase_dir / "models" / "model.pt", map_location=device, weights_only=True))
    res = sweep_threshold(net, parser.get_parsed_content("validate#dataloader"),
                          parser.get_parsed_content("validate#inferer"), device,
                          float(parser.get_parsed_content("threshold_step")))
    return float(res["threshold"]), float(res["dice"])


def evaluate_setting(phase_dir: Path, setting: Mapping[str, Any], threshold: float, protocol: str, out: Path,
                     repeats: int) -> dict[str, Any]:
    """Test-split evaluation of one setting with the bundle's ``evaluate.json``; forward time of the deployable.

    Returns:
        ``{"metrics": path of metrics.json, "forward_s": [...], "images": n, "eval_wall_s": s}``.
    """
    from monai.bundle import ConfigWorkflow

    ev = {"eval_key": "test", "eval_protocol": protocol, "output_dir": str(out), "threshold": threshold,
          **setting["ids"]}
    (phase_dir / "configs" / EVAL_OVERRIDES_FILE).write_text(json.dumps(ev, indent=2))
    files = train_stack(phase_dir)
    files.insert(1, str(phase_dir / "configs" / "evaluate.json"))
    files += [str(phase_dir / "configs" / OVERRIDES_FILE), str(phase_dir / "configs" / EVAL_OVERRIDES_FILE)]
    t0 = time.perf_counter()
    wf = ConfigWorkflow(config_file=files, workflow_type="eval", logging_file=False)
    wf.initialize()
    wf.run()
    wall = time.perf_counter() - t0
    net = wf.parser.get_parsed_content("deployable")
    device = wf.parser.get_parsed_content("device")
    loader = wf.parser.get_parsed_content("validate#dataloader")
    inferer = wf.parser.get_parsed_content("validate#inferer")
    batches = [b["image"].to(device) for b in loader]
    wf.finalize()
    n = sum(int(b.shape[0]) for b in batches)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            for b in batches:
                inferer(b, net)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
    metrics = out / "metrics.json"
    if not metrics.is_file():
        raise AblationError(f"{metrics}: not written by the evaluation of {phase_dir}.")
    (out / "setting.json").write_text(json.dumps({**setting, "threshold": threshold, "forward_s": times,
                                                  "images": n, "eval_wall_s": wall}, indent=2))
    return {"metrics": str(metrics), "forward_s": times, "images": n, "eval_wall_s": wall}


def markdown(rows: Sequence[Mapping[str, Any]], settings: Sequence[Mapping[str, Any]], timing: Mapping[str, Any],
             thresholds: Mapping[str, Mapping[int, float]], info: Mapping[str, Any]) -> str:
    """The results page."""
    ref = settings[0]["name"]
    by = {r["method"]: r for r in rows}
    lines = [f"# Inference settings of the deployable model: {info['title']}", "",
             "Generated by `scripts/inference_ablation.py`; every number below was measured by the command shown. "
             "Each setting's foreground threshold is chosen again on the validation split as training's selection "
             "does (0.02 sweep, ties nearest 0.5), then the test split is evaluated with `bundles/cotrain/configs/"
             "evaluate.json` under the protocol. Dice: mean ± std over the per-case values of all seeds' test cases "
             "(population std). Over seeds: mean of each seed's mean Dice ± its sample std across seeds. Δ vs "
             f"`{ref}`: mean paired per-case difference (same seed, same test image) with a seeded percentile "
             "bootstrap 95 % interval (10000 resamples; `custom_components/metrics/stats.py`). Seconds per image: "
             "forward time of the deployable network over the test images (batches of the evaluate config), fastest "
             f"of {info['repeats']} passes, mean over seeds; × ref: the same ratio to `{ref}` measured in this call.",
             "", "## Command", "", "```", info["command"], "```", "",
             "## Setting", ""]
    lines += [f"- {k}: `{v}`" for k, v in info["setting"].items()]
    lines += ["", "## Hardware and software", ""]
    lines += [f"- {k}: {v}" for k, v in info["env"].items()]
    lines += ["", f"## Test results, protocol `{info['protocol']}`", "",
              "| setting | network passes | seeds | test cases | Dice (%) | over seeds (%) | Δ Dice vs ref [95 % CI] "
              "| threshold (per seed) | s / image | × ref |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    ref_s = timing[ref]["per_image_s"]
    for s in settings:
        r = by[s["name"]]
        d, o = r["dice"], r["dice_over_seeds"]
        p = (r.get("paired") or {}).get(ref)
        delta = format_interval(p)
        thr = ", ".join(f"{thresholds[s['name']][sd]:.2f}" for sd in sorted(thresholds[s["name"]]))
        t = timing[s["name"]]["per_image_s"]
        lines.append(f"| {s['name']} | {s['passes']} | {','.join(map(str, r['seeds']))} | {r['num_test_cases']} | "
                     f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f} | {format_spread(o, report.cases_per_seed(r))} | "
                     f"{delta} | {thr} | {t:.4f} | {t / ref_s:.2f} |")
    lines += ["", "## Runs", "", "| run | seed | selected at training | folder |", "|---|---|---|---|"]
    for run in info["runs"]:
        sel = run.get("selection") or {}
        lines.append(f"| {run['method']} r{report.ratio_tag(run['ratio'])} | {run['seed']} | {sel.get('network')} @ "
                     f"{float(sel.get('threshold', 0.5)):.2f} (epoch {sel.get('epoch')}) | `{run['folder']}` |")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders (with run.json and cotrain/)")
    p.add_argument("--out", required=True, help="work folder for the copies and their evaluation outputs")
    p.add_argument("--page", required=True, help="the results page (.md; a .json with the same stem beside it)")
    p.add_argument("--title", default=None, help="page title (default: the runs' dataset folder name)")
    p.add_argument("--timesteps", nargs="+", type=int, default=[500, 250, 750],
                   help="one-pass t values; the first is the reference and the ensembles' t")
    p.add_argument("--draws", nargs="*", type=int, default=[4, 8], help="ensemble sizes")
    p.add_argument("--ddim-steps", nargs="*", type=int, default=[5, 10], help="DDIM step counts")
    p.add_argument("--protocol", default="clean")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the test images per setting")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the ph2_cpu runs train with 1)")
    p.add_argument("--only-finished", action="store_true",
                   help="evaluate nothing new: the page from the settings an earlier call on --out finished")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = settings_list(args.timesteps, args.draws, args.ddim_steps)
    out_dir = Path(args.out).resolve()
    repo_configs = Path(__file__).resolve().parents[1] / "bundles" / PHASE / "configs"
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    load_start, t_start = os.getloadavg(), time.time()
    runs, records, timing_raw, thresholds, reused = [], [], {}, {}, 0
    for run_arg in args.runs:
        run_dir = Path(run_arg).resolve()
        phase_dir, rec = copy_run(run_dir, out_dir, repo_configs)
        records.append({**rec, "folder": relative_path(run_dir)})
        for s in settings:
            out = phase_dir / "eval" / s["name"].replace(" ", "_").replace("=", "")
            done = out / "setting.json"
            if done.is_file() and (out / "metrics.json").is_file() and json.loads(done.read_text())["ids"] == s["ids"]:
                res = json.loads(done.read_text())  # evaluated by an earlier call on the same model: kept
                res["metrics"], thr, val = str(out / "metrics.json"), res["threshold"], None
                reused += 1
            elif args.only_finished:
                continue
            else:
                thr, val = validation_threshold(phase_dir, s["ids"], device)
                res = evaluate_setting(phase_dir, s, thr, args.protocol, out, args.repeats)
            per_image = min(res["forward_s"]) / res["images"]
            print(f"[inference ablation] {rec['method']} r{report.ratio_tag(rec['ratio'])} s{rec['seed']} "
                  f"{s['name']}: threshold {thr:.2f}" + ("" if val is None else f" (val Dice {100 * val:.2f})")
                  + f", {per_image:.4f} s/image" + (" (earlier call)" if val is None else ""), flush=True)
            runs.append({"method": s["name"], "base_method": rec["method"], "ratio": rec["ratio"], "seed": rec["seed"],
                         "metrics": {args.protocol: res["metrics"]}})
            timing_raw.setdefault(s["name"], []).append(per_image)
            thresholds.setdefault(s["name"], {})[int(rec["seed"])] = thr
    if not runs:
        raise AblationError(f"{out_dir}: no finished evaluation (run without --only-finished first).")
    settings = [s for s in settings if s["name"] in timing_raw]
    if settings[0]["name"] != f"one pass t={int(args.timesteps[0])}":
        raise AblationError(f"{out_dir}: the reference one pass t={args.timesteps[0]} is not finished.")
    rows = compare_rows(report.aggregate(runs, args.protocol), references=(settings[0]["name"],), upper="",
                        gap_reference="")
    timing = {k: {"per_image_s": statistics.mean(v), "per_seed_s": v} for k, v in timing_raw.items()}
    load_end = os.getloadavg()
    page = Path(args.page)
    title = args.title or Path(args.runs[0]).resolve().parent.parent.name
    info = {
        "title": title, "protocol": args.protocol, "repeats": args.repeats, "runs": records,
        "command": "python scripts/inference_ablation.py " + shlex.join(
            relative_path(a) if a.startswith("/") else a for a in (sys.argv[1:] if argv is None else argv)),
        "env": {**environment_info(), "torch CPU threads": str(args.threads),
                "load average (1/5/15 min) at start": " / ".join(f"{x:.2f}" for x in load_start),
                "load average at end": " / ".join(f"{x:.2f}" for x in load_end),
                "wall time of this call (s)": f"{time.time() - t_start:.0f}",
                **({"evaluations kept from an earlier call on --out": f"{reused} (their thresholds, metrics and "
                    "forward times are that call's; its load is not in this page)"} if reused else {})},
        "setting": {"settings": ", ".join(s["name"] for s in settings),
                    "threshold": "chosen per setting and seed on the validation split",
                    "DDIM": "MONAI DDIMScheduler, prediction_type sample, from T - 1 (teacher.ddim_segment)",
                    "ensemble": "mean of the softmax of seeded draws (seeds seed, seed + 1, ...)"},
    }
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown(rows, settings, timing, thresholds, info))
    payload = {"settings": settings, "rows": rows, "timing": timing, "thresholds": thresholds,
               **{k: v for k, v in info.items() if k != "title"}}
    page.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str))
    print(f"[inference ablation] wrote {page} and {page.with_suffix('.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

#!/usr/bin/env python
"""Phase-1 report: does unsupervised cycle-consistency pretraining teach the mask pathway anything?

Runs the ``teacher_pretrain`` bundle (through ``ConfigWorkflow``, in-process) on a prepared dataset, then compares
the pretrained teacher with the same architecture untrained (same initial seed):

- **probe Dice**: a fresh 1x1-conv probe trained on the labelled split on top of each (frozen) teacher's
  probabilities, evaluated on the validation split;
- **best-assignment Dice**: the teacher's own unnamed channels under the best channel-to-class assignment;
- per-class pixel fractions (a collapsed teacher puts everything in one class);
- the label-free **reconstruction gain** ``L_rec(blank mask) - L_rec(predicted mask)`` (and with shuffled masks,
  other images' predicted masks) on the validation images: how much the teacher's masks help its own image
  pathway; it needs no label, so it can judge phase 1 where no labels exist. The bundle's monitor logs it every
  validation round beside the probe Dice.

Writes ``<out>/phase1.md`` (table, command, hardware), ``<out>/phase1_loss.png`` (loss curves) and
``<out>/phase1_masks.png`` (image, target, untrained and pretrained teacher masks).

``--score-runs DIR ...`` trains nothing: it scores finished phase-1 folders (``.../teacher_pretrain`` of the experiment
runner or of this script's ``--work-dir``) with the same measures, each on its own split, and writes
``<out>/ranking.md`` / ``.json`` / ``ranking.png``: does the label-free gain rank the runs as the probe and the
best-assignment Dice do (Spearman rank correlation across runs, and across the validation rounds of each run)?

Example:
    python scripts/phase1_report.py --dataset-dir work_dirs/default_data/synthetic_2d --epochs 30
    python scripts/phase1_report.py --score-runs work_dirs/ph2/phase1/*/teacher_pretrain --out docs/phase1/ranking
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from custom_components.errors import UserError, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _load_split(datalist: Path, key: str, roi: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    from monai.data import load_decathlon_datalist
    from monai.transforms import Compose, EnsureTyped, LoadImaged, Resized, ScaleIntensityd

    tf = Compose(
        [
            LoadImaged(keys=["image", "label"], image_only=True, ensure_channel_first=True),
            ScaleIntensityd(keys="image", minv=-1.0, maxv=1.0),
            Resized(keys="image", spatial_size=roi, mode="area"),
            Resized(keys="label", spatial_size=roi, mode="nearest"),
            EnsureTyped(keys=["image", "label"], track_meta=False),
        ]
    )
    items = [tf(d) for d in load_decathlon_datalist(str(datalist), True, key)]
    return torch.stack([d["image"].float() for d in items]), torch.stack([d["label"].long() for d in items])


def _probe_scores(teacher, x_tr, y_tr, x_va, y_va, steps: int, seed: int) -> dict:
    from custom_components.engines.pretrain import _fg_dice, permutation_dice, shuffled_masks
    from custom_components.losses import HardTargetDiceLoss
    from custom_components.networks import ChannelProbe, background_mask, make_noise

    teacher.eval()
    with torch.no_grad():
        p_tr = teacher.predict(x_tr)[0]
        logits_va = torch.log(teacher.predict(x_va)[0].clamp_min(1e-8))
        m = 2 * logits_va.softmax(1) - 1
        noise = make_noise(x_va.shape, seed, x_va.device, x_va.dtype)
        rec = {name: teacher.reconstruct(x_va, mask, 250, noise).loss.mean()
               for name, mask in (("pred", m), ("blank", background_mask(m, m.shape[1])),
                                  ("shuffled", shuffled_masks(m)))}
    torch.manual_seed(seed)
    probe = ChannelProbe(teacher.spatial_dims, teacher.num_classes)
    opt = torch.optim.Adam(probe.parameters(), lr=0.05)
    loss_fn = HardTargetDiceLoss()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(probe(p_tr), y_tr).backward()
        opt.step()
    with torch.no_grad():
        pred = probe(logits_va.softmax(1)).argmax(1, keepdim=True)
    k = teacher.num_classes
    lab = logits_va.argmax(1)
    return {
        "probe_dice": float(_fg_dice(pred, y_va, k).nanmean()),
        "best_assignment_dice": float(permutation_dice(logits_va, y_va).nanmean()),
        "class_fractions": [round(float((lab == c).float().mean()), 4) for c in range(k)],
        "rec_gain_blank": float(rec["blank"] - rec["pred"]),
        "rec_gain_shuffled": float(rec["shuffled"] - rec["pred"]),
        "masks": lab,
    }


#: the monitor's per-round line in a bundle log: "Epoch[14] Metrics -- val_a: 0.1 val_b: 0.2 ..."
_MONITOR_LINE = re.compile(r"Epoch\[(\d+)\] Metrics -- (.*)$")
LABEL_FREE = ("rec_gain_blank", "rec_gain_shuffled")
WITH_LABELS = ("best_assignment_dice", "probe_dice")


def monitor_history(phase_dir: Path) -> list[dict[str, float]]:
    """The bundle monitor's values at every validation round of a phase-1 folder: from ``train.log`` (runner
    folders) or from ``report/phase1.json`` beside the folder (this script's runs)."""
    log = phase_dir / "train.log"
    rows: list[dict[str, float]] = []
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            m = _MONITOR_LINE.search(line)
            if m:
                vals = dict(re.findall(r"(val_\w+): ([-0-9.eE+naNinf]+)", m.group(2)))
                rows.append({"epoch": int(m.group(1)), **{k: float(v) for k, v in vals.items()}})
        return rows
    report = phase_dir.parent / "report" / "phase1.json"
    if report.is_file():
        return list(json.loads(report.read_text()).get("validation", []))
    return rows


def score_run(phase_dir: Path, probe_steps: int, seed: int) -> dict:
    """Label-free gains, probe and best-assignment Dice of one finished phase-1 folder, on its own split.

    The teacher is built from the folder's configs (``train.json`` holds the settings training recorded; the runner's
    or this script's override file names the split) and loaded from ``models/teacher.pt``.

    Raises:
        UserError: not a finished phase-1 folder (naming what is missing).
    """
    from monai.bundle import ConfigParser

    from custom_components.networks import load_teacher_weights

    configs = phase_dir / "configs"
    extra = [configs / f for f in ("runner_overrides.json", "report_overrides.json") if (configs / f).is_file()]
    missing = [str(f) for f in (configs / "train.json", phase_dir / "models" / "teacher.pt") if not f.is_file()]
    if missing or not extra:
        raise UserError(f"{phase_dir}: not a finished phase-1 folder (missing "
                         f"{', '.join(missing) or 'runner_overrides.json / report_overrides.json'}).")
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), *map(str, extra)])
    teacher = parser.get_parsed_content("network_def")
    load_teacher_weights(teacher, phase_dir / "models" / "teacher.pt")
    datalist, roi = Path(parser.get_parsed_content("datalist")), list(parser.get_parsed_content("roi_size"))
    x_tr, y_tr = _load_split(datalist, "labeled", roi)
    x_va, y_va = _load_split(datalist, "validation", roi)
    res = _probe_scores(teacher.cpu(), x_tr, y_tr, x_va, y_va, probe_steps, seed)
    res.pop("masks")
    from custom_components.engines.pretrain import all_foreground_dice

    res["all_foreground_dice"] = float(all_foreground_dice(y_va, teacher.num_classes).mean())
    ov = json.loads(extra[0].read_text())
    res.update(max_epochs=ov.get("max_epochs"), lr_step_epochs=ov.get("lr_step_epochs"), seed=ov.get("seed"),
               datalist=datalist.name, dataset=json.loads(datalist.read_text()).get("name") or datalist.parent.name,
               history=monitor_history(phase_dir))
    return res


def spearman(a, b) -> dict:
    """Spearman rank correlation with its two-sided p-value (``scipy.stats.spearmanr``); ``None`` below 3 points."""
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
    if len(pairs) < 3:
        return {"rho": None, "p": None, "n": len(pairs)}
    r = spearmanr([x for x, _ in pairs], [y for _, y in pairs])
    return {"rho": float(r.statistic), "p": float(r.pvalue), "n": len(pairs)}


def ranking(dirs: list[Path], out: Path, probe_steps: int, seed: int, command: str) -> int:
    """Score every phase-1 folder, write ``ranking.md`` / ``.json`` / ``.png`` under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from custom_components.experiments import environment_info, relative_path

    t0 = time.time()
    runs = []
    for d in dirs:
        d = d.resolve()
        r = score_run(d, probe_steps, seed)
        r["folder"] = relative_path(d)
        r["found_lesion"] = r["best_assignment_dice"] > r["all_foreground_dice"]
        runs.append(r)
        print(f"[phase-1 ranking] {r['folder']}: best-assignment {100 * r['best_assignment_dice']:.1f}, probe "
              f"{100 * r['probe_dice']:.1f}, gain blank {1e3 * r['rec_gain_blank']:.1f} shuffled "
              f"{1e3 * r['rec_gain_shuffled']:.1f} (x1e3)", flush=True)
    datasets = sorted({r["dataset"] for r in runs})  # gains of different datasets are not on one scale
    across = {ds: {f"{g} vs {d}": spearman([r[g] for r in runs if r["dataset"] == ds],
                                           [r[d] for r in runs if r["dataset"] == ds])
                   for g in LABEL_FREE for d in WITH_LABELS} for ds in datasets}
    within = []  # per run: rank correlation of the in-bundle monitor's gain and best-assignment Dice over the rounds
    for r in runs:
        h = r["history"]
        within.append({g: spearman([v.get(f"val_{g}") for v in h], [v.get("val_best_assignment_dice") for v in h])
                       for g in LABEL_FREE})
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 4 * len(datasets)), squeeze=False)
    for row, ds in zip(axes, datasets):
        for ax, g in zip(row, LABEL_FREE):
            for r in (r for r in runs if r["dataset"] == ds):
                ax.scatter(1e3 * r[g], 100 * r["best_assignment_dice"], c="C0" if r["found_lesion"] else "C3")
                ax.annotate(Path(r["folder"]).parent.name, (1e3 * r[g], 100 * r["best_assignment_dice"]), fontsize=6)
            ax.set_xlabel(f"{g.replace('_', ' ')} (val, x1e3; no label)")
            ax.set_ylabel("best-assignment Dice (val, %)")
            c = across[ds][f"{g} vs best_assignment_dice"]
            ax.set_title(f"{ds}: Spearman {c['rho']:.2f} (n = {c['n']})" if c["rho"] is not None
                         else f"{ds}: n = {c['n']}")
    fig.tight_layout()
    fig.savefig(out / "ranking.png", dpi=100)
    plt.close(fig)

    def f(x, scale=100.0, fmt=".1f"):
        return "n/a" if x is None else format(scale * x, fmt)

    lines = ["# Phase 1 judged without labels: reconstruction gain vs probe Dice across runs", "",
             f"- command: `{command}`",
             f"- hardware: {environment_info()['device']}, {torch.get_num_threads()} torch threads; torch "
             f"{torch.__version__}; wall time of the scoring: {time.time() - t0:.0f} s",
             f"- probes: a fresh 1x1 conv per teacher, {probe_steps} Adam steps on the run's labelled split, teacher "
             "frozen; best-assignment Dice: the teacher's own channels under the one channel-to-class assignment "
             "best for the whole validation split; both on the run's validation split at its roi_size",
             "- reconstruction gain (no label): mean over validation images of L_rec(blank or shuffled mask) - "
             "L_rec(predicted mask) at t = 250, same seeded noise",
             "- found the lesion: best-assignment Dice above the all-foreground baseline of the same split", "",
             "| run | dataset | split | seed | epochs | first LR halving (epoch) | best-assignment Dice | probe Dice | "
             "all-foreground Dice | gain blank (x1e3) | gain shuffled (x1e3) | found the lesion |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| `{r['folder']}` | {r['dataset']} | {r['datalist']} | {r['seed']} | {r['max_epochs']} | "
                     f"{r['lr_step_epochs']} | "
                     f"{f(r['best_assignment_dice'])} | {f(r['probe_dice'])} | {f(r['all_foreground_dice'])} | "
                     f"{f(r['rec_gain_blank'], 1e3)} | {f(r['rec_gain_shuffled'], 1e3)} | "
                     f"{'yes' if r['found_lesion'] else 'no'} |")
    lines += ["", "## Rank correlation across runs (per dataset)", "",
              "| dataset | label-free measure vs label measure | Spearman rho | p (two-sided) | runs |",
              "|---|---|---|---|---|"]
    lines += [f"| {ds} | {k} | {f(v['rho'], 1, '.2f')} | {f(v['p'], 1, '.3f')} | {v['n']} |"
              for ds, per in across.items() for k, v in per.items()]
    lines += ["", "## Within each run: the bundle's monitor over its validation rounds", "",
              "Spearman rho between the in-bundle gain and the in-bundle best-assignment Dice over the validation "
              "rounds of one run (does the gain rise when phase 1 finds structure?).", "",
              "| run | rounds | rho, gain blank | rho, gain shuffled |", "|---|---|---|---|"]
    for r, w in zip(runs, within):
        lines.append(f"| `{r['folder']}` | {w['rec_gain_blank']['n']} | {f(w['rec_gain_blank']['rho'], 1, '.2f')} | "
                     f"{f(w['rec_gain_shuffled']['rho'], 1, '.2f')} |")
    lines += ["", "![ranking](ranking.png)", ""]
    (out / "ranking.md").write_text("\n".join(lines))
    (out / "ranking.json").write_text(json.dumps({"runs": runs, "across_runs": across, "within_runs": within,
                                                  "command": command}, indent=2))
    print("\n".join(lines[lines.index("## Rank correlation across runs (per dataset)"):]), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset-dir", type=Path, default=ROOT / "work_dirs" / "default_data" / "synthetic_2d")
    ap.add_argument("--datalist", type=Path, default=None,
                    help="split datalist (default: <dataset-dir>/splits/datalist_r0.1_s0.json)")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "work_dirs" / "phase1_report")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "phase1")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--roi", type=int, nargs="+", default=[32, 32])
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--probe-steps", type=int, default=200)
    ap.add_argument("--validations", type=int, default=5, help="runs of the bundle's monitor during phase 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup-epochs", type=int, default=1)
    ap.add_argument("--lr-step-epochs", type=int, default=None, help="first LR halving (default: the bundle's)")
    ap.add_argument("--score-runs", type=Path, nargs="+", default=None, metavar="DIR",
                    help="score finished phase-1 folders instead of training (writes <out>/ranking.md)")
    args = ap.parse_args(argv)
    if args.score_runs:
        from custom_components.experiments import relative_path

        cmd = "python scripts/phase1_report.py " + " ".join(
            relative_path(a) if a.startswith("/") else a for a in (sys.argv[1:] if argv is None else argv))
        return ranking(list(args.score_runs), args.out, args.probe_steps, args.seed, cmd)

    from monai.bundle import ConfigWorkflow

    from custom_components.experiments import environment_info, relative_path
    from custom_components.networks import DiffusionTeacher
    from custom_components.visualize import plot_curves, qualitative_panel

    datalist = args.datalist or args.dataset_dir / "splits" / "datalist_r0.1_s0.json"
    meta = args.dataset_dir / "datalist.json"
    data_name = (json.loads(meta.read_text()).get("name") if meta.is_file() else None) or "the built-in data"
    if not datalist.is_file():
        from custom_components.data import make_split, make_synthetic_dataset, write_split

        if not (args.dataset_dir / "datalist.json").is_file():
            make_synthetic_dataset(args.dataset_dir, spatial_dims=2, num_cases=120, image_size=64, seed=args.seed)
        datalist = write_split(make_split(args.dataset_dir / "datalist.json", 0.1, args.seed), args.dataset_dir)

    val_interval = max(1, args.epochs // args.validations)
    bundle = args.work_dir / "teacher_pretrain"
    if bundle.exists():
        shutil.rmtree(bundle)
    shutil.copytree(ROOT / "bundles" / "teacher_pretrain" / "configs", bundle / "configs")
    overrides = dict(
        datalist=str(datalist), roi_size=list(args.roi), channels=list(args.channels), batch_size=args.batch_size,
        max_epochs=args.epochs, val_interval=val_interval, num_workers=0, seed=args.seed,
        warmup_epochs=args.warmup_epochs,
        **({"lr_step_epochs": args.lr_step_epochs} if args.lr_step_epochs else {}),
    )
    # the folder says how it was trained (phase1_ranking.py scores it later from its configs)
    (bundle / "configs" / "report_overrides.json").write_text(json.dumps(overrides, indent=2))
    wf = ConfigWorkflow(config_file=[str(bundle / "configs" / "train.json"), str(bundle / "configs" /
                                                                                 "report_overrides.json")],
                        workflow_type="train")
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    untrained = DiffusionTeacher(2, trainer.teacher.in_channels, trainer.teacher.num_classes, channels=args.channels)
    untrained.load_state_dict(trainer.teacher.state_dict())  # the same initial weights, before any step
    history: dict[str, list[float]] = {"loss_cyc": [], "loss_probe": []}
    sums: dict[str, list[float]] = {k: [] for k in history}
    val_curve: list[dict[str, float]] = []  # the bundle's own monitor, every val_interval epochs

    from ignite.engine import Events

    evaluator = wf.parser.get_parsed_content("validate#evaluator")

    @evaluator.on(Events.COMPLETED)
    def _validated(engine):
        m = engine.state.metrics
        val_curve.append({"epoch": trainer.state.epoch, "iteration": trainer.state.iteration,
                          **{k: round(float(m[k]), 6) for k in m if k.startswith("val_frac_class")
                             or k in ("val_best_assignment_dice", "val_probe_dice", "val_rec_mse", "val_rec_gain_blank",
                                      "val_rec_gain_shuffled")}})

    @trainer.on(Events.ITERATION_COMPLETED)
    def _collect(engine):
        for k in history:
            sums[k].append(float(engine.state.output[k]))

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch(engine):
        for k in history:
            history[k].append(float(np.mean(sums[k])))
            sums[k].clear()

    t0 = time.time()
    wf.run()
    wall = time.time() - t0
    teacher = trainer.teacher.cpu()
    wf.finalize()

    x_tr, y_tr = _load_split(datalist, "labeled", args.roi)
    x_va, y_va = _load_split(datalist, "validation", args.roi)
    res_u = _probe_scores(untrained, x_tr, y_tr, x_va, y_va, args.probe_steps, args.seed)
    res_p = _probe_scores(teacher, x_tr, y_tr, x_va, y_va, args.probe_steps, args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    plot_curves(history, args.out / "phase1_loss.png", title="phase 1: cycle-consistency loss (epoch means)")
    if val_curve:
        fracs = sorted((k for k in val_curve[0] if k.startswith("val_frac_class")), key=lambda k: int(k[14:]))
        plot_curves({"best-assignment Dice (val)": [v.get("val_best_assignment_dice", np.nan) for v in val_curve],
                     **{f"fraction of pixels in channel {k[14:]} (val)": [v.get(k, np.nan) for v in val_curve]
                        for k in fracs}},
                    args.out / "phase1_validation.png", xlabel=f"validation run (one every {val_interval} epochs)",
                    title=f"phase 1 monitor ({val_curve[0]['iteration']}..{val_curve[-1]['iteration']} iterations)")
    n = min(6, x_va.shape[0])
    qualitative_panel(
        [((x_va[i].numpy() + 1) / 2).clip(0, 1) for i in range(n)],
        {
            "target": [y_va[i, 0].numpy() for i in range(n)],
            "untrained teacher (raw channels)": [res_u["masks"][i].numpy() for i in range(n)],
            "pretrained teacher (raw channels)": [res_p["masks"][i].numpy() for i in range(n)],
        },
        args.out / "phase1_masks.png",
        mode="mask",
    )
    cmd = "python scripts/phase1_report.py " + " ".join(
        relative_path(a) if a.startswith("/") else a for a in (sys.argv[1:] if argv is None else argv))
    rows = [("untrained (same init)", res_u), ("pretrained (phase 1)", res_p)]
    lines = [
        f"# Phase 1 on {data_name}: pretrained vs untrained teacher",
        "",
        f"- command: `{cmd}`",
        f"- hardware: {environment_info()['device']}, {torch.get_num_threads()} torch threads; torch "
        f"{torch.__version__}; wall time of phase 1: {wall:.0f} s",
        f"- data: `{relative_path(datalist)}` ({x_tr.shape[0]} labelled images train the probes, {x_va.shape[0]} "
        "validation images)",
        f"- phase 1: {args.epochs} epochs, batch {args.batch_size}, roi {args.roi}, channels {args.channels}; "
        "labels never update the teacher",
        f"- probes: a fresh 1x1 conv per teacher, {args.probe_steps} Adam steps on the labelled split, teacher frozen",
        "",
        "| teacher | probe Dice (val) | best-assignment Dice (val) | reconstruction gain, blank / shuffled (val, x1e3) "
        "| class fractions (val) |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {100 * r['probe_dice']:.1f} | {100 * r['best_assignment_dice']:.1f} | "
                     f"{1e3 * r['rec_gain_blank']:.2f} / {1e3 * r['rec_gain_shuffled']:.2f} | {r['class_fractions']} |")
    lines += [
        "",
        "Foreground Dice in %, mean over validation images (best assignment chosen once for the whole set). "
        "Reconstruction gain: mean over validation images of L_rec(blank or shuffled mask) - L_rec(predicted mask) "
        "at t = 250 with the same seeded noise (no label used; 0 = the image pathway gets nothing from the mask). "
        "Loss curves: `phase1_loss.png`; masks: `phase1_masks.png`.",
        "",
        "![loss](phase1_loss.png)",
        "",
        "![masks](phase1_masks.png)",
        "",
    ]
    if val_curve:
        lines += ["## The bundle's monitor during phase 1 (validation split)", "",
                  "| epoch | iteration | best-assignment Dice | in-bundle probe Dice | reconstruction gain blank / "
                  "shuffled (x1e3) | fraction per channel | reconstruction MSE |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {v['epoch']} | {v['iteration']} | {100 * v.get('val_best_assignment_dice', np.nan):.1f} | "
                  f"{100 * v.get('val_probe_dice', np.nan):.1f} | {1e3 * v.get('val_rec_gain_blank', np.nan):.2f} / "
                  f"{1e3 * v.get('val_rec_gain_shuffled', np.nan):.2f} | {' / '.join(f'{v[k]:.3f}' for k in fracs)} | "
                  f"{v.get('val_rec_mse', np.nan):.4f} |" for v in val_curve]
        lines += ["", "![validation](phase1_validation.png)", ""]
    (args.out / "phase1.md").write_text("\n".join(lines))
    (args.out / "phase1.json").write_text(
        json.dumps({n: {k: v for k, v in r.items() if k != "masks"} for n, r in rows}
                   | {"history": history, "validation": val_curve, "wall_s": wall}, indent=2)
    )
    start = next(i for i, line in enumerate(lines) if line.startswith("| teacher"))
    print("\n".join(lines[start : start + 2 + len(rows)]))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

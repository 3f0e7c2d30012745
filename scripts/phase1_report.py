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

Example:
    python scripts/phase1_report.py --dataset-dir work_dirs/default_data/synthetic_2d --epochs 30
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

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
    args = ap.parse_args(argv)

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
        warmup_epochs=1,
    )
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "train.json"), workflow_type="train", **overrides)
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
    sys.exit(main())

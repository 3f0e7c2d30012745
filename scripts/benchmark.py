#!/usr/bin/env python
"""Benchmark every phase's training step and inference, eager fp32 against each speed switch, in one run.

Measures per case: median ms per step (after warm-up, with ``torch.cuda.synchronize``), samples/s, achieved
TFLOP/s (FLOPs counted once per workload with ``torch.utils.flop_counter.FlopCounterMode``), peak memory
(``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS), the first step's loss (training) or the
Dice agreement with the eager fp32 prediction (inference); and, per dimension, the data-loading wait as a
share of the step for a MONAI ``Dataset`` + ``DataLoader`` and a ``CacheDataset`` + ``ThreadDataLoader`` on
synthetic files. Results are printed and written as JSON (rewritten after every case, so a run cut short
keeps what it measured).

Usage::

    python scripts/benchmark.py --quick --output /tmp/bench.json          # tiny sizes on CPU, ~20-30 s
    python scripts/benchmark.py --output bench.json --time-budget 420     # full sizes on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custom_components.metrics.dice import mask_dice  # noqa: E402
from custom_components.runtime.fastpath import (  # noqa: E402
    backbones_of,
    compile_backbones,
    restore_backend_flags,
    set_backend_flags,
    to_channels_last,
)

#: switch name -> settings (anything not named is off / fp32)
SWITCHES: dict[str, dict[str, Any]] = {
    "eager_fp32": {},
    "tf32": {"tf32": True},
    "cudnn_benchmark": {"cudnn_benchmark": True},
    "bf16": {"amp": "bfloat16"},
    "fp16": {"amp": "float16"},
    "channels_last": {"channels_last": True},
    "batch_rounds_off": {"batch_rounds": False},
    "fast": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True},
    "fast_channels_last": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True, "channels_last": True},
    "fast_compile": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True, "compile": True},
    # torch.compile's CUDA graphs (mode "reduce-overhead")
    "fast_compile_cudagraphs": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True, "compile": True,
                                "compile_mode": "reduce-overhead"},
    # the 3D memory switch: rounds one at a time, each recomputed in backward (against rounds one at a time kept)
    "fast_checkpoint_rounds": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True, "checkpoint_rounds": True},
    "fast_batch_rounds_off": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True, "batch_rounds": False},
    # issue 27 (--plan fast_backbone): the fast backbone under the fast settings; per pass against the supervised UNet
    # of the same widths; one-pass inference (TF32, no autocast) against the supervised bundle's UNet
    "fast_backbone": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True, "backbone": "fast"},
    "fast_backbone_unlabeled": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True, "backbone": "fast",
                                "round_batch": "unlabeled"},
    "pass_unet": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True, "backbone": "unet"},
    "pass_fast": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True, "backbone": "fast"},
    "pass_diffusion_unet": {"amp": "bfloat16", "tf32": True, "cudnn_benchmark": True, "backbone": "diffusion_unet"},
    "infer_sup": {"tf32": True, "cudnn_benchmark": True, "backbone": "unet"},
    "infer_fast": {"tf32": True, "cudnn_benchmark": True, "backbone": "fast"},
    "infer_diffusion_unet": {"tf32": True, "cudnn_benchmark": True, "backbone": "diffusion_unet"},
}

#: dense bf16 tensor-core peak in TFLOP/s from the vendors' data sheets (not measured), for the share-of-peak column
BF16_PEAK_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H200": 989.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0}

#: ``--cpu``: the reference is today's bundle defaults before the fast path (eager fp32, for-loop Adam);
#: ``cpu_fast`` is the bundles' default now on a CPU with native bf16 (``fastpath.native_bf16``)
CPU_SWITCHES: dict[str, dict[str, Any]] = {
    "reference": {},
    "bf16": {"amp": "bfloat16"},
    "fused_adam": {"fused_adam": True},
    "cpu_fast": {"amp": "bfloat16", "fused_adam": True},
    "cpu_fast_channels_last": {"amp": "bfloat16", "fused_adam": True, "channels_last": True},
    "batch_rounds_off": {"batch_rounds": False},
    "cpu_fast_checkpoint_rounds": {"amp": "bfloat16", "fused_adam": True, "checkpoint_rounds": True},
    "cpu_fast_compile": {"amp": "bfloat16", "fused_adam": True, "compile": True},
    # one run alone on the machine (the runner's --jobs 1): torch threads = the cores this process may use, where
    # the others use --threads (the CPU profiles' one thread per run, what --jobs 2 gives each of two runs)
    "cpu_fast_all_cores": {"amp": "bfloat16", "fused_adam": True, "threads": "all"},
    # changes the method (an option, off by default): the R rounds at half the input size
    "cpu_fast_round_scale_0.5": {"amp": "bfloat16", "fused_adam": True, "round_scale": 0.5},
}

#: ``--cpu``, issue 27: the fast backbone (``backbone: "fast"``) against the supervised UNet, each group timed
#: interleaved and reported as a multiple of its first switch. A switch may name its own ``phase`` and ``rounds``
#: (the mixed groups ``fast_step`` and ``infer_cmp``); ``backbone: "unet"`` is MONAI's supervised ``UNet``;
#: ``first_loss_vs`` names the switch of the same network whose first loss it is checked against
_CF = {"amp": "bfloat16", "fused_adam": True}
CPU_SWITCHES.update({
    # per pass (forward + backward + Adam step, bf16 autocast) of one backbone at the co-training batch, the same
    # widths (the workload's diffusion channels) for all three
    "pass_unet": {**_CF, "backbone": "unet"},
    "pass_fast": {**_CF, "backbone": "fast"},
    "pass_diffusion_unet": {**_CF, "backbone": "diffusion_unet"},
    # a co-training step against the supervised step at the same labelled batch (the supervised bundle's UNet)
    "sup_cpu_fast": {**_CF, "phase": "sup"},
    "fast_R3_fp32": {"phase": "p2", "rounds": 3, "backbone": "fast"},
    "fast_R3": {**_CF, "phase": "p2", "rounds": 3, "backbone": "fast", "first_loss_vs": "fast_R3_fp32"},
    "fast_R3_unlabeled": {**_CF, "phase": "p2", "rounds": 3, "backbone": "fast", "round_batch": "unlabeled"},
    "fast_R1_unlabeled": {**_CF, "phase": "p2", "rounds": 1, "backbone": "fast", "round_batch": "unlabeled"},
    "diffusion_unet_R3": {**_CF, "phase": "p2", "rounds": 3},
    # the paper's backbone with cheaper rounds (the candidates of docs/results/ph2_32_cpu_fast_recipe.md)
    "diffusion_unet_R3_unlabeled": {**_CF, "phase": "p2", "rounds": 3, "round_batch": "unlabeled"},
    "diffusion_unet_R1": {**_CF, "phase": "p2", "rounds": 1},
    "diffusion_unet_R1_unlabeled": {**_CF, "phase": "p2", "rounds": 1, "round_batch": "unlabeled"},
    "diffusion_unet_R0": {**_CF, "phase": "p2", "rounds": 0},
    # one-pass inference (fp32, as the bundles' inference), the supervised bundle's UNet against the deployable
    "infer_sup": {"phase": "infer", "backbone": "unet"},
    "infer_fast": {"phase": "infer", "backbone": "fast"},
    "infer_diffusion_unet": {"phase": "infer", "backbone": "diffusion_unet"},
})

#: the issue-27 groups of ``--cpu`` (``(phase, switches)``, the first switch the baseline of the ratios)
FAST_GROUPS = [
    ("pass", ["pass_unet", "pass_fast", "pass_diffusion_unet"]),
    ("fast_step", ["sup_cpu_fast", "fast_R3_fp32", "fast_R3", "fast_R3_unlabeled", "fast_R1_unlabeled",
                   "diffusion_unet_R3", "diffusion_unet_R3_unlabeled", "diffusion_unet_R1",
                   "diffusion_unet_R1_unlabeled", "diffusion_unet_R0"]),
    ("infer_cmp", ["infer_sup", "infer_fast", "infer_diffusion_unet"]),
]

#: switches of ``FAST_GROUPS`` left out per workload: in 3D at 16-128 channels a ``DiffusionModelUNet`` co-training
#: step takes tens of seconds on 2 cores, so only the paper's R = 3 and the default recipe (R = 1, unlabelled half)
#: are timed there
FAST_SKIP = {"la_cpu": ("diffusion_unet_R3_unlabeled", "diffusion_unet_R1", "diffusion_unet_R0")}


#: ``--cpu`` switches whose peak RSS is measured, co-training cases only (one fresh process each: slow on a loaded
#: 2-core machine)
RSS_SWITCHES = ("reference", "cpu_fast", "cpu_fast_checkpoint_rounds")


def cpu_workload_configs(quick: bool = False) -> dict[str, dict[str, Any]]:
    """``--cpu``: the ``ph2_cpu`` profile's setting (PH2 at 32x32) and the LA CPU setting (half resolution).

    Args:
        quick: tiny sizes (a smoke test of the code path; its numbers mean nothing).
    """
    if quick:
        return {
            "ph2_cpu": dict(spatial_dims=2, in_channels=3, num_classes=2, size=(16, 16), batch=2, channels=(4, 8),
                            groups=2, sup_channels=(4, 8), infer_batch=2, ddim_steps=2, rounds=(0, 3)),
            "la_cpu": dict(spatial_dims=3, in_channels=1, num_classes=2, size=(8, 8, 8), batch=1, channels=(4, 8),
                           groups=2, sup_channels=(4, 8), volume=(12, 12, 10), window=(8, 8, 8), strides=(4, 4, 2),
                           sw_batch=2, ddim_steps=2, rounds=(0, 3)),
        }
    return {
        # scripts/run_experiments.py PROFILES["ph2_cpu"]: 32x32 RGB, batch 8 (+8), channels 16-32-64, supervised
        # UNet of the supervised bundle (16-32-64-128, 2 residual units); validation batches of 20
        "ph2_cpu": dict(spatial_dims=2, in_channels=3, num_classes=2, size=(32, 32), batch=8, channels=(16, 32, 64),
                        groups=8, sup_channels=(16, 32, 64, 128), infer_batch=20, ddim_steps=5, rounds=(0, 3)),
        # LA at half resolution: patches 56x56x40, batch 1 (+1), channels 16-32-64-128 (every network, as the
        # la_cpu profile); a synthetic 72x72x44 volume through the UAMT sliding window (window 56x56x40, strides
        # 16/16/4: 8 windows)
        "la_cpu": dict(spatial_dims=3, in_channels=1, num_classes=2, size=(56, 56, 40), batch=1,
                       channels=(16, 32, 64, 128), groups=8, sup_channels=(16, 32, 64, 128), volume=(72, 72, 44),
                       window=(56, 56, 40), strides=(16, 16, 4), sw_batch=4, ddim_steps=4, rounds=(0, 3)),
    }


def cpu_plan(with_compile: bool) -> list[tuple[str, str, int, list[str]]]:
    """``--cpu`` groups ``(workload, phase, rounds, switches)``; the switches of a group are timed interleaved.

    Args:
        with_compile: add ``torch.compile`` to the phase-2 R = 3 groups (minutes of compilation on 2 cores).
    """
    comp = ["cpu_fast_compile"] if with_compile else []
    out = []
    for wl in ("ph2_cpu", "la_cpu"):
        p2 = (["reference", "bf16", "fused_adam", "cpu_fast", "cpu_fast_all_cores", "cpu_fast_channels_last",
               "batch_rounds_off", "cpu_fast_checkpoint_rounds", "cpu_fast_round_scale_0.5"] if wl == "ph2_cpu"
              else ["reference", "bf16", "cpu_fast", "cpu_fast_all_cores", "cpu_fast_checkpoint_rounds"])
        fast = ["cpu_fast", "cpu_fast_all_cores"]
        out += [(wl, "p2", 3, p2 + comp), (wl, "p2", 0, ["reference"] + fast),
                (wl, "p1", 0, ["reference", "bf16"] + fast), (wl, "sup", 0, ["reference", "bf16"] + fast)]
        out += [(wl, ph, 0, ["reference", "bf16"]) for ph in ("infer", "infer_ens4", "ddim")]
        out += [(wl, ph, 0, [w for w in sws if w not in FAST_SKIP.get(wl, ())]) for ph, sws in FAST_GROUPS]
    return out


def workload_configs(quick: bool) -> dict[str, dict[str, Any]]:
    """The PH2-like 2D and LA-like 3D settings (tiny ones with ``quick``).

    Args:
        quick: tiny sizes for a CPU smoke run.
    """
    if quick:
        return {
            "ph2": dict(spatial_dims=2, in_channels=3, num_classes=2, size=(16, 16), batch=2, channels=(4, 8),
                        groups=2, sup_channels=(4, 8), image_size=(20, 20), n_files=6, ddim_steps=2,
                        infer_batch=2, rounds=(0, 2)),
            "la": dict(spatial_dims=3, in_channels=1, num_classes=2, size=(8, 8, 8), batch=1, channels=(4, 8),
                       groups=2, sup_channels=(4, 8), volume=(12, 12, 10), window=(8, 8, 8), strides=(4, 4, 2),
                       image_size=(12, 12, 10), n_files=3, ddim_steps=2, sw_batch=2, rounds=(0, 2)),
        }
    return {
        "ph2": dict(spatial_dims=2, in_channels=3, num_classes=2, size=(128, 128), batch=8,
                    channels=(32, 64, 128, 256), groups=8, sup_channels=(16, 32, 64, 128, 256),
                    image_size=(192, 256), n_files=48, ddim_steps=5, infer_batch=16, rounds=(0, 3)),
        "la": dict(spatial_dims=3, in_channels=1, num_classes=2, size=(96, 96, 80), batch=1,
                   channels=(16, 32, 64, 128), groups=8, sup_channels=(16, 32, 64, 128, 256),
                   volume=(144, 144, 88), window=(112, 112, 80), strides=(18, 18, 4), image_size=(144, 144, 88),
                   n_files=8, ddim_steps=4, sw_batch=4, rounds=(0, 3)),
        # the same LA setting with the prototype's wider backbone (memory and speed of the default channels)
        "la_c32": dict(spatial_dims=3, in_channels=1, num_classes=2, size=(96, 96, 80), batch=1,
                       channels=(32, 64, 128, 256), groups=8, sup_channels=(16, 32, 64, 128, 256),
                       volume=(144, 144, 88), window=(112, 112, 80), strides=(18, 18, 4), image_size=(144, 144, 88),
                       n_files=8, ddim_steps=4, sw_batch=4, rounds=(0, 3)),
    }


# ----------------------------------------------------------------------------------------------- utilities
def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU).

    Args:
        device: the device.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures.

    Args:
        device: the device.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS (CPU)"


def reset_peak(device: torch.device) -> None:
    """Reset the CUDA peak-memory counter (no-op on CPU).

    Args:
        device: the device.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matrix products and convolutions, forward and backward).

    Args:
        fn: the step.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def time_steps(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> list[float]:
    """Milliseconds of each of ``iters`` timed calls after ``warmup`` untimed ones.

    Args:
        fn: the step.
        device: the device (synchronised around every call).
        warmup: untimed calls first.
        iters: timed calls.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def autocast_ctx(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """Autocast for inference cases (``None``: off).

    Args:
        device: the device.
        amp: ``"bfloat16"``, ``"float16"`` or ``None``.
    """
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, amp))


def hard_dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Foreground Dice between the argmax maps of two probability tensors ``(B, K, ...)`` (1.0 when both empty).

    Args:
        a: probabilities.
        b: probabilities.
    """
    la, lb = a.argmax(1) > 0, b.argmax(1) > 0
    return float(mask_dice(la.reshape(1, -1), lb.reshape(1, -1), empty=1.0)[0])


# ----------------------------------------------------------------------------------------------- builders
def _teacher(cfg: dict, device: torch.device, seed: int, backbone: str = "diffusion_unet") -> torch.nn.Module:
    from custom_components.networks import DiffusionTeacher

    torch.manual_seed(seed)
    net = DiffusionTeacher(
        cfg["spatial_dims"], cfg["in_channels"], cfg["num_classes"], channels=cfg["channels"],
        norm_num_groups=cfg["groups"], backbone=backbone,
    )
    # DiffusionModelUNet zero-initialises its output (and residual-output) convolutions, the fast backbone its time
    # projections: every output would be 0 (or t-independent) in any precision, hiding precision effects; give them
    # small random weights (as a trained network has)
    with torch.no_grad():
        for name, prm in net.named_parameters():
            if prm.ndim > 1 and not prm.any():
                prm.normal_(0.0, 0.05)
    return net.to(device)


def _images(cfg: dict, batch: int, device: torch.device, seed: int, size: tuple | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg["in_channels"], *(size or cfg["size"]), generator=g).to(device)


def _labels(cfg: dict, batch: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, cfg["num_classes"], (batch, 1, *cfg["size"]), generator=g).to(device)


def _apply_switch(nets: list[torch.nn.Module], spatial_dims: int, sw: dict) -> None:
    if sw.get("channels_last"):
        for m in nets:
            to_channels_last(m, spatial_dims)
    if sw.get("compile"):
        compile_backbones(nets, **({"mode": sw["compile_mode"]} if sw.get("compile_mode") else {}))


def _adam(params: Any, sw: dict) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, 1e-3, fused=True if sw.get("fused_adam") else None)


def build_case(phase: str, cfg: dict, sw: dict, device: torch.device,
               rounds: int = 0) -> tuple[Callable, int, Callable]:
    """A step function for a phase, its samples per step, and a function returning a loss/prediction to compare.

    Args:
        phase: ``sup``, ``p1``, ``p2``, ``infer``, ``infer_ens4``, ``ddim``.
        cfg: the workload settings.
        sw: the switch settings.
        device: the device.
        rounds: ``R`` of phase 2.
    """
    from monai.engines.utils import IterationEvents  # noqa: F401  (registers events on the trainers)

    amp = sw.get("amp")
    sd = cfg["spatial_dims"]
    b = cfg["batch"]
    phase, rounds = sw.get("phase", phase), sw.get("rounds", rounds)  # a mixed group's switch names its own
    backbone = sw.get("backbone", "diffusion_unet")
    if phase == "pass":  # one backbone's pass at the co-training batch: forward + backward + optimizer step
        from monai.networks.nets import UNet

        from custom_components.networks import build_backbone

        torch.manual_seed(0)
        c, k, n = cfg["in_channels"], cfg["num_classes"], 2 * b
        g = torch.Generator().manual_seed(0)
        if backbone == "unet":
            net = UNet(sd, c, k, channels=cfg["channels"], strides=[2] * (len(cfg["channels"]) - 1), num_res_units=2)
            args = (torch.randn(n, c, *cfg["size"], generator=g).to(device),)
        else:
            net = build_backbone(sd, c + k, k, cfg["channels"], norm_num_groups=cfg["groups"], backbone=backbone)
            args = (torch.randn(n, c + k, *cfg["size"], generator=g).to(device),
                    torch.randint(0, 1000, (n,), generator=g).to(device))
        net = net.to(device)
        opt = _adam(net.parameters(), sw)
        target = torch.randn(n, k, *cfg["size"], generator=g).to(device)

        def step() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            with autocast_ctx(device, amp):
                loss = (net(*args).float() - target).square().mean()
            loss.backward()
            opt.step()
            return loss.detach()

        return step, n, step
    if phase == "sup":
        from monai.networks.nets import UNet

        from custom_components.losses import HardTargetDiceLoss

        torch.manual_seed(0)
        net = UNet(sd, cfg["in_channels"], cfg["num_classes"], channels=cfg["sup_channels"],
                   strides=[2] * (len(cfg["sup_channels"]) - 1), num_res_units=2).to(device)
        _apply_switch([net], sd, sw)
        opt = _adam(net.parameters(), sw)
        loss_fn = HardTargetDiceLoss(use_ce=True)
        scaler = torch.amp.GradScaler(enabled=amp == "float16")
        x, y = _images(cfg, b, device, 0), _labels(cfg, b, device, 0)

        def step() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            with autocast_ctx(device, amp):
                loss = loss_fn(net(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return loss.detach()

        return step, b, step
    if phase == "p1":
        from custom_components.engines import TeacherPretrainTrainer

        teacher = _teacher(cfg, device, 0)
        _apply_switch(backbones_of(teacher), sd, sw)
        opt = _adam(teacher.parameters(), sw)
        n = 2 * b  # phase 1 sees every image: batch = labelled + unlabelled size
        trainer = TeacherPretrainTrainer(device, 1, [0], teacher, opt, amp=bool(amp), amp_dtype=amp or "bfloat16")
        trainer.state.epoch = 1
        batch = {"image": _images(cfg, n, device, 0)}

        def step(loaded: dict | None = None) -> torch.Tensor:
            return trainer._iteration(trainer, loaded or batch)["loss"]

        return step, n, step
    if phase == "p2":
        from custom_components.engines import CoTrainer

        teacher, student = _teacher(cfg, device, 0, backbone), _teacher(cfg, device, 1, backbone)
        _apply_switch(backbones_of(teacher) + [student.mask_net], sd, sw)
        t_opt, s_opt = _adam(teacher.parameters(), sw), _adam(student.mask_net.parameters(), sw)
        trainer = CoTrainer(device, 1, [0], teacher, student, t_opt, s_opt, rounds=rounds,
                            batch_rounds=sw.get("batch_rounds", True),
                            checkpoint_rounds=bool(sw.get("checkpoint_rounds")),
                            round_scale=sw.get("round_scale", 1.0), round_batch=sw.get("round_batch", "all"),
                            amp=bool(amp), amp_dtype=amp or "bfloat16")
        trainer.state.epoch = 1
        batch = {
            "labeled": {"image": _images(cfg, b, device, 0), "label": _labels(cfg, b, device, 0)},
            "unlabeled": {"image": _images(cfg, b, device, 2)},
        }

        def step() -> torch.Tensor:
            torch.manual_seed(123)  # identical t / noise draws in every case (same first-step loss)
            return trainer._iteration(trainer, batch)["loss"]

        return step, 2 * b, step
    # ---- inference
    from custom_components.inferers.uamt import UAMTSlidingWindowInferer
    from custom_components.networks import MaskPathwaySegmenter

    draws = 4 if phase == "infer_ens4" else 1
    if backbone == "unet":  # the supervised bundle's UNet, softmax probabilities
        from monai.networks.nets import UNet

        torch.manual_seed(0)
        unet = UNet(sd, cfg["in_channels"], cfg["num_classes"], channels=cfg["sup_channels"],
                    strides=[2] * (len(cfg["sup_channels"]) - 1), num_res_units=2).to(device).eval()
        seg = lambda w: unet(w).softmax(1)  # noqa: E731
    else:
        teacher = _teacher(cfg, device, 0, backbone).eval()
        seg = MaskPathwaySegmenter(sd, cfg["in_channels"], cfg["num_classes"], channels=cfg["channels"],
                                   norm_num_groups=cfg["groups"], mask_net=teacher.mask_net,
                                   num_draws=draws).to(device).eval()
        _apply_switch([teacher.mask_net], sd, sw)
    if sd == 2:
        x = _images(cfg, cfg["infer_batch"], device, 5)
        n = x.shape[0]
        run = (lambda: teacher.predict_ddim(x, num_steps=cfg["ddim_steps"])) if phase == "ddim" else (lambda: seg(x))
    else:
        x = _images(cfg, 1, device, 5, size=cfg["volume"])
        n = 1
        sw_batch = 1 if draws > 1 else cfg["sw_batch"]
        inferer = UAMTSlidingWindowInferer(cfg["window"], cfg["strides"], sw_batch_size=sw_batch, apply_softmax=False)
        if phase == "ddim":
            run = lambda: inferer(x, lambda w: teacher.predict_ddim(w, num_steps=cfg["ddim_steps"]))  # noqa: E731
        else:
            run = lambda: inferer(x, seg)  # noqa: E731

    def step() -> torch.Tensor:
        with torch.inference_mode(), autocast_ctx(device, amp):
            return run()

    return step, n, step


# ----------------------------------------------------------------------------------------------- data loading
def write_synthetic_files(cfg: dict, root: Path) -> list[dict]:
    """Write ``n_files`` synthetic image/label pairs (PNG in 2D, NIfTI in 3D) and return their datalist.

    Args:
        cfg: the workload settings.
        root: output folder.
    """
    rng = np.random.default_rng(0)
    items = []
    for i in range(cfg["n_files"]):
        shape = cfg["image_size"]
        lab = (rng.random(shape) > 0.7).astype(np.uint8)
        if cfg["spatial_dims"] == 2:
            from PIL import Image

            img = (rng.random((*shape, cfg["in_channels"])) * 255).astype(np.uint8)
            ip, lp = root / f"img{i}.png", root / f"lab{i}.png"
            Image.fromarray(img).save(ip)
            Image.fromarray(lab).save(lp)
        else:
            import nibabel as nib

            ip, lp = root / f"img{i}.nii.gz", root / f"lab{i}.nii.gz"
            nib.save(nib.Nifti1Image(rng.standard_normal(shape).astype(np.float32), np.eye(4)), ip)
            nib.save(nib.Nifti1Image(lab, np.eye(4)), lp)
        items.append({"image": str(ip), "label": str(lp)})
    return items


def loading_pipeline(cfg: dict, items: list[dict], kind: str, batch: int, workers: int) -> Any:
    """A MONAI training loader as the bundles build it: ``kind`` is ``dataset`` or ``cache``.

    Args:
        cfg: the workload settings.
        items: datalist entries.
        kind: ``dataset`` (``Dataset`` + ``DataLoader``) or ``cache`` (``CacheDataset`` + ``ThreadDataLoader``).
        batch: batch size.
        workers: ``DataLoader`` worker processes (``dataset`` only).
    """
    from monai import transforms as T
    from monai.data import CacheDataset, DataLoader, Dataset, ThreadDataLoader

    keys = ["image", "label"]
    det = [T.LoadImaged(keys, image_only=True, ensure_channel_first=True), T.ScaleIntensityd("image", -1.0, 1.0)]
    if cfg["spatial_dims"] == 2:
        det.append(T.Resized(keys, cfg["size"], mode=["area", "nearest"]))
        rand = [T.RandFlipd(keys, 0.5, 0), T.RandFlipd(keys, 0.5, 1), T.RandRotate90d(keys, 0.5, 3)]
    else:
        rand = [T.RandSpatialCropd(keys, cfg["size"], random_size=False), T.RandFlipd(keys, 0.5, 0),
                T.RandFlipd(keys, 0.5, 1)]
    final = [T.EnsureTyped("image", dtype=torch.float32, track_meta=False),
             T.EnsureTyped("label", dtype=torch.int64, track_meta=False)]
    tf = T.Compose(det + rand + final)
    if kind == "cache":
        ds = CacheDataset(items, tf, cache_rate=1.0, num_workers=max(workers, 1), progress=False)
        return ThreadDataLoader(ds, batch_size=batch, shuffle=True, num_workers=0, drop_last=True)
    return DataLoader(Dataset(items, tf), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                      persistent_workers=workers > 0)


def measure_data_wait(cfg: dict, step_for_batch: Callable[[dict], Any], loader: Any, device: torch.device,
                      iters: int) -> dict:
    """Loop ``iters`` steps over ``loader``: time waiting for the next batch vs the step (incl. host-to-device).

    Args:
        cfg: the workload settings.
        step_for_batch: runs one training step on a batch dictionary.
        loader: the loader (re-iterated as needed).
        device: the device.
        iters: timed steps (after one warm-up step).
    """
    def batches():
        while True:
            yield from loader

    it = batches()
    step_for_batch(next(it))
    sync(device)
    wait, comp = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        bt = next(it)
        t1 = time.perf_counter()
        step_for_batch(bt)
        sync(device)
        t2 = time.perf_counter()
        wait.append((t1 - t0) * 1e3)
        comp.append((t2 - t1) * 1e3)
    w, c = sum(wait), sum(comp)
    return {"wait_ms_per_step": w / iters, "compute_ms_per_step": c / iters, "wait_share": w / (w + c)}


def run_data_loading(wl: str, cfg: dict, swname: str, device: torch.device, quick: bool, workers: int,
                     iters: int) -> list[dict]:
    """Data-loading wait of the phase-1 step on synthetic files, for both loading pipelines.

    Args:
        wl: workload name.
        cfg: the workload settings.
        swname: the switch of the step (``eager_fp32`` or ``fast``).
        device: the device.
        quick: smoke mode (no worker processes).
        workers: worker processes of the uncached pipeline.
        iters: timed steps.
    """
    out: list[dict] = []
    sw = SWITCHES[swname]
    prev = set_backend_flags(tf32=bool(sw.get("tf32")), cudnn_benchmark=bool(sw.get("cudnn_benchmark")))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            items = write_synthetic_files(cfg, Path(tmp))
            step, n, _ = build_case("p1", cfg, sw, device)

            def run_on(bt: dict) -> Any:
                return step({"image": bt["image"].to(device, non_blocking=True)})

            for kind in ("dataset", "cache"):
                nw = 0 if quick or kind == "cache" else workers
                loader = loading_pipeline(cfg, items, kind, n, nw)
                d = measure_data_wait(cfg, run_on, loader, device, iters)
                d.update(workload=wl, phase="p1", switch=swname, pipeline=kind, workers=nw, batch=n)
                out.append(d)
                print(f"{wl}/data/{swname}/{kind:8s} wait {d['wait_ms_per_step']:8.2f} ms  "
                      f"compute {d['compute_ms_per_step']:8.2f} ms  share {d['wait_share']:.3f}", flush=True)
                del loader
    except Exception as e:  # noqa: BLE001  (recorded, not fatal)
        out.append({"workload": wl, "switch": swname, "error": f"{type(e).__name__}: {e}"})
        print(f"{wl}/data_loading error {e}", flush=True)
    finally:
        restore_backend_flags(prev)
    return out


# ----------------------------------------------------------------------------------------------- driver
def versions() -> dict[str, str]:
    """Library versions of this run."""
    import ignite
    import monai

    out = {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
           "ignite": ignite.__version__, "numpy": np.__version__}
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
        out["cudnn"] = str(torch.backends.cudnn.version())
    return out


def device_name(device: torch.device) -> str:
    """Human name of the device.

    Args:
        device: the device.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def speed_plan() -> list[tuple[str, str, int, str]]:
    """``--plan speed`` (``scripts/gpu_checks.sh speed``): co-training R = 3 of the PH2 128x128 and the LA setting,
    eager fp32 against PyTorch's defaults (``tf32``), ``fast``, ``torch.compile`` and CUDA graphs; then the LA
    memory switch (rounds one at a time, kept or checkpointed) at 96x96x80, batch 1+1."""
    cases = []
    for wl in ("ph2", "la"):
        cases += [(wl, "p2", 3, s) for s in ("eager_fp32", "tf32", "fast")]
    cases += [("la", "p2", 3, s) for s in ("fast_batch_rounds_off", "fast_checkpoint_rounds")]
    # compiling is slow: last, so that a time budget cuts these first
    for wl in ("ph2", "la"):
        cases += [(wl, "p2", 3, s) for s in ("fast_compile", "fast_compile_cudagraphs")]
    return cases


def fast_backbone_plan() -> list[tuple[str, str, int, str]]:
    """``--plan fast_backbone`` (``scripts/gpu_checks.sh fast_backbone``, issue 27): per workload (PH2 128x128, LA
    96x96x80) one pass of each backbone against the supervised UNet of the same widths, the supervised step and the
    co-training step (today's backbone R = 3; the fast one R = 3, R = 3 and R = 1 with the rounds on the unlabelled
    half), one-pass inference of the supervised UNet and both deployables; TFLOP/s and share of the bf16 peak for
    every case, peak memory (LA R = 3 must fit 24 GB)."""
    cases = []
    for wl in ("ph2", "la"):
        cases += [(wl, "pass", 0, s) for s in ("pass_unet", "pass_fast", "pass_diffusion_unet")]
        cases += [(wl, "sup", 0, "fast"), (wl, "p2", 3, "fast_backbone"), (wl, "p2", 3, "fast_backbone_unlabeled"),
                  (wl, "p2", 1, "fast_backbone_unlabeled"), (wl, "p2", 3, "fast")]
        cases += [(wl, "infer", 0, s) for s in ("infer_sup", "infer_fast", "infer_diffusion_unet")]
    return cases


def fast_backbone_ratios(cases: list[dict]) -> dict[str, float]:
    """Issue 27's ratios from the cases of one run: per pass against ``pass_unet``, co-training steps against the
    supervised step (``sup/fast``), one-pass inference against ``infer_sup``, per workload.

    Args:
        cases: the run's case entries.
    """
    ms = {c["case"]: c["ms_per_step"] for c in cases if "ms_per_step" in c}
    out = {}
    for wl in ("ph2", "la", "ph2_cpu", "la_cpu"):
        for case, base in ((f"{wl}/pass/pass_fast", f"{wl}/pass/pass_unet"),
                           (f"{wl}/pass/pass_diffusion_unet", f"{wl}/pass/pass_unet"),
                           (f"{wl}/p2_R3/fast_backbone", f"{wl}/sup/fast"),
                           (f"{wl}/p2_R3/fast_backbone_unlabeled", f"{wl}/sup/fast"),
                           (f"{wl}/p2_R1/fast_backbone_unlabeled", f"{wl}/sup/fast"),
                           (f"{wl}/p2_R3/fast", f"{wl}/sup/fast"),
                           (f"{wl}/infer/infer_fast", f"{wl}/infer/infer_sup"),
                           (f"{wl}/infer/infer_diffusion_unet", f"{wl}/infer/infer_sup")):
            if case in ms and base in ms:
                out[f"{case} / {base}"] = ms[case] / ms[base]
    return out


def plan(quick: bool, device: torch.device) -> list[tuple[str, str, int, str]]:
    """The ordered cases ``(workload, phase, rounds, switch)``: most important first (a time budget cuts the tail).

    Args:
        quick: smoke mode (few switches).
        device: the device (fp16 / compile / channels-last are GPU switches; quick mode skips them).
    """
    if quick:  # one case per phase (two for phase 2), enough to exercise every code path on a CPU
        cases = [("la", "p2", 2, "eager_fp32"), ("la", "p2", 2, "bf16"), ("la", "p1", 0, "eager_fp32"),
                 ("la", "sup", 0, "eager_fp32"), ("la", "infer", 0, "eager_fp32"),
                 ("la", "infer_ens4", 0, "eager_fp32"),
                 ("la", "ddim", 0, "eager_fp32"), ("ph2", "p2", 0, "eager_fp32"), ("ph2", "p1", 0, "eager_fp32"),
                 ("ph2", "infer", 0, "eager_fp32"), ("ph2", "data", 0, "eager_fp32")]
        return cases
    core = ["eager_fp32", "fast"]
    r = {wl: workload_configs(quick)[wl]["rounds"][1] for wl in ("la", "ph2")}
    cases = []
    # 1. the headline numbers first (a time budget cuts the tail of this list)
    for wl in ("la", "ph2"):
        cases += [(wl, "p2", r[wl], s) for s in ("eager_fp32", "tf32", "bf16", "fast")]
    for wl in ("la", "ph2"):
        cases += [(wl, ph, 0, s) for ph in ("infer", "infer_ens4", "ddim") for s in core]
    for wl in ("la", "ph2"):
        cases += [(wl, ph, 0, s) for ph in ("p2", "p1", "sup") for s in core] + [(wl, "data", 0, "eager_fp32")]
    # 2. the remaining single switches
    for wl in ("la", "ph2"):
        cases += [(wl, "p2", r[wl], s) for s in ("cudnn_benchmark", "fp16", "channels_last", "fast_channels_last",
                                                 "batch_rounds_off")]
        cases += [(wl, "infer", 0, s) for s in ("tf32", "bf16", "fast_channels_last")]
    # 3. the wider backbone and torch.compile (slow to build)
    if device.type == "cuda":
        cases += [("la_c32", "p2", 3, "fast"), ("la_c32", "infer", 0, "fast"),
                  ("la", "p2", r["la"], "fast_compile"), ("la", "infer", 0, "fast_compile"),
                  ("ph2", "p2", r["ph2"], "fast_compile")]
    return cases


def cpu_model() -> str:
    """The CPU model name and the bf16 instructions ``lscpu`` reports."""
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return (f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} logical CPUs, "
            f"bf16 instructions: {', '.join(bf16) or 'none'}")


def vm_hwm_mb() -> float:
    """This process's peak resident set size in MiB (``VmHWM`` of ``/proc/self/status``; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024
    raise RuntimeError("scripts/benchmark.py: /proc/self/status has no VmHWM line (peak RSS needs Linux); use --no-rss")


def rss_of_case(wl: str, phase: str, rounds: int, swname: str, quick: bool = False,
                calls: int = 2) -> tuple[float, float]:
    """Peak RSS (MiB) of a fresh process that builds one ``--cpu`` case and runs it ``calls`` times, and that peak
    minus the process's peak after its imports (what the case itself adds).

    Args:
        wl: workload.
        phase: phase.
        rounds: ``R``.
        swname: ``CPU_SWITCHES`` key.
        quick: the tiny sizes.
        calls: calls of the step.
    """
    import subprocess

    # VmHWM of /proc/self/status: the high-water RSS of this process's own address space (ru_maxrss would carry
    # the parent's peak over fork + exec on Linux)
    code = (f"import sys; sys.argv=['benchmark']; sys.path.insert(0, {str(Path(__file__).parent)!r}); import torch; "
            f"torch.set_num_threads(1); import benchmark as b; "
            f"import custom_components.engines, custom_components.inferers.uamt, monai.networks.nets; "
            f"base = b.vm_hwm_mb(); "
            f"step, _, _ = b.build_case({phase!r}, b.cpu_workload_configs({quick})[{wl!r}], "
            f"b.CPU_SWITCHES[{swname!r}], "
            f"torch.device('cpu'), {rounds}); [step() for _ in range({calls})]; print(b.vm_hwm_mb(), base)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    peak, base = (float(v) for v in out.strip().splitlines()[-1].split())
    return peak, peak - base


def switch_threads(sw: dict, default: int) -> int:
    """Torch threads of a ``--cpu`` switch: every core this process may use for ``threads: "all"``, else
    ``default`` (``--threads``)."""
    if sw.get("threads") == "all":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return default


def run_cpu(args: argparse.Namespace) -> dict:
    """``--cpu``: every group's switches built side by side and timed interleaved (one call of each in turn, so a
    changing load on a shared machine hits them alike); medians, ratios against ``reference`` of the same group.

    Args:
        args: the parsed command line.
    """
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    t_start = time.perf_counter()
    cfgs = cpu_workload_configs(args.quick)
    only = set(args.only.split(",")) if args.only else set(cfgs)
    iters = args.iters or 7
    warmup = args.warmup if args.warmup is not None else 2
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "command": " ".join(["scripts/benchmark.py"] + sys.argv[1:]), "device": f"CPU: {cpu_model()}",
        "quick": args.quick,
        "load_average_start": list(os.getloadavg()),
        "threads": torch.get_num_threads(), "versions": versions(), "iters": iters, "warmup": warmup,
        "workloads": {k: {kk: list(v) if isinstance(v, tuple) else v for kk, v in c.items()} for k, c in cfgs.items()},
        "switches": CPU_SWITCHES, "cases": [],
    }
    keep = set(args.switches.split(",")) if args.switches else None
    phases = set(args.phases.split(",")) if args.phases else None
    for wl, phase, rounds, switches in cpu_plan(args.compile):
        if wl not in only or (phases is not None and phase not in phases):
            continue
        switches = [s for i, s in enumerate(switches) if keep is None or i == 0 or s in keep]  # the baseline stays
        group = f"{wl}/{phase}{'_R' + str(rounds) if phase == 'p2' else ''}"
        steps, firsts = {}, {}
        nthreads = {swname: switch_threads(CPU_SWITCHES[swname], args.threads) for swname in switches}
        try:
            for swname in switches:
                sw = CPU_SWITCHES[swname]
                torch.set_num_threads(nthreads[swname])
                if sw.get("compile"):
                    torch._dynamo.reset()
                t0 = time.perf_counter()
                step, n, probe = build_case(phase, cfgs[wl], sw, device, rounds)
                first = probe()
                for _ in range(max(0, warmup - 1)):
                    step()
                steps[swname] = step
                firsts[swname] = (first, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001  (record the failed group, keep the others)
            res.setdefault("errors", []).append({"group": group, "error": f"{type(e).__name__}: {e}"})
            print(f"{group:45s} failed: {type(e).__name__}: {e}", flush=True)
            continue
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(iters):
            for swname, step in steps.items():
                torch.set_num_threads(nthreads[swname])
                t0 = time.perf_counter()
                step()
                times[swname].append((time.perf_counter() - t0) * 1e3)
        torch.set_num_threads(args.threads)
        base = switches[0]  # "reference" in the switch groups, the supervised UNet in the issue-27 groups
        ref_ms = statistics.median(times[base])
        for swname in switches:
            sw = CPU_SWITCHES[swname]
            ms = statistics.median(times[swname])
            first, build_s = firsts[swname]
            sw_phase, sw_rounds = sw.get("phase", phase), sw.get("rounds", rounds)
            entry = {"case": f"{group}/{swname}", "workload": wl, "phase": phase, "rounds": rounds, "switch": swname,
                     "ms_per_step": ms, "ms_all": times[swname], "samples_per_step": n, "first_call_s": build_s,
                     "speedup_vs_reference": ref_ms / ms, "threads": nthreads[swname]}
            partner = sw.get("first_loss_vs", "reference" if base == "reference" else None)
            if phase != sw_phase or phase == "pass":  # an issue-27 group: a multiple of its baseline
                entry.update(switch_phase=sw_phase, switch_rounds=sw_rounds, baseline=base, x_of_baseline=ms / ref_ms)
            if sw_phase in ("sup", "p1", "p2", "pass"):
                entry["first_loss"] = float(first)
                if partner in firsts:
                    ref_first = firsts[partner][0]
                    entry["first_loss_rel_diff"] = (abs(float(first) - float(ref_first))
                                                    / max(abs(float(ref_first)), 1e-12))
            elif partner in firsts:
                ref_first = firsts[partner][0]
                entry["max_abs_prob_diff"] = float((first.float() - ref_first.float()).abs().max())
                entry["dice_vs_reference"] = hard_dice(first.float(), ref_first.float())
            if not args.no_rss and swname in RSS_SWITCHES and phase == "p2":
                entry["peak_rss_mb"], entry["peak_rss_above_imports_mb"] = rss_of_case(wl, phase, rounds, swname,
                                                                                       args.quick)
            res["cases"].append(entry)
            print(f"{entry['case']:45s} {ms:9.1f} ms  "
                  + (f"{entry['x_of_baseline']:.2f}x of {base}" if "x_of_baseline" in entry
                     else f"x{entry['speedup_vs_reference']:.2f}")
                  + (f"  {entry['peak_rss_mb']:7.0f} MiB RSS ({entry['peak_rss_above_imports_mb']:.0f} above imports)"
                     if "peak_rss_mb" in entry else ""), flush=True)
        del steps
        res["elapsed_s"] = time.perf_counter() - t_start
        out_path.write_text(json.dumps(res, indent=2))
    by = {c["case"]: c for c in res["cases"]}
    res["cotrain_over_supervised"] = {}
    for wl in cfgs:
        for sw in ("reference", "cpu_fast", "cpu_fast_all_cores"):
            a, b = by.get(f"{wl}/p2_R3/{sw}"), by.get(f"{wl}/sup/{sw}")
            if a and b:
                ratio = a["ms_per_step"] / b["ms_per_step"]
                res["cotrain_over_supervised"][f"{wl}/{sw}"] = ratio
                print(f"co-training iteration (R = 3) / supervised step, {wl}, {sw}: {ratio:.1f}x")
    res["fast_backbone"] = {c["case"]: c["x_of_baseline"] for c in res["cases"] if "x_of_baseline" in c}
    res["elapsed_s"] = time.perf_counter() - t_start
    res["load_average_end"] = list(os.getloadavg())
    out_path.write_text(json.dumps(res, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(cpu_markdown(res))
    print(f"wrote {out_path} ({res['elapsed_s']:.1f} s)")
    return res


PHASE_NAMES = {"p2": "co-training", "p1": "phase 1", "sup": "supervised step", "infer": "inference, one pass",
               "infer_ens4": "inference, ensemble of 4", "ddim": "inference, DDIM",
               "pass": "one backbone pass (fwd + bwd + Adam)"}


def cpu_markdown(res: dict) -> str:
    """The ``--cpu`` results as a Markdown table.

    Args:
        res: what :func:`run_cpu` returned.
    """
    lines = ["| setting | phase | switch | ms | per | x vs reference | first loss rel. diff / Dice vs ref. | peak RSS "
             "MiB (above imports) |",
             "|---|---|---|---:|---|---:|---:|---:|"]
    fast = [c for c in res["cases"] if "x_of_baseline" in c]
    if len(fast) == len(res["cases"]):
        lines = []  # no switch table
    for c in res["cases"]:
        if "x_of_baseline" in c:
            continue
        ph = PHASE_NAMES[c["phase"]] + (f", R = {c['rounds']}" if c["phase"] == "p2" else "")
        infer = c["phase"] in ("infer", "infer_ens4", "ddim")
        per = ("volume" if c["workload"].startswith("la") else "image") if infer else "step"
        ms = c["ms_per_step"] / (c["samples_per_step"] if per == "image" else 1)
        agree = (f"{c['first_loss_rel_diff']:.1e}" if "first_loss_rel_diff" in c
                 else f"{100 * c['dice_vs_reference']:.2f} %")
        rss = f"{c['peak_rss_mb']:.0f} ({c['peak_rss_above_imports_mb']:.0f})" if "peak_rss_mb" in c else "-"
        sw = "**cpu_fast**" if c["switch"] == "cpu_fast" else c["switch"]
        lines.append(f"| {c['workload']} | {ph} | {sw} | {ms:.1f} | {per} | {c['speedup_vs_reference']:.2f} | {agree} "
                     f"| {rss} |")
    lines.append("")
    for k, v in res.get("cotrain_over_supervised", {}).items():
        lines.append(f"- co-training iteration (R = 3) / supervised step at the same batch, {k}: **{v:.1f}x**")
    if fast:
        head = ("| setting | group | switch (phase, R) | ms | per | x of the group's first row | first loss rel. "
                "diff |")
        lines += ["", "Issue 27, the fast backbone (each row a multiple of its group's first row, timed interleaved):",
                  "", head, "|---|---|---|---:|---|---:|---:|"]
        for c in fast:
            infer = c["switch_phase"] == "infer"
            per = ("volume" if c["workload"].startswith("la") else "image") if infer else "step"
            ms = c["ms_per_step"] / (c["samples_per_step"] if per == "image" else 1)
            what = c["switch_phase"] + (f", R = {c['switch_rounds']}" if c["switch_phase"] == "p2" else "")
            agree = f"{c['first_loss_rel_diff']:.1e}" if "first_loss_rel_diff" in c else "-"
            lines.append(f"| {c['workload']} | {c['phase']} | {c['switch']} ({what}) | {ms:.1f} | {per} | "
                         f"{c['x_of_baseline']:.2f} | {agree} |")
    return "\n".join(lines).lstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return (and write) the results dictionary.

    Args:
        argv: command-line arguments (``None``: ``sys.argv``).
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes on CPU, few iterations (~20-30 s)")
    ap.add_argument("--output", default="benchmark.json", help="JSON file to write")
    ap.add_argument("--device", default=None, help="device (default: cuda if available, cpu with --quick)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per case")
    ap.add_argument("--iters", type=int, default=None, help="timed steps per case")
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds; cases that start later are skipped (0: none)")
    ap.add_argument("--workers", type=int, default=4, help="DataLoader workers of the uncached loading pipeline")
    ap.add_argument("--only", default=None, help="comma-separated workloads (la, ph2; with --cpu: ph2_cpu, la_cpu)")
    ap.add_argument("--plan", choices=("all", "speed", "fast_backbone"), default="all",
                    help="GPU cases: all (default) or speed (co-training R = 3: fp32 / defaults / fast / compile / "
                         "CUDA graphs, LA memory switch) or fast_backbone (issue 27: the fast backbone per pass, per "
                         "co-training step and in inference against the supervised UNet)")
    ap.add_argument("--cpu", action="store_true",
                    help="the CPU table: ph2_cpu and la_cpu settings, switches timed interleaved, peak RSS per case")
    ap.add_argument("--threads", type=int, default=1, help="--cpu: torch threads (1 = the CPU profiles' setting)")
    ap.add_argument("--compile", action="store_true", help="--cpu: also time torch.compile (slow to build on 2 cores)")
    ap.add_argument("--no-rss", action="store_true", help="--cpu: skip the per-case peak-RSS subprocesses")
    ap.add_argument("--switches", default=None,
                    help="--cpu: comma-separated switches to time (reference always; default: the plan's)")
    ap.add_argument("--phases", default=None,
                    help="--cpu: comma-separated groups' phases to run (e.g. pass,fast_step,infer_cmp: the "
                         "issue-27 fast-backbone groups; default: all)")
    ap.add_argument("--markdown", default=None, help="--cpu: also write the table as Markdown here")
    args = ap.parse_args(argv)
    if args.cpu:
        return run_cpu(args)
    t_start = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.quick else "cpu"))
    if args.quick and device.type == "cpu":
        torch.set_num_threads(1)  # small ops: more threads only add contention on a shared CPU
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    iters = args.iters if args.iters is not None else (2 if args.quick else 8)
    cfgs = workload_configs(args.quick)
    only = set(args.only.split(",")) if args.only else set(cfgs)
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "device": device_name(device), "versions": versions(), "quick": args.quick,
        "warmup": warmup, "iters": iters,
        "workloads": {k: {kk: list(v) if isinstance(v, tuple) else v for kk, v in c.items()} for k, c in cfgs.items()},
        "switches": SWITCHES, "cases": [], "data_loading": [], "skipped": [],
    }

    def write() -> None:
        res["elapsed_s"] = time.perf_counter() - t_start
        out_path.write_text(json.dumps(res, indent=2))

    flops_cache: dict[tuple, int] = {}
    ref: dict[tuple, dict] = {}
    plans = {"speed": speed_plan, "fast_backbone": fast_backbone_plan}
    for wl, phase, rounds, swname in (plans[args.plan]() if args.plan in plans else plan(args.quick, device)):
        if wl not in only:
            continue
        sw = SWITCHES[swname]
        key = (wl, phase, rounds, sw.get("backbone"), sw.get("round_batch"))  # one network and recipe
        name = f"{wl}/{phase}{'_R' + str(rounds) if phase == 'p2' else ''}/{swname}"
        if args.time_budget and (time.perf_counter() - t_start
                                 > args.time_budget * (0.6 if "compile" in swname else 1.0)):
            res["skipped"].append({"case": name, "reason": "time budget"})
            continue
        if phase == "data":
            for swd in ("eager_fp32",) if args.quick else ("eager_fp32", "fast"):
                res["data_loading"] += run_data_loading(wl, cfgs[wl], swd, device, args.quick, args.workers,
                                                        iters if args.quick else 3 * iters)
            write()
            continue
        prev = set_backend_flags(tf32=bool(sw.get("tf32")), cudnn_benchmark=bool(sw.get("cudnn_benchmark")))
        if sw.get("compile"):
            torch._dynamo.reset()
        reset_peak(device)
        entry: dict[str, Any] = {"case": name, "workload": wl, "phase": phase, "rounds": rounds, "switch": swname}
        try:
            t0 = time.perf_counter()
            step, n, probe = build_case(phase, cfgs[wl], sw, device, rounds)
            first = probe()
            sync(device)
            entry["first_call_s"] = time.perf_counter() - t0
            if (swname == "eager_fp32" or args.plan == "fast_backbone") and key not in flops_cache:
                flops_cache[key] = count_flops(step)  # --plan fast_backbone: counted under the case's own switch
            # keep slow cases short: at most ~10 s of timed steps, never fewer than 3
            n_iter = iters if args.quick else max(3, min(iters, int(10.0 / max(entry["first_call_s"], 1e-3))))
            times = time_steps(step, device, max(0, warmup - 1), n_iter)
            entry["timed_iters"] = n_iter
            ms = statistics.median(times)
            mem, mem_src = peak_memory_mb(device)
            entry.update(ms_per_step=ms, ms_min=min(times), ms_max=max(times), samples_per_step=n,
                         samples_per_s=n / ms * 1e3, peak_mem_mb=mem, peak_mem_source=mem_src)
            if key in flops_cache:
                entry["gflop_per_step"] = flops_cache[key] / 1e9
                entry["tflops"] = flops_cache[key] / (ms / 1e3) / 1e12
                peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in res["device"]), None)
                if peak:
                    entry["share_of_bf16_peak"] = entry["tflops"] / peak
            if phase in ("sup", "p1", "p2"):
                entry["first_loss"] = float(first)
                if swname == "eager_fp32":
                    ref[key] = {"ms": ms, "loss": float(first)}
                elif key in ref:
                    entry["first_loss_rel_diff"] = (abs(float(first) - ref[key]["loss"])
                                                    / max(abs(ref[key]["loss"]), 1e-12))
            else:
                pred = first.float()
                if swname == "eager_fp32":
                    ref[key] = {"ms": ms, "pred": pred}
                elif key in ref:
                    entry["dice_vs_eager_fp32"] = hard_dice(pred, ref[key]["pred"])
                    entry["max_abs_prob_diff"] = float((pred - ref[key]["pred"]).abs().max())
            if key in ref and swname != "eager_fp32":
                entry["speedup_vs_eager_fp32"] = ref[key]["ms"] / ms
            del step, probe, first
        except torch.cuda.OutOfMemoryError as e:  # record and go on
            entry["error"] = f"out of memory: {str(e).splitlines()[0]}"
        except Exception as e:  # noqa: BLE001  (a benchmark records failures instead of stopping)
            entry["error"] = f"{type(e).__name__}: {e}"
        finally:
            restore_backend_flags(prev)
        res["cases"].append(entry)
        msg = entry.get("error") or (
            f"{entry['ms_per_step']:9.2f} ms  {entry['samples_per_s']:8.1f} samples/s  "
            f"{entry.get('tflops', float('nan')):6.2f} TFLOP/s  {entry['peak_mem_mb']:8.0f} MiB"
            + (f"  x{entry['speedup_vs_eager_fp32']:.2f}" if "speedup_vs_eager_fp32" in entry else "")
        )
        print(f"{name:40s} {msg}", flush=True)
        write()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if args.plan == "fast_backbone":
        res["fast_backbone_ratios"] = fast_backbone_ratios(res["cases"])
        for k, v in res["fast_backbone_ratios"].items():
            print(f"{k}: {v:.2f}x")
    write()
    print(f"wrote {out_path} ({res['elapsed_s']:.1f} s)")
    return res


if __name__ == "__main__":
    main()

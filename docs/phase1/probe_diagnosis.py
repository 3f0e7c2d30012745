"""Why the in-bundle phase-1 probe Dice stays near 0 (``probe_diagnosis.md``): distribution of the teacher's
channel-1 probability at the validation ``t`` (500) and at training's random ``t``, the bundle probe's decision
boundary, and a fresh probe trained as the bundle does on a frozen teacher.

Usage: ``python docs/phase1/probe_diagnosis.py <phase-1 folder>/teacher_pretrain``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from custom_components.engines.pretrain import _fg_dice
from custom_components.losses import HardTargetDiceLoss
from custom_components.networks import ChannelProbe, load_teacher_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from phase1_report import _load_split  # noqa: E402

QUANTILES = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])


def main(phase_dir: str) -> None:
    torch.set_num_threads(1)
    cp = ConfigParser()
    cp.read_config([f"{phase_dir}/configs/train.json", f"{phase_dir}/configs/runner_overrides.json"])
    teacher = cp.get_parsed_content("network_def")
    load_teacher_weights(teacher, f"{phase_dir}/models/teacher.pt")
    teacher.eval()
    roi, datalist = cp.get_parsed_content("roi_size"), cp.get_parsed_content("datalist")
    xt, yt = _load_split(datalist, "labeled", roi)
    xv, yv = _load_split(datalist, "validation", roi)
    state = torch.load(f"{phase_dir}/models/train_state.pt", map_location="cpu", weights_only=False)
    probe = ChannelProbe(2, 2)
    probe.load_state_dict(state["probe"])
    probe.eval()
    with torch.no_grad():
        pv = teacher.predict(xv)[0]  # t = 500, fixed noise (the monitor's input)
        g = torch.Generator().manual_seed(0)
        prand = torch.cat([teacher.segment(xv, torch.randint(0, 1000, (xv.shape[0],), generator=g)).softmax(1)
                           for _ in range(4)])
    fg, fr = yv[:, 0] == 1, yv.repeat(4, 1, 1, 1)[:, 0] == 1
    for name, p, m in (("val t=500", pv, fg), ("random t", prand, fr)):
        print(f"{name}: p1 on lesion pixels, quantiles", torch.quantile(p[:, 1][m], QUANTILES).tolist())
        print(f"{name}: p1 on background, quantiles", torch.quantile(p[:, 1][~m], QUANTILES).tolist())
    w, b = probe.conv.weight.detach().flatten(1), probe.conv.bias.detach()
    slope = (w[1, 1] - w[0, 1]) - (w[1, 0] - w[0, 0])
    offset = (w[1, 0] - w[0, 0]) + b[1] - b[0]
    print(f"saved probe: foreground where p1 > {float(-offset / slope):.3f}")
    with torch.no_grad():
        print("saved probe val Dice (t=500):", float(_fg_dice(probe(pv).argmax(1, keepdim=True), yv, 2).nanmean()))
        for thr in (0.3, 0.4, 0.5, 0.6):
            print(f"  channel-1 >= {thr}: val Dice", float(_fg_dice((pv[:, 1:2] >= thr).long(), yv, 2).nanmean()))
    torch.manual_seed(0)
    fresh = ChannelProbe(2, 2)
    opt = torch.optim.Adam(fresh.parameters(), lr=0.01)
    loss_fn = HardTargetDiceLoss()
    with torch.no_grad():
        ptr = teacher.predict(xt)[0]
    for step in range(1, 401):
        opt.zero_grad()
        loss_fn(fresh(ptr), yt).backward()
        opt.step()
        if step in (50, 100, 200, 400):
            with torch.no_grad():
                dice = float(_fg_dice(fresh(pv).argmax(1, keepdim=True), yv, 2).nanmean())
            print(f"fresh probe, t=500 inputs, {step} steps: val Dice {dice}")


if __name__ == "__main__":
    main(sys.argv[1])

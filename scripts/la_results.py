#!/usr/bin/env python
"""LA additions to a runner results page: published numbers beside ours, and the 3D inference cost.

``scripts/run_experiments.py`` writes ``docs/results/<name>.md`` / ``.json`` for LA like for any dataset. This
script adds two sections to that page (after its one-line verdict; rerun it after every runner call, which rewrites
the page):

1. **Published numbers**: the Dice of ``DATA.md``'s table (UA-MT benchmark papers: full resolution, V-Net-sized
   networks, thousands of iterations, selection on the test set) beside this page's Dice at 4 / 8 / 16 labels,
   marked as a different setting.
2. **Inference cost in 3D**: seconds per volume on the first ``--cases`` real test volumes (after the bundle's
   preprocessing, i.e. on the resampled grid; network time only) of the trained models of one run of each kind:
   the diffusion model's deployable ``model.pt`` with one pass and with an ensemble of 4 draws through the
   profile's validation window (``eval_inferer``), and with the ``la_uamt`` window (``uamt_inferer``); the
   supervised UNet with both windows. Measured in this process with one thread (as the runs), written with the
   CPU model and the load average.

Example (after the runner call of ``docs/results/la_cpu.md``):
    python scripts/la_results.py docs/results/la_cpu.json --cases 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from custom_components.errors import UserError

#: DATA.md: published Dice (%) on the la_uamt protocol, test set of 20 ([V]: seen in the authors' released files)
PUBLISHED = {
    "V-Net, labelled only": {4: "52.55", 8: "82.74", 16: "86.96"},
    "UA-MT (MICCAI'19)": {4: "82.26", 8: "84.25 [V]", 16: "88.88 [V]"},
    "MC-Net+": {8: "88.96 [V]", 16: "91.07 [V]"},
    "SS-Net": {4: "86.33 [V]", 8: "88.55 [V]"},
    "BCP (CVPR'23)": {4: "88.02", 8: "89.62", 16: "91.26"},
    "AD-MT (ECCV'24)": {4: "89.63 [V]", 8: "90.58 [V]"},
    "V-Net, all 80 labelled": {80: "about 91.4"},
}
START, END = "<!-- la_results.py: start -->", "<!-- la_results.py: end -->"


class LAResultsError(UserError):
    """A results file or run folder this script needs is missing or malformed."""


def _load(path: Path) -> dict:
    if not path.is_file():
        raise LAResultsError(f"{path}: missing (run scripts/run_experiments.py first).")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LAResultsError(f"{path}: malformed JSON ({e}).") from e


def published_section(payload: dict, protocol: str) -> list[str]:
    """The published table with this page's Dice (mean ± std over the test cases of all seeds) beside it."""
    rows = payload["tables"].get(protocol) or []
    ours: dict[str, dict[int, str]] = {}
    for r in rows:
        n = (r.get("num_labeled") or [None])[0]
        if r["dice"]["mean"] is None or n is None:
            continue
        seeds = len(r["seeds"])
        cell = f"{100 * r['dice']['mean']:.2f} ± {100 * r['dice']['std']:.2f}"
        ours.setdefault(f"this page: {r['method']}", {})[int(n)] = cell + (f" ({seeds} seeds)" if seeds > 1 else "")
    cols = sorted({n for v in list(PUBLISHED.values()) + list(ours.values()) for n in v})
    lines = ["## Published numbers beside ours (a different setting)", "",
             "**Not comparable one to one.** The published numbers (from the team's `DATA.md`; [V] = seen in the "
             "authors' released logs or results files) are at the native 0.625 mm grid with 112x112x80 patches, "
             "V-Net-sized networks and thousands of iterations, and the literature selected its checkpoints on the "
             "test set. This page is the `la_cpu` setting: half resolution (1.25 mm), 56x56x40 patches, small "
             "networks, a few hundred iterations on 2 CPU cores, selection on a validation split carved from the "
             "80 training cases (so the 'all labelled' run has 72), scored on the native grid with the same "
             "`la_uamt` metrics. Dice (%) on the official 20 test cases:", "",
             "| method | " + " | ".join(f"{n} labelled" for n in cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, vals in list(PUBLISHED.items()) + list(ours.items()):
        lines.append(f"| {name} | " + " | ".join(vals.get(n, "-") for n in cols) + " |")
    return lines + [""]


def _run_configs(folder: Path, bundle: str) -> list[Path]:
    """The stacked configs of a runner phase folder (as the runner stacks them for 3D data)."""
    c = folder / bundle / "configs"
    profile = _load(folder / bundle / "runner_settings.json")["profile"]
    return [c / "train.json", c / "profile_3d.json", c / "profiles" / f"{profile}.json", c / "runner_overrides.json"]


def _timed(fn, repeats: int = 1) -> float:
    import torch

    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats


def inference_cost(repo: Path, payload: dict, num_cases: int, ratio: float, seed: int) -> dict:
    """Seconds per volume of the diffusion deployable (one pass, ensemble of 4, la_uamt window) and of the
    supervised UNet (both windows), on the first ``num_cases`` test volumes, one thread."""
    import numpy as np
    import torch
    from monai.bundle import ConfigParser
    from monai.data import load_decathlon_datalist

    torch.set_num_threads(1)
    runs = {r["base_method"]: r for r in payload["runs"] if float(r["ratio"]) == ratio and int(r["seed"]) == seed}
    out: dict = {"ratio": ratio, "seed": seed, "threads": 1, "cases": num_cases, "rows": []}
    load_before = os.getloadavg()
    fp32_preds: dict = {}
    for method, bundle in (("full", "cotrain"), ("supervised", "supervised")):
        if method not in runs:
            raise LAResultsError(f"no {method} run at ratio {ratio} seed {seed} in the results JSON.")
        folder = repo / runs[method]["folder"]
        parser = ConfigParser()
        parser.read_config([str(f) for f in _run_configs(folder, bundle)])
        parser["device"] = "$torch.device('cpu')"
        pre = parser.get_parsed_content("validate#preprocessing")
        cases = load_decathlon_datalist(parser.get_parsed_content("datalist"), True, "test")[:num_cases]
        vols = [torch.as_tensor(pre(dict(c))["image"]).float().unsqueeze(0) for c in cases]
        weights = torch.load(folder / bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
        windows = {"validation window": parser.get_parsed_content("eval_inferer"),
                   "la_uamt window": parser.get_parsed_content("uamt_inferer")}
        nets = {}
        if bundle == "cotrain":
            for draws in (1, 4):
                parser["deployable_def#num_draws"] = draws
                net = parser.get_parsed_content("deployable_def", instantiate=True, lazy=False)
                net.load_state_dict(weights)
                nets[f"diffusion deployable, {'one pass' if draws == 1 else 'ensemble of 4'}"] = net.eval()
        else:
            net = parser.get_parsed_content("network_def", instantiate=True)
            net.load_state_dict(weights)
            nets["supervised UNet"] = net.eval()
        for name, net in nets.items():
            for wname, inf in windows.items():
                if "ensemble" in name and wname == "la_uamt window":
                    continue
                for bf16 in (False, True) if wname == "la_uamt window" else (False,):
                    preds: list = []

                    def call(v, bf16=bf16, inf=inf, net=net, preds=preds):
                        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                            preds.append(inf(v, net).float().argmax(1))

                    secs = [_timed(lambda v=v: call(v)) for v in vols]
                    row = {"model": name, "window": wname + (", bf16 autocast" if bf16 else ""),
                           "window_desc": _describe(inf), "seconds_per_volume": float(np.mean(secs)),
                           "std": float(np.std(secs)), "volumes": [list(v.shape[2:]) for v in vols]}
                    if bf16:  # agreement of the bf16 argmax with the fp32 one, voxels of the same volumes
                        ref = fp32_preds[(name, wname)]
                        row["voxel_agreement_with_fp32"] = float(np.mean([(a == b).float().mean().item()
                                                                          for a, b in zip(preds, ref)]))
                    else:
                        fp32_preds[(name, wname)] = preds
                    out["rows"].append(row)
                    print(f"[la_results] {name}, {row['window']}: {np.mean(secs):.2f} s per volume", flush=True)
    out["load_average_before"] = [round(x, 2) for x in load_before]
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def _describe(inf) -> str:
    if hasattr(inf, "strides"):
        return f"{'x'.join(map(str, inf.roi_size))}, strides {'/'.join(map(str, inf.strides))}"
    return f"{'x'.join(map(str, inf.roi_size))}, overlap {inf.overlap}"


def cost_section(cost: dict, cpu: str) -> list[str]:
    ref = next((r["seconds_per_volume"] for r in cost["rows"] if r["model"] == "supervised UNet"
                and r["window"] == "la_uamt window"), None)
    lines = ["## Inference cost in 3D", "",
             f"Seconds per volume (network time on the 1.25 mm grid, after loading and resampling; mean over the first "
             f"{cost['cases']} official test volumes, sizes {cost['rows'][0]['volumes']}), trained models of the "
             f"r{cost['ratio']:g} seed-{cost['seed']} runs, one thread, {cpu}; load average before / after "
             f"{cost['load_average_before']} / {cost['load_average_after']} (a shared machine: compare the rows, "
             "measured side by side, rather than the absolute seconds). `scripts/la_results.py`."
             + (f" {cost['note']}" if cost.get("note") else ""), "",
             "The test evaluation of this page ran in fp32 (the `evaluate.json` default); the bf16 rows measure what "
             "autocast would save (not a default: MONAI's evaluators autocast on CUDA only).", "",
             "| model | window | s / volume | vs supervised UNet, la_uamt window |", "|---|---|---:|---:|"]
    for r in cost["rows"]:
        rel = f"{r['seconds_per_volume'] / ref:.1f}x" if ref else "-"
        agree = (f"; argmax agrees with fp32 on {100 * r['voxel_agreement_with_fp32']:.2f} % of the voxels"
                 if "voxel_agreement_with_fp32" in r else "")
        lines.append(f"| {r['model']} | {r['window']} ({r['window_desc']}{agree}) | {r['seconds_per_volume']:.2f} ± "
                     f"{r['std']:.2f} | {rel} |")
    return lines + [""]


def insert_sections(md_path: Path, sections: Sequence[str]) -> None:
    """Put ``sections`` after the page's one-line verdict (before ``## Command``), replacing an earlier insert."""
    text = md_path.read_text()
    if START in text:
        a, b = text.index(START), text.index(END) + len(END)
        text = text[:a].rstrip("\n") + "\n\n" + text[b:].lstrip("\n")
    block = "\n".join([START, *sections, END, ""])
    at = text.find("## Command")
    text = text[:at] + block + "\n" + text[at:] if at >= 0 else text.rstrip("\n") + "\n\n" + block
    md_path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results_json", help="the runner's docs/results/<name>.json (the .md beside it is updated)")
    ap.add_argument("--protocol", default="la_uamt")
    ap.add_argument("--cases", type=int, default=5, help="test volumes timed (0: skip the inference cost)")
    ap.add_argument("--ratio", type=float, default=0.1, help="the runs whose models are timed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runner-log", default=None,
                    help="the console log of the runner call that trained and evaluated everything: its total wall "
                         "time goes on the page (a later call that only rewrites the page reports its own)")
    a = ap.parse_args(argv)
    from custom_components.experiments.environment import REPO_ROOT, environment_info, relative_path

    js = Path(a.results_json)
    payload = _load(js)
    md = js.with_suffix(".md")
    if not md.is_file():
        raise LAResultsError(f"{md}: missing beside {js}.")
    sections = published_section(payload, a.protocol)
    wall, source = None, "(its command is under 'Command')."
    if a.runner_log:
        import re

        log = Path(a.runner_log)
        m = re.search(r"total wall time (\d+) s", log.read_text()) if log.is_file() else None
        if m is None:
            raise LAResultsError(f"{log}: no 'total wall time' line (not a finished runner call's log).")
        wall = float(m.group(1))
        source = (f"(its console log: `{relative_path(log)}`); the page itself was then rewritten by a second call "
                  "that found everything done.")
    elif (payload.get("settings") or {}).get("wall time of this call (s)", 0) > 60:  # a call that trained
        wall = payload["settings"]["wall time of this call (s)"]
    if wall is not None:
        sections += ["## Wall time", "",
                     f"The runner call that trained and evaluated every run of this page took **{wall:.0f} s** "
                     f"({wall / 60:.0f} min) on the hardware below {source}", ""]
    cost_json = js.with_name(js.stem + "_inference_cost.json")
    if a.cases > 0:
        cost = inference_cost(REPO_ROOT, payload, a.cases, a.ratio, a.seed)
        cost["cpu"] = environment_info().get("device", "?")
        cost_json.write_text(json.dumps(cost, indent=2))
    if cost_json.is_file():
        cost = json.loads(cost_json.read_text())
        sections += cost_section(cost, cost.get("cpu", "?"))
    insert_sections(md, sections)
    print(f"[la_results] updated {md}" + (f" and {cost_json}" if a.cases > 0 else ""), flush=True)
    return 0


if __name__ == "__main__":
    from custom_components.errors import run_cli

    sys.exit(run_cli(main))

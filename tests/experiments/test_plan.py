"""``custom_components.experiments.plan``: the plan from synthetic fingerprints (resolution, patches, budget) and the
fingerprint of a small prepared dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from custom_components.experiments import plan as pl

CPU = {"cores": 2, "gpu": None, "gpu_memory_gb": None}
GPU = {"cores": 16, "gpu": "H100", "gpu_memory_gb": 80.0}


def _fp(size, width, dims=2, n_lab=4, n_unl=16):
    return {"spatial_dims": dims, "in_channels": 3, "num_classes": 2, "num_labeled": n_lab, "num_unlabeled": n_unl,
            "median_size": list(size), "median_spacing": [1.0] * dims, "structure_width_px": {"1": width}}


def test_structure_width_of_lines_and_blobs():
    m = np.zeros((64, 64), bool)
    m[10:12, 5:60] = True  # a 2-px line
    assert pl.structure_width(m) == pytest.approx(2.0)
    m[30:35, 5:60] = True  # and a 5-px line: the median ridge radius of both
    assert 2.0 <= pl.structure_width(m) <= 6.0
    yy, xx = np.mgrid[:200, :200]
    blob = (yy - 100) ** 2 + (xx - 100) ** 2 < 40 ** 2
    assert pl.structure_width(blob) > 60  # the inscribed radius on the ridge
    assert pl.structure_width(np.zeros((8, 8))) is None


@pytest.mark.parametrize("mach", [CPU, GPU])
def test_thin_structure_is_never_shrunk_below_three_pixels(mach):
    """2-px vessels in a 512x512 image: native resolution (never upsampled), patches + sliding window."""
    p = pl.make_plan(_fp((512, 512), 2.0), mach, 1800)
    r = p["resolution"]
    assert r["downscale"] == 1.0 and r["working_size"] == [512, 512]
    assert ("would fall under" if mach is CPU else "already fits") in r["reason"]
    assert r["thinnest_at_working_px"] >= 2.0  # unchanged: 2 px stays 2 px (no upsampling)
    if mach is CPU:  # 512 > the 256-px CPU limit
        assert p["patch"]["inference"] == "sliding_window" and p["patch"]["roi_size"] == [128, 128]
    six = pl.make_plan(_fp((1024, 1024), 6.0), mach, 1800)["resolution"]  # 6 px: shrunk by at most 2
    assert six["downscale"] <= 2.0 and six["thinnest_at_working_px"] >= pl.MIN_WIDTH_PX


def test_large_image_gets_patches_and_a_sliding_window():
    p = pl.make_plan(_fp((2048, 2048), 4.5), GPU, 3600)
    assert p["resolution"]["working_size"] == [1366, 1366]  # shrunk x1.5: 4.5 px -> 3 px
    assert p["patch"]["inference"] == "sliding_window" and p["patch"]["roi_size"] == [256, 256]
    assert "sliding window" in p["patch"]["reason"]
    vol = pl.make_plan(_fp((300, 300, 200), 3.0, dims=3), CPU, 3600)
    assert vol["patch"]["inference"] == "sliding_window" and vol["patch"]["roi_size"] == [64, 64, 64]


def test_compact_blob_in_a_large_image_is_shrunk_whole():
    p = pl.make_plan(_fp((1024, 1024), 200.0), CPU, 1800)
    assert p["resolution"]["downscale"] == pytest.approx(4.0) and p["resolution"]["working_size"] == [256, 256]
    assert p["patch"]["inference"] == "whole" and p["patch"]["roi_size"] == [256, 256]
    assert "to fit 256 px" in p["resolution"]["reason"]
    small = pl.make_plan(_fp((100, 90), 50.0), CPU, 1800)  # small images are never upsampled
    assert small["resolution"]["downscale"] == 1.0 and small["patch"]["roi_size"] == [112, 96]


def test_iterations_scale_with_the_budget_are_shared_and_capped():
    fp = _fp((256, 256), 40.0)
    one, two = (pl.make_plan(fp, CPU, t)["iterations"] for t in (4 * 3600, 8 * 3600))
    assert one["value"] > 100
    assert two["value"] == pytest.approx(2 * one["value"], rel=0.02)
    b = one["budgets"]
    assert b["supervised"]["iterations"] == b["cotrain"]["iterations"] == one["value"]  # same for every method
    assert pl.make_plan(fp, GPU, 10 ** 9)["iterations"]["value"] == pl.MAX_ITERATIONS
    assert "capped" in pl.make_plan(fp, GPU, 10 ** 9)["iterations"]["reason"]
    # the cost model is in the plan, and more runs (folds) or methods mean fewer iterations each
    p = pl.make_plan(fp, CPU, 4 * 3600)
    assert p["runs_per_method"] == 4 and p["cost_model"]["seconds_per_iteration"] > 0
    assert pl.make_plan(fp, CPU, 4 * 3600, runs=1)["iterations"]["value"] > p["iterations"]["value"]
    assert pl.make_plan(fp, CPU, 4 * 3600, methods=["supervised"])["iterations"]["value"] > p["iterations"]["value"]
    assert "at the minimum" in pl.make_plan(fp, CPU, 60)["iterations"]["reason"]
    for key in ("resolution", "patch", "batch_size", "channels", "iterations"):
        assert p[key]["reason"]


def test_parse_duration():
    assert pl.parse_duration("30m") == 1800 and pl.parse_duration("1h30m") == 5400 and pl.parse_duration("90") == 90
    with pytest.raises(ValueError, match="30m"):
        pl.parse_duration("soon")


def test_fingerprint_and_script_on_a_prepared_folder(tmp_path, capsys):
    from script_loader import load_script

    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    cases, pool = [], []
    for i in range(3):
        img = np.full((120, 160, 3), 40 + i, np.uint8)
        lab = np.zeros((120, 160), np.uint8)
        lab[20:22, 10:150] = 1  # a 2-px vessel
        Image.fromarray(img).save(tmp_path / "imagesTr" / f"c{i}.png")
        Image.fromarray(lab).save(tmp_path / "labelsTr" / f"c{i}.png")
        cases.append({"image": f"imagesTr/c{i}.png", "label": f"labelsTr/c{i}.png"})
        Image.fromarray(img).save(tmp_path / "imagesTr" / f"u{i}.png")
        pool.append({"image": f"imagesTr/u{i}.png"})
    (tmp_path / "datalist.json").write_text(json.dumps({"num_classes": 2, "cases": cases, "unlabeled": pool}))
    fp = pl.fingerprint(tmp_path / "datalist.json")
    assert fp["num_labeled"] == 3 and fp["num_unlabeled"] == 3 and fp["in_channels"] == 3
    assert sorted(fp["median_size"]) == [120, 160] and fp["structure_width_px"]["1"] == pytest.approx(2.0)
    assert fp["class_fraction"]["1"] == pytest.approx(2 * 140 / (120 * 160))
    assert load_script("plan_dataset").main([str(tmp_path), "--time-budget", "10m"]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["resolution"]["downscale"] == 1.0 and plan["runs_per_method"] == 3
    assert "resolution: native resolution" in capsys.readouterr().out

"""3D on a reduced grid: ``target_spacing`` resampling and its inversion, and the ``la_cpu`` profile end to end.

The 3D profile resamples image and label to ``target_spacing`` (``Spacingd``, deterministic, so ``CacheDataset``
caches it); ``evaluate.json`` inverts the prediction to the native grid (``Invertd``) and scores it against the
untouched native label. Everything here runs on tiny synthetic NIfTI volumes in seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import ResampleToMatch

from custom_components.inferers import UAMTSlidingWindowInferer
from custom_components.metrics import compute_case_metrics

from .conftest import config_paths

BUNDLE = "cotrain"
TINY = {"channels": [4, 8], "norm_num_groups": 4, "num_workers": 0, "check_datalist_files": False}


def _eval_parser(data: Path, target_spacing) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_paths(BUNDLE, ["train", "profile_3d", "evaluate"]))
    parser.update({"dataset_dir": str(data), "datalist": str(data / "datalist.json"), "target_spacing": target_spacing,
                   "threshold": 0.5, "device": "$torch.device('cpu')", **TINY})
    return parser


def _one_hot(label: torch.Tensor) -> torch.Tensor:
    return torch.cat([label == 0, label == 1]).float()


def _native_metrics(parser: ConfigParser, item: dict) -> tuple[dict, tuple, tuple, torch.Tensor]:
    """A prediction equal to the (resampled) label, through evaluate.json's pre- and post-processing."""
    pre = parser.get_parsed_content("validate#preprocessing")
    post = parser.get_parsed_content("validate#postprocessing")
    d = pre(dict(item))
    grid = tuple(d["image"].shape[1:])
    pred = MetaTensor(_one_hot(d["label"].as_tensor()), affine=d["image"].affine)  # a perfect prediction on the grid
    d["pred"] = pred
    reduced = pred.clone()
    out = post(d)
    p, lab = out["pred"].argmax(0).numpy(), out["label_eval"].argmax(0).numpy()
    return compute_case_metrics(p, lab, 2, "la_uamt", case_id="c"), grid, p.shape, reduced


def test_reduced_grid_is_scored_on_the_native_grid_as_a_resampled_native_prediction(tiny_dataset_3d):
    data = tiny_dataset_3d(num_cases=4, size=(24, 20, 16))
    item = json.loads((data / "datalist.json").read_text())["test"][0]
    item = {k: str(data / v) for k, v in item.items() if k in ("image", "label")}
    native = _eval_parser(data, None)
    row_native, grid_native, shape_native, _ = _native_metrics(native, item)
    assert grid_native == shape_native == (24, 20, 16)
    assert row_native["dice_class1"] == pytest.approx(1.0)  # no resampling: the label itself

    row, grid, shape, reduced = _native_metrics(_eval_parser(data, [2.0, 2.0, 2.0]), item)
    assert grid == (12, 10, 8)  # trained and predicted on the 2 mm grid ...
    assert shape == (24, 20, 16)  # ... scored on the native 1 mm grid against the native label
    # the reference: the native label (a perfect native-resolution prediction) taken to 2 mm the same way
    # (nearest), brought back to the native grid by a different MONAI path (ResampleToMatch instead of Invertd)
    lab = native.get_parsed_content("load_transforms#0")(dict(item))["label"]
    back = ResampleToMatch(mode="bilinear")(reduced, img_dst=lab)
    ref_pred = (back[1] >= 0.5).numpy().astype(np.uint8)
    ref = compute_case_metrics(ref_pred, lab[0].numpy().astype(np.uint8), 2, "la_uamt", case_id="c")
    for k in ("dice_class1", "jaccard_class1", "hd95_class1", "asd_class1"):
        assert row[k] == pytest.approx(ref[k], abs=1e-6), k
    assert 0.5 < row["dice_class1"] < 1.0  # the 2 mm round trip loses detail: the metrics see it


def test_la_cpu_profile_runs_end_to_end_with_the_uamt_window(tiny_dataset_3d, tmp_path):
    """Phase 1 -> co-training (R = 1) -> la_uamt evaluation, stacked as the runner does: train.json,
    profile_3d.json, profiles/la_cpu.json, then tiny sizes; resampled to 2 mm and scored on the native grid."""
    from monai.bundle import ConfigWorkflow

    data = tiny_dataset_3d(num_cases=6, size=(24, 20, 16))
    tiny = {**TINY, "dataset_dir": str(data), "datalist": str(data / "datalist.json"), "target_spacing": [2, 2, 2],
            "roi_size": [8, 8, 8], "max_epochs": 1, "val_interval": 1, "val_batch_size": 1,
            "batch_size": 1, "warmup_epochs": 1}
    stack = ["train", "profile_3d", "profiles/la_cpu"]
    p1 = tmp_path / "teacher_pretrain"
    wf = ConfigWorkflow(config_file=config_paths("teacher_pretrain", stack), workflow_type="train",
                        **{**tiny, "ckpt_dir": str(p1 / "models"), "output_dir": str(p1 / "eval")})
    wf.initialize()
    wf.run()
    wf.finalize()
    teacher = p1 / "models" / "teacher.pt"
    assert teacher.is_file()
    p2 = tmp_path / "cotrain"
    common = {**tiny, "ckpt_dir": str(p2 / "models"), "teacher_ckpt": str(teacher), "rounds": 1, "epoch_length": 2,
              "uamt_roi_size": [8, 8, 8], "uamt_strides": [4, 4, 2]}
    wf = ConfigWorkflow(config_file=config_paths(BUNDLE, stack), workflow_type="train",
                        **{**common, "output_dir": str(p2 / "eval")})
    wf.initialize()
    assert wf.parser.get_parsed_content("network").spatial_dims == 3
    wf.run()
    wf.finalize()
    ev = ConfigWorkflow(config_file=config_paths(BUNDLE, ["train", "profile_3d", "evaluate", "profiles/la_cpu"]),
                        workflow_type="eval", **{**common, "output_dir": str(p2 / "eval" / "test"),
                                                 "eval_protocol": "la_uamt", "eval_inferer": "@uamt_inferer",
                                                 "threshold_source": "validation"})
    ev.initialize()
    inferer = ev.parser.get_parsed_content("validate#inferer")
    assert isinstance(inferer, UAMTSlidingWindowInferer) and inferer.strides == (4, 4, 2)
    ev.run()
    ev.finalize()
    # the threshold was chosen again on the validation split under the UA-MT window, and that one was applied
    cal = json.loads((p2 / "eval" / "test" / "threshold_calibration.json").read_text())
    assert cal["inferer"] == "UAMTSlidingWindowInferer" and cal["split"] == "validation"
    assert cal["num_cases"] == len(json.loads((data / "datalist.json").read_text())["validation"])
    applied = ev.parser.get_parsed_content("validate#postprocessing#transforms#2#threshold")
    assert applied == pytest.approx(cal["threshold"])
    with open(p2 / "eval" / "test" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(json.loads((data / "datalist.json").read_text())["test"])
    assert all(r["protocol"] == "la_uamt" and r["distance_unit"] == "voxel" for r in rows)
    assert all(0.0 <= float(r["dice_class1"]) <= 1.0 for r in rows)
    # scored against the native label: its foreground voxel count on the 1 mm grid, not the 2 mm grid's
    import nibabel as nib

    test = json.loads((data / "datalist.json").read_text())["test"]
    native = sorted(int((np.asarray(nib.load(str(data / c["label"])).dataobj) > 0).sum()) for c in test)
    assert sorted(int(r["ref_class1"]) for r in rows) == native

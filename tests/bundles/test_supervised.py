"""End-to-end tests of bundles/supervised: train (2D, 3D profile), resume, evaluate, inference, metadata,
bundle_root."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

BUNDLE = "supervised"
ROOT = Path(__file__).resolve().parents[2] / "bundles" / BUNDLE
TINY_UNET = {
    "network_def#channels": [4, 8, 16],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 0,
    "num_workers": 0,
    "check_datalist_files": False,
}


@pytest.fixture
def make_workflow(make_bundle_workflow):
    return make_bundle_workflow


@pytest.fixture
def save_fresh_weights(fresh_weights):
    return fresh_weights


def _train_overrides(dataset: Path, out: Path, **extra) -> dict:
    return {
        **TINY_UNET,
        "dataset_dir": str(dataset),
        "output_dir": str(out / "eval"),
        "ckpt_dir": str(out / "models"),
        "max_epochs": 1,
        "val_interval": 1,
        "batch_size": 2,
        **extra,
    }


def _load_weights(path: Path) -> dict:
    weights = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(weights, dict) and all(isinstance(v, torch.Tensor) for v in weights.values())
    assert not any(k.startswith("module.") for k in weights)
    return weights


def test_train_2d_writes_best_model_and_state(tiny_dataset_2d, tmp_path, run_bundle):
    data = tiny_dataset_2d(num_cases=6, size=24)
    wf = run_bundle(BUNDLE, ["train"], "train", **_train_overrides(data, tmp_path, roi_size=[16, 16]))
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1
    weights = _load_weights(tmp_path / "models" / "model.pt")
    net = wf.parser.get_parsed_content("network_def")
    net.load_state_dict(weights)  # the plain state dict of one network
    assert (tmp_path / "models" / "train_state.pt").is_file()
    selection = json.loads((tmp_path / "models" / "model_selection.json").read_text())
    # the same validation threshold sweep as the method (METHOD.md, model selection), with its curve
    assert selection["network"] == "supervised" and 0.0 < selection["threshold"] < 1.0
    assert len(selection["curve"]["thresholds"]) == len(selection["curve"]["dice"]) == 49
    assert any((tmp_path / "eval" / "tensorboard").iterdir())


def test_train_3d_profile(tiny_dataset_3d, tmp_path, run_bundle):
    data = tiny_dataset_3d(num_cases=6, size=16)
    overrides = _train_overrides(data, tmp_path, roi_size=[16, 16, 16], batch_size=1, num_samples=1)
    wf = run_bundle(BUNDLE, ["train", "profile_3d"], "train", **overrides)
    assert wf.parser.get_parsed_content("network_def").dimensions == 3
    assert type(wf.parser.get_parsed_content("validate#inferer")).__name__ == "SlidingWindowInferer"
    weights = _load_weights(tmp_path / "models" / "model.pt")
    assert any(v.ndim == 5 for v in weights.values()), "3D convolutions expected"


def test_resume_continues_to_new_max_epochs(tiny_dataset_2d, tmp_path, run_bundle):
    data = tiny_dataset_2d(num_cases=6, size=16)
    overrides = _train_overrides(data, tmp_path, roi_size=[16, 16])
    first = run_bundle(BUNDLE, ["train"], "train", **overrides)
    iters_per_epoch = first.parser.get_parsed_content("train#trainer").state.iteration
    best_first = json.loads((tmp_path / "models" / "model_selection.json").read_text())

    second = run_bundle(BUNDLE, ["train"], "train", **{**overrides, "max_epochs": 2})
    trainer = second.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2 and trainer.state.max_epochs == 2
    assert trainer.state.iteration == 2 * iters_per_epoch, "the resumed run must train exactly one more epoch"
    saver = second.parser.get_parsed_content("validate#model_saver")
    assert saver.best_dice >= best_first["dice"]
    _load_weights(tmp_path / "models" / "model.pt")
    assert (tmp_path / "models" / "train_state.pt.prev").is_file()


@pytest.mark.parametrize("profile", [None, "profile_3d"])
def test_evaluate_writes_per_case_metrics(profile, tiny_dataset_2d, tiny_dataset_3d, tmp_path, make_workflow,
                                          save_fresh_weights):
    if profile is None:  # non-square native size, different from roi_size: predictions must be inverted
        data, roi = tiny_dataset_2d(num_cases=8, size=(20, 28)), [16, 16]
    else:
        data, roi = tiny_dataset_3d(num_cases=8, size=(16, 20, 12)), [16, 16, 16]
    names = ["train", "evaluate"] + ([profile] if profile else [])
    wf = make_workflow(BUNDLE, names, "eval", **_train_overrides(data, tmp_path, roi_size=roi))
    save_fresh_weights(wf, tmp_path / "models" / "model.pt")  # before initialize, which checks the weights
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    test_cases = json.loads((data / "datalist.json").read_text())["test"]
    with open(tmp_path / "eval" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(test_cases) == 2
    assert {r["case"] for r in rows} == {Path(c["image"]).name.split(".")[0] for c in test_cases}
    assert all(0.0 <= float(r["dice_class1"]) <= 1.0 for r in rows)
    assert (tmp_path / "eval" / "metrics.json").is_file()
    assert not (tmp_path / "models" / "train_state.pt").exists(), "evaluation must not write training state"


def test_evaluate_stacked_config_passes_train_properties_too(tiny_dataset_2d, tmp_path, make_workflow,
                                                             save_fresh_weights):
    data = tiny_dataset_2d(num_cases=4, size=16)
    wf = make_workflow(BUNDLE, ["train", "evaluate"], "train", **_train_overrides(data, tmp_path, roi_size=[16, 16]))
    save_fresh_weights(wf, tmp_path / "models" / "model.pt")  # evaluate.json checks the weights in initialize
    wf.initialize()
    assert wf.check_properties() == []


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_inference_folder_writes_one_mask_per_input(spatial_dims, tiny_dataset_2d, tiny_dataset_3d, tmp_path,
                                                    run_bundle, make_workflow, save_fresh_weights):
    if spatial_dims == 2:
        data = tiny_dataset_2d(num_cases=4, size=(20, 28), in_channels=3)
        names, roi, ext = ["inference"], [16, 16], ".png"
    else:
        data = tiny_dataset_3d(num_cases=4, size=(16, 20, 12), spacing=(0.625, 0.625, 1.25))
        names, roi, ext = ["inference", "profile_3d"], [16, 16, 16], ".nii.gz"
    overrides = {
        **TINY_UNET,
        "input_dir": str(data / "imagesTr"),
        "output_dir": str(tmp_path / "pred"),
        "ckpt_dir": str(tmp_path / "models"),
        "roi_size": roi,
    }
    overrides.pop("check_datalist_files")
    wf = make_workflow(BUNDLE, names, "inference", **overrides)
    save_fresh_weights(wf, tmp_path / "models" / "model.pt")  # before initialize, which checks the weights
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    inputs = sorted((data / "imagesTr").glob("*" + ext))
    outputs = sorted((tmp_path / "pred").glob("*" + ext))
    assert len(outputs) == len(inputs) == 4
    for src in inputs:
        out = tmp_path / "pred" / src.name.replace(ext, "_seg" + ext)
        if spatial_dims == 2:
            mask, image = np.asarray(Image.open(out)), np.asarray(Image.open(src))
            assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
            assert set(np.unique(mask)) <= {0, 1}
        else:
            mask, image = nib.load(str(out)), nib.load(str(src))
            assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
            assert mask.get_data_dtype() == np.uint8


def test_inference_on_datalist_key(tiny_dataset_2d, tmp_path, run_bundle, make_workflow, save_fresh_weights):
    data = tiny_dataset_2d(num_cases=8, size=16)
    overrides = {**TINY_UNET, "dataset_dir": str(data), "infer_key": "validation", "output_dir": str(tmp_path / "pred"),
                 "ckpt_dir": str(tmp_path / "models"), "roi_size": [16, 16]}
    overrides.pop("check_datalist_files")
    wf = make_workflow(BUNDLE, ["inference"], "inference", **overrides)
    save_fresh_weights(wf, tmp_path / "models" / "model.pt")  # before initialize, which checks the weights
    wf.initialize()
    wf.run()
    n_val = len(json.loads((data / "datalist.json").read_text())["validation"])
    assert len(list((tmp_path / "pred").glob("*_seg.png"))) == n_val == 2


def test_train_rejects_invalid_datalist(tiny_dataset_2d, tmp_path, make_workflow):
    data = tiny_dataset_2d(num_cases=6, size=16)
    datalist = json.loads((data / "datalist.json").read_text())
    datalist["labeled"] = []
    (data / "datalist.json").write_text(json.dumps(datalist))
    wf = make_workflow(BUNDLE, ["train"], "train", **_train_overrides(data, tmp_path))
    with pytest.raises(RuntimeError, match="validate_datalist") as err:
        wf.initialize()
    cause = err.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert type(cause).__name__ == "DatalistError"
    assert str(data / "datalist.json") in str(cause) and "labeled" in str(cause)


def test_bundle_root_is_derived_from_config_location(tmp_path, monkeypatch, make_workflow):
    monkeypatch.chdir(tmp_path)  # any working directory
    for names, wt in ((["train"], "train"), (["inference"], "inference"), (["train", "evaluate"], "eval")):
        wf = make_workflow(BUNDLE, names, wt, initialize=[])
        wf.initialize()
        assert Path(wf.bundle_root) == ROOT.resolve()
        assert wf.parser.get_parsed_content("ckpt_dir") == str(ROOT.resolve() / "models")
    wf = make_workflow(BUNDLE, ["train"], "train", initialize=[], bundle_root=str(tmp_path / "elsewhere"))
    wf.initialize()
    assert wf.parser.get_parsed_content("ckpt_dir") == str(tmp_path / "elsewhere" / "models"), "override must win"


def test_metadata_is_valid_and_matches_2d_config():
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    schema_path = Path(__file__).resolve().parents[2] / "custom_components" / "bundle_tools" / "schema"
    jsonschema.validate(meta, json.loads((schema_path / "metadata.schema.json").read_text()))
    assert meta["version"] in meta["changelog"]
    train = json.loads((ROOT / "configs" / "train.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert len(image["spatial_shape"]) == train["spatial_dims"] == 2
    assert image["num_channels"] == train["in_channels"] and pred["num_channels"] == train["num_classes"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]

"""End-to-end tests of bundles/teacher_pretrain (phase 1): train 2D, train 3D profile, roi check, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from custom_components.bundle_tools.verify import validate_metadata
from custom_components.errors import CheckpointError
from custom_components.networks import DiffusionTeacher, load_teacher_weights

BUNDLE = "teacher_pretrain"
ROOT = Path(__file__).resolve().parents[2] / "bundles" / BUNDLE
#: a tiny two-level DiffusionTeacher, single-process data loading
TINY = {"channels": [8, 16], "norm_num_groups": 4, "num_workers": 0}


def _overrides(dataset: Path, out: Path, roi: list[int], **extra) -> dict:
    return {
        **TINY,
        "dataset_dir": str(dataset),
        "output_dir": str(out / "eval"),
        "ckpt_dir": str(out / "models"),
        "roi_size": roi,
        "batch_size": 2,
        "max_epochs": 1,
        "val_interval": 1,
        **extra,
    }


def _check_teacher_file(path: Path, spatial_dims: int, in_channels: int, trained: torch.nn.Module,
                        backbone: str = "diffusion_unet") -> None:
    """teacher.pt: a plain state dict (weights_only), loadable into a fresh teacher, equal to the trained one."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert any(k.startswith("mask_net.") for k in state) and any(k.startswith("image_net.") for k in state)
    assert any(v.ndim == spatial_dims + 2 for v in state.values()), f"{spatial_dims}D convolutions expected"
    fresh = DiffusionTeacher(spatial_dims, in_channels, 2, channels=[8, 16], norm_num_groups=4, backbone=backbone)
    load_teacher_weights(fresh, path)
    for k, v in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v.cpu()), f"{k} differs from the trained teacher"


def test_train_2d_writes_teacher_checkpoint(tiny_dataset_2d, tmp_path, run_bundle):
    data = tiny_dataset_2d(num_cases=6, size=24)
    wf = run_bundle(BUNDLE, ["train"], "train", **_overrides(data, tmp_path, [16, 16]))
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1
    out = trainer.state.output
    assert {"loss", "loss_cyc", "loss_probe", "frac_class0", "frac_class1"} <= set(out)
    assert torch.isfinite(out["loss"])
    # every training image (labelled + unlabelled) is used by phase 1
    datalist = json.loads((data / "datalist.json").read_text())
    assert len(wf.parser.get_parsed_content("train#dataset")) == len(datalist["labeled"]) + len(datalist["unlabeled"])
    metrics = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    assert {"val_probe_dice", "val_best_assignment_dice", "val_frac_class0", "val_rec_mse"} <= set(metrics)
    _check_teacher_file(tmp_path / "models" / "teacher.pt", 2, 3, wf.parser.get_parsed_content("network"))
    assert (tmp_path / "models" / "train_state.pt").is_file()


def test_train_3d_profile_with_the_fast_backbone(tiny_dataset_3d, tmp_path, run_bundle):
    """Issue 27: ``backbone: fast`` is one id for both pathways; phase 1 trains and writes its teacher.pt."""
    from custom_components.networks import TimeConditionedUNet

    data = tiny_dataset_3d(num_cases=6, size=(16, 20, 12))
    wf = run_bundle(BUNDLE, ["train", "profile_3d"], "train", **_overrides(data, tmp_path, [16, 16, 16]),
                    backbone="fast")
    net = wf.parser.get_parsed_content("network")
    assert isinstance(net.mask_net, TimeConditionedUNet) and isinstance(net.image_net, TimeConditionedUNet)
    assert torch.isfinite(wf.parser.get_parsed_content("train#trainer").state.output["loss"])
    _check_teacher_file(tmp_path / "models" / "teacher.pt", 3, 1, net, backbone="fast")
    with pytest.raises(CheckpointError, match="backbone=diffusion_unet"):  # the other backbone is named
        _check_teacher_file(tmp_path / "models" / "teacher.pt", 3, 1, net)


def test_train_3d_profile(tiny_dataset_3d, tmp_path, run_bundle):
    # non-cubic volumes, one side smaller than roi_size: padding + random crop (train), center pad/crop (validation)
    data = tiny_dataset_3d(num_cases=6, size=(16, 20, 12))
    wf = run_bundle(BUNDLE, ["train", "profile_3d"], "train", **_overrides(data, tmp_path, [16, 16, 16]))
    net = wf.parser.get_parsed_content("network")
    assert net.spatial_dims == 3 and net.in_channels == 1
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 1
    _check_teacher_file(tmp_path / "models" / "teacher.pt", 3, 1, net)


def test_roi_size_not_divisible_is_rejected(tiny_dataset_2d, tmp_path, make_bundle_workflow):
    data = tiny_dataset_2d(num_cases=4, size=16)
    wf = make_bundle_workflow(BUNDLE, ["train"], "train", **_overrides(data, tmp_path, [18, 18], channels=[8, 16, 32]))
    with pytest.raises(RuntimeError) as err:
        wf.initialize()
    cause = err.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert "roi_size" in str(cause) and "multiple of 4" in str(cause)


def test_metadata_is_valid_and_matches_2d_config():
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    assert validate_metadata(meta) == []
    assert meta["version"] in meta["changelog"]
    train = json.loads((ROOT / "configs" / "train.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert len(image["spatial_shape"]) == len(pred["spatial_shape"]) == train["spatial_dims"] == 2
    assert image["num_channels"] == train["in_channels"] and pred["num_channels"] == train["num_classes"]
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert (ROOT / "configs" / "logging.conf").is_file() and (ROOT / "docs" / "README.md").is_file()

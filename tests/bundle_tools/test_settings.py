"""record_trained_settings: a training run's settings land in its bundle folder's configs and metadata.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from custom_components.bundle_tools.settings import record_trained_settings
from custom_components.bundle_tools.verify import validate_metadata

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
SETTINGS = {"spatial_dims": 2, "in_channels": 1, "num_classes": 3, "roi_size": (32, 32), "channels": (8, 16),
            "num_res_blocks": 1, "norm_num_groups": 4, "num_train_timesteps": 1000, "noise_schedule": "linear_beta",
            "schedule_args": {"beta_start": 1e-4, "beta_end": 0.02}, "infer_timestep": 300, "seed": 5}


@pytest.fixture
def cotrain(tmp_path) -> Path:
    dest = tmp_path / "cotrain"
    shutil.copytree(BUNDLES / "cotrain", dest, ignore=shutil.ignore_patterns("models", "eval"))
    return dest


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_settings_reach_every_config_and_the_metadata(cotrain):
    written = record_trained_settings(cotrain / "models", SETTINGS, None, {"0": "bg", "1": "a", "2": "b"})
    assert sorted(written) == ["inference.json", "metadata.json", "train.json"]
    infer = _load(cotrain / "configs" / "inference.json")
    assert infer["in_channels"] == 1 and infer["channels"] == [8, 16] and infer["schedule_args"]["beta_end"] == 0.02
    assert infer["infer_timestep"] == 300 and infer["seed"] == 5 and infer["dataset_dir"] != "anything"
    parser = ConfigParser()
    parser.read_config(str(cotrain / "configs" / "inference.json"))
    parser["bundle_root"] = str(cotrain)
    net = parser.get_parsed_content("network_def")  # the trained network, with no override
    assert (net.in_channels, net.num_classes, net.num_levels, net.timestep) == (1, 3, 2, 300)
    assert float(net.scheduler.betas[-1]) == pytest.approx(0.02)
    meta = _load(cotrain / "configs" / "metadata.json")
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert (image["num_channels"] == 1 and image["channel_def"] == {"0": "image"}
            and image["spatial_shape"] == ["2*n"] * 2)
    assert pred["num_channels"] == 3 and pred["channel_def"] == {"0": "bg", "1": "a", "2": "b"}
    major, minor, patch = json.loads(
        (BUNDLES / "cotrain" / "configs" / "metadata.json").read_text())["version"].split(".")
    bumped = f"{major}.{minor}.{int(patch) + 1}"
    assert meta["version"] == bumped and list(meta["changelog"])[0] == bumped
    assert validate_metadata(meta) == []
    assert record_trained_settings(cotrain / "models", SETTINGS, None, {"0": "bg", "1": "a", "2": "b"}) == []


def test_stacked_3d_profile_is_merged(cotrain):
    prof = _load(cotrain / "configs" / "profile_3d.json")
    s3 = {**SETTINGS, "spatial_dims": 3, "roi_size": [16, 16, 16], "num_classes": 2}
    record_trained_settings(cotrain / "models", s3, "profile_3d.json")
    infer = _load(cotrain / "configs" / "inference.json")
    assert infer["eval_inferer"]["_target_"] == "SlidingWindowInferer" and infer["image_ext"] == ".nii.gz"
    assert infer["roi_size"] == [16, 16, 16] and infer["dataset_dir"] != prof["dataset_dir"]
    train = _load(cotrain / "configs" / "train.json")
    assert train["train_spatial_transforms"][2]["_target_"] == "RandSpatialCropd"  # after %resample, SpatialPadd
    assert (_load(cotrain / "configs" / "metadata.json")["network_data_format"]["inputs"]["image"]["spatial_shape"]
            == ["2*n"] * 3)


def test_nothing_written_without_a_bundle_folder_above_ckpt_dir(tmp_path):
    assert record_trained_settings(tmp_path / "models", SETTINGS) == []
    assert not (tmp_path / "configs").exists()

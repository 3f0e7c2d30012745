"""End-to-end tests of bundles/pseudolabel (phase 3): 2D and 3D runs, ranking, and the bad-input errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import load_decathlon_datalist
from PIL import Image

from custom_components.networks import DiffusionTeacher

BUNDLE = "pseudolabel"
ROOT = Path(__file__).resolve().parents[2] / "bundles" / BUNDLE
TINY = {"channels": [8, 16], "norm_num_groups": 4, "num_train_timesteps": 100, "infer_timestep": 50, "num_workers": 0,
        "check_datalist_files": False, "rounds": 2}


def _teacher_ckpt(path: Path, spatial_dims: int, in_channels: int, num_classes: int, channels=(8, 16)) -> Path:
    torch.manual_seed(0)
    net = DiffusionTeacher(spatial_dims, in_channels, num_classes, channels=channels, norm_num_groups=4,
                           num_train_timesteps=100, infer_timestep=50)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def _root_cause(exc: BaseException) -> BaseException:
    """MONAI's config parser wraps errors of expressions in a RuntimeError: return the original one."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _overrides(data: Path, tmp: Path, ckpt: Path, **extra) -> dict:
    return {**TINY, "dataset_dir": str(data), "output_dir": str(tmp / "out"), "teacher_ckpt": str(ckpt), **extra}


def _check_ranked(out: Path, data: Path, n_expected: int, ext: str) -> list[dict]:
    doc = json.loads((out / "pseudolabels.json").read_text())
    entries = doc["pseudolabels"]
    assert len(entries) == n_expected
    scores = [e["score"] for e in entries]
    assert scores == sorted(scores), "least confident entries must come first"
    assert [e["rank"] for e in entries] == list(range(n_expected))
    unl = {str(Path(e["image"]).resolve()) for e in load_decathlon_datalist(data / "datalist.json", False, "unlabeled")}
    resolved = load_decathlon_datalist(out / "pseudolabels.json", False, "pseudolabels")
    assert {str(Path(e["image"]).resolve()) for e in resolved} == unl
    for e in resolved:
        assert e["pseudo_label"].endswith("_pseudo" + ext) and Path(e["pseudo_label"]).is_file()
        assert e["uncertainty"].endswith("_uncertainty" + ext) and Path(e["uncertainty"]).is_file()
        assert 0.0 <= e["score"] <= 1.0
    assert doc["score_mode"] == "foreground_max_prob"
    return resolved


@pytest.mark.parametrize("num_classes", [2, 3])
def test_pseudolabel_2d(tiny_dataset_2d, tmp_path, run_bundle, num_classes):
    data = tiny_dataset_2d(num_cases=7, size=20, num_classes=num_classes,
                           splits={"labeled": 1, "unlabeled": 4, "validation": 1, "test": 1})
    ckpt = _teacher_ckpt(tmp_path / "teacher.pt", 2, 3, num_classes)
    run_bundle(BUNDLE, ["inference"], "inference",
               **_overrides(data, tmp_path, ckpt, num_classes=num_classes, roi_size=[16, 16]))
    entries = _check_ranked(tmp_path / "out", data, 4, ".png")
    for e in entries:
        src = np.asarray(Image.open(e["image"]))
        lab = np.asarray(Image.open(e["pseudo_label"]))
        unc = np.asarray(Image.open(e["uncertainty"]))
        assert lab.shape == src.shape[:2] == unc.shape, "pseudo-label must have the input's geometry"
        assert lab.dtype == np.uint8 and set(np.unique(lab)) <= set(range(num_classes))
        assert unc.dtype == np.uint8


def test_pseudolabel_3d_sliding_window(tiny_dataset_3d, tmp_path, run_bundle):
    data = tiny_dataset_3d(num_cases=6, size=[16, 16, 12], spacing=[0.5, 0.5, 2.0],
                           splits={"labeled": 1, "unlabeled": 2, "validation": 2, "test": 1})
    ckpt = _teacher_ckpt(tmp_path / "teacher.pt", 3, 1, 2)
    wf = run_bundle(BUNDLE, ["inference", "profile_3d"], "inference",
                    **_overrides(data, tmp_path, ckpt, rounds=1, roi_size=[16, 16, 8]))
    assert type(wf.parser.get_parsed_content("inferer").window_inferer).__name__ == "SlidingWindowInferer"
    for e in _check_ranked(tmp_path / "out", data, 2, ".nii.gz"):
        src, lab, unc = nib.load(e["image"]), nib.load(e["pseudo_label"]), nib.load(e["uncertainty"])
        assert lab.shape == src.shape == unc.shape
        np.testing.assert_allclose(lab.affine, src.affine, atol=1e-5)
        assert lab.get_data_dtype() == np.uint8 and unc.get_data_dtype() == np.float32
        u = unc.get_fdata()
        assert u.min() >= 0.0 and u.max() <= 1.0 + 1e-6


def test_refuses_existing_output_unless_overwrite(tiny_dataset_2d, tmp_path, run_bundle, make_bundle_workflow):
    data = tiny_dataset_2d(num_cases=5, size=16, splits={"labeled": 1, "unlabeled": 2, "validation": 1, "test": 1})
    ckpt = _teacher_ckpt(tmp_path / "teacher.pt", 2, 3, 2)
    ov = _overrides(data, tmp_path, ckpt, roi_size=[16, 16], rounds=1)
    run_bundle(BUNDLE, ["inference"], "inference", **ov)
    before = (tmp_path / "out" / "pseudolabels.json").read_text()
    wf = make_bundle_workflow(BUNDLE, ["inference"], "inference", **ov)
    with pytest.raises(Exception) as err:
        wf.initialize()
    cause = _root_cause(err.value)
    assert isinstance(cause, FileExistsError)
    assert (f"output folder '{tmp_path / 'out'}' already holds pseudo-labels" in str(cause)
            and "--overwrite True" in str(cause))
    assert (tmp_path / "out" / "pseudolabels.json").read_text() == before
    run_bundle(BUNDLE, ["inference"], "inference", **{**ov, "overwrite": True})
    assert len(json.loads((tmp_path / "out" / "pseudolabels.json").read_text())["pseudolabels"]) == 2


def test_teacher_of_another_architecture(tiny_dataset_2d, tmp_path, make_bundle_workflow):
    data = tiny_dataset_2d(num_cases=4, size=16)
    ckpt = _teacher_ckpt(tmp_path / "teacher.pt", 2, 3, 3)  # 3 classes, bundle configured for 2
    wf = make_bundle_workflow(BUNDLE, ["inference"], "inference", **_overrides(data, tmp_path, ckpt, roi_size=[16, 16]))
    with pytest.raises(Exception) as err:
        wf.initialize()
    cause = _root_cause(err.value)
    assert isinstance(cause, ValueError)
    assert f"teacher checkpoint '{ckpt}' does not match the configured architecture" in str(cause)


def test_image_with_other_channel_count(tiny_dataset_2d, tmp_path, make_bundle_workflow):
    data = tiny_dataset_2d(num_cases=4, size=16, in_channels=1)  # grey PNGs, teacher and config for RGB
    ckpt = _teacher_ckpt(tmp_path / "teacher.pt", 2, 3, 2)
    # without the datalist file check, the inferer names the image
    wf = make_bundle_workflow(BUNDLE, ["inference"], "inference", **_overrides(data, tmp_path, ckpt, roi_size=[16, 16]))
    wf.initialize()
    with pytest.raises(Exception) as err:
        wf.run()
    cause = _root_cause(err.value)
    assert isinstance(cause, ValueError)
    assert re.search(r"image '.*case_00\d\.png': has 1 channel\(s\) but the teacher expects in_channels=3", str(cause))
    # with it (the default), initialize already refuses the datalist
    wf = make_bundle_workflow(BUNDLE, ["inference"], "inference",
                              **_overrides(data, tmp_path / "b", ckpt, roi_size=[16, 16], check_datalist_files=True))
    with pytest.raises(Exception) as err:
        wf.initialize()
    assert "case_00" in str(_root_cause(err.value)) and "channel" in str(_root_cause(err.value))


def test_metadata_is_valid():
    from custom_components.bundle_tools.verify import validate_metadata

    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    assert validate_metadata(meta) == []

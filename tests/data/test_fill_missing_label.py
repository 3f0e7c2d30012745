"""Tests of custom_components.transforms.labels (kept in tests/data: the data layer owns it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from custom_components.transforms.labels import FillMissingLabel, FillMissingLabeld


@pytest.mark.parametrize("shape", [(3, 16, 12), (1, 8, 10, 6)])
def test_fills_missing_with_image_shape_and_meta(shape):
    affine = torch.diag(torch.tensor([0.5, 0.7, 0.9, 1.0]))
    img = MetaTensor(torch.rand(shape), affine=affine, meta={"filename_or_obj": "x.nii.gz"})
    out = FillMissingLabeld(keys="label", ref_key="image", fill_value=-1)({"image": img})
    lab = out["label"]
    assert isinstance(lab, MetaTensor) and lab.shape == (1, *shape[1:])
    assert torch.all(lab == -1)
    assert torch.allclose(lab.affine.double(), affine.double()) and lab.meta["filename_or_obj"] == "x.nii.gz"
    lab.meta["extra"] = 1
    assert "extra" not in img.meta  # meta is copied, not shared
    assert out["image"] is img


@pytest.mark.parametrize("nd", [2, 3])
def test_present_label_untouched_and_collates(nd):
    sp = (8,) * nd
    lab = MetaTensor(torch.randint(0, 2, (1, *sp)).float())
    labelled = FillMissingLabeld()({"image": MetaTensor(torch.rand(2, *sp)), "label": lab})
    assert labelled["label"] is lab
    unlabelled = FillMissingLabeld()({"image": MetaTensor(torch.rand(2, *sp)), "label": None})
    batch = list_data_collate([labelled, unlabelled])
    assert batch["label"].shape == (2, 1, *sp)
    assert torch.all(batch["label"][1] == -1) and torch.equal(batch["label"][0], lab)


def test_fill_value_dtype_and_numpy_input():
    out = FillMissingLabel(fill_value=255, dtype=torch.uint8)(np.zeros((1, 4, 5), np.float32))
    assert out.dtype == torch.uint8 and out.shape == (1, 4, 5) and int(out.max()) == 255


def test_with_loaded_png(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((10, 14, 3), np.uint8)).save(tmp_path / "a.png")
    t = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), FillMissingLabeld()])
    d = t({"image": str(tmp_path / "a.png")})
    assert d["label"].shape == (1, *d["image"].shape[1:])


def test_errors():
    with pytest.raises(KeyError, match="reference key 'img'"):
        FillMissingLabeld(ref_key="img")({"image": torch.zeros(1, 4, 4)})
    with pytest.raises(ValueError, match="channel-first"):
        FillMissingLabel()(torch.zeros(4))

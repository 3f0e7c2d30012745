"""Tests of the built-in synthetic dataset generator."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from custom_components.data.synthetic import make_synthetic_dataset, make_synthetic_folders, synth_case


def test_2d_binary_layout_and_metadata(tmp_path):
    path = make_synthetic_dataset(tmp_path / "ds", num_cases=6, image_size=24, seed=3)
    meta = json.loads(path.read_text())
    assert path == tmp_path / "ds" / "datalist.json"
    assert meta["spatial_dims"] == 2 and meta["num_classes"] == 2 and meta["in_channels"] == 3
    assert meta["labels"] == {"0": "background", "1": "lesion"}
    assert len(meta["cases"]) == 6
    for c in meta["cases"]:
        img = np.array(Image.open(path.parent / c["image"]))
        lab = np.array(Image.open(path.parent / c["label"]))
        assert img.shape == (24, 24, 3) and img.dtype == np.uint8
        assert lab.shape == (24, 24) and lab.dtype == np.uint8
        assert set(np.unique(lab)) <= {0, 1} and lab.max() == 1  # every case has a lesion


def test_deterministic_and_prefix_stable(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", num_cases=3, image_size=16, seed=1).parent
    b = make_synthetic_dataset(tmp_path / "b", num_cases=5, image_size=16, seed=1).parent
    c = make_synthetic_dataset(tmp_path / "c", num_cases=3, image_size=16, seed=2).parent
    for i in range(3):
        f = f"imagesTr/case_{i:04d}.png"
        assert np.array_equal(np.array(Image.open(a / f)), np.array(Image.open(b / f)))
    assert not np.array_equal(np.array(Image.open(a / "imagesTr/case_0000.png")),
                              np.array(Image.open(c / "imagesTr/case_0000.png")))


def test_3d_nifti_with_spacing(tmp_path):
    path = make_synthetic_dataset(tmp_path, spatial_dims=3, num_cases=2, image_size=[16, 20, 18], spacing=0.625)
    meta = json.loads(path.read_text())
    assert meta["in_channels"] == 1 and meta["spacing"] == [0.625] * 3
    img = nib.load(tmp_path / meta["cases"][0]["image"])
    lab = nib.load(tmp_path / meta["cases"][0]["label"])
    assert img.shape == (16, 20, 18) and img.get_data_dtype() == np.float32
    assert np.allclose(img.header.get_zooms(), 0.625)
    assert lab.shape == img.shape and lab.get_data_dtype() == np.uint8
    assert np.allclose(lab.affine, img.affine)


@pytest.mark.parametrize("nd", [2, 3])
def test_multiclass_has_all_classes(nd):
    seen = set()
    for i in range(6):
        img, lab = synth_case(np.random.default_rng([0, i]), [32] * nd if nd == 2 else [24] * 3, num_classes=4)
        assert img.shape[1:] == lab.shape and 0.0 <= img.min() and img.max() <= 1.0
        seen |= set(np.unique(lab).tolist())
    assert seen == {0, 1, 2, 3}


@pytest.mark.parametrize("nd", [2, 3])
def test_rare_class_is_small_and_in_a_fraction_of_cases(nd):
    size = [32] * 2 if nd == 2 else [24] * 3
    present, pixels = [], np.zeros(4)
    for i in range(20):
        rng = np.random.default_rng([0, i])
        _, lab = synth_case(rng, size, num_classes=4, rare_class_prob=0.4)
        counts = np.bincount(lab.ravel(), minlength=4)
        present.append(counts[3] > 0)
        pixels += counts
        _, always = synth_case(np.random.default_rng([0, i]), size, num_classes=4)
        _, default = synth_case(np.random.default_rng([0, i]), size, num_classes=4, rare_class_prob=1.0)
        assert np.array_equal(always, default)  # the default data does not change
    assert 0 < sum(present) < 20
    assert pixels[3] < pixels[2] and pixels[3] < pixels[1]
    _, none = synth_case(np.random.default_rng([0, 0]), size, num_classes=4, rare_class_prob=0.0)
    assert 3 not in np.unique(none)


def test_not_solvable_by_thresholding():
    """Best global threshold (on grey, and on grey divided by its local mean) stays far from a perfect Dice."""
    imgs, labs = [], []
    for i in range(30):
        im, lab = synth_case(np.random.default_rng([0, i]), [48, 48], in_channels=3)
        imgs.append(im.mean(0))
        labs.append(lab > 0)
    feats = {"grey": imgs, "flat": [g / ndimage.gaussian_filter(g, 10) for g in imgs]}
    for name, fs in feats.items():
        best = 0.0
        for t in np.linspace(0.0, 1.2, 61):
            inter = sum(((f < t) & lab).sum() for f, lab in zip(fs, labs))
            tot = sum((f < t).sum() + lab.sum() for f, lab in zip(fs, labs))
            best = max(best, 2 * inter / tot)
        assert best < 0.7, (name, best)


def test_distractors_present_in_background():
    """Dark structures exist outside the labels: the darkest background pixels are as dark as lesion pixels."""
    n_confusing = 0
    for i in range(20):
        im, lab = synth_case(np.random.default_rng([0, i]), [48, 48], in_channels=1, noise_std=0.0)
        g = ndimage.gaussian_filter(im[0], 1.0)
        if np.percentile(g[lab == 0], 1) < np.median(g[lab > 0]):
            n_confusing += 1
    assert n_confusing >= 8


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"num_cases": 0}, "num_cases"),
        ({"num_classes": 1}, "num_classes"),
        ({"in_channels": 2}, "in_channels"),
        ({"image_size": 4}, "image_size"),
        ({"image_size": [16, 16, 16]}, "image_size"),
        ({"num_classes": 4, "rare_class_prob": 1.5}, "rare_class_prob"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        make_synthetic_dataset(tmp_path, **kwargs)


@pytest.mark.parametrize("nd", [2, 3])
def test_folders_are_a_users_raw_data(tmp_path, nd):
    """``--folders``: images/ + masks/ (same names), unlabelled/ and new/ (images only), no datalist; the cases
    are make_synthetic_dataset's (labelled first, then unlabelled, then new)."""
    kw = dict(spatial_dims=nd, image_size=16, num_classes=4, seed=2, spacing=0.5)
    w = make_synthetic_folders(tmp_path / "raw", num_labelled=3, num_unlabelled=2, num_new=1, **kw)
    ds = make_synthetic_dataset(tmp_path / "ds", num_cases=6, **kw).parent
    ext = ".png" if nd == 2 else ".nii.gz"
    assert [p.name for p in w["images"]] == [p.name for p in w["masks"]] == [f"case_{i:04d}{ext}" for i in range(3)]
    assert [p.parent.name for p in w["unlabelled"] + w["new"]] == ["unlabelled", "unlabelled", "new"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["images", "masks", "new", "unlabelled"]

    def read(p):
        return np.array(Image.open(p)) if nd == 2 else np.asarray(nib.load(p).dataobj)

    for i, p in enumerate(w["images"] + w["unlabelled"] + w["new"]):
        assert np.array_equal(read(p), read(ds / f"imagesTr/case_{i:04d}{ext}")), p
    for i, p in enumerate(w["masks"]):
        assert np.array_equal(read(p), read(ds / f"labelsTr/case_{i:04d}{ext}")), p
    if nd == 3:
        assert np.allclose(nib.load(w["new"][0]).header.get_zooms(), 0.5)
    with pytest.raises(ValueError, match="num_labelled"):
        make_synthetic_folders(tmp_path / "bad", num_labelled=0)

"""End-to-end test of scripts/prepare_la.py on fixtures in both real LA layouts (UA-MT HDF5, challenge NRRD)."""

from __future__ import annotations

import json

import h5py
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from script_loader import load_script

from custom_components.data.prepare import PreparationError
from custom_components.data.splits import case_id, make_split


def _main(argv):
    return load_script("prepare_la").main(argv)


def _vol(seed: int, shape=(12, 10, 8)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    lab[3:8, 2:7, 2:6] = 1
    return rng.standard_normal(shape).astype(np.float32), lab


def test_uamt_layout(tmp_path, capsys):
    data = tmp_path / "data"
    ids = [f"CASE{i}" for i in range(6)]
    for i, cid in enumerate(ids):
        (data / "2018LA_Seg_Training Set" / cid).mkdir(parents=True)
        img, lab = _vol(i)
        with h5py.File(data / "2018LA_Seg_Training Set" / cid / "mri_norm2.h5", "w") as f:
            f.create_dataset("image", data=img)
            f.create_dataset("label", data=lab)
    (data / "train.list").write_text("CASE5\nCASE1\nCASE3\nCASE0\n")
    (data / "test.list").write_text("CASE2\nCASE4\n")
    assert _main([str(tmp_path), str(tmp_path / "la")]) == 0  # root above data/ also works
    out = capsys.readouterr().out
    assert "dataset LA2018: 6 cases" in out and "layout: uamt" in out
    dl = json.loads((tmp_path / "la" / "datalist.json").read_text())
    assert dl["official_train"] == ["CASE5", "CASE1", "CASE3", "CASE0"] and dl["official_test"] == ["CASE2", "CASE4"]
    assert dl["spacing"] == [0.625] * 3 and dl["spatial_dims"] == 3
    ni = nib.load(tmp_path / "la" / "imagesTr" / "CASE1.nii.gz")
    nl = nib.load(tmp_path / "la" / "labelsTr" / "CASE1.nii.gz")
    assert np.allclose(ni.header.get_zooms(), 0.625) and ni.get_data_dtype() == np.float32
    assert nl.get_data_dtype() == np.uint8
    img, lab = _vol(1)
    assert np.allclose(ni.get_fdata(), img) and np.array_equal(np.asarray(nl.dataobj), lab)
    s = make_split(tmp_path / "la" / "datalist.json", 0.5, seed=0, val_ids=["CASE0"])  # a split needs validation
    assert [case_id(e) for e in s["labeled"]] == ["CASE5", "CASE1"]
    assert [case_id(e) for e in s["test"]] == ["CASE2", "CASE4"]


def test_raw_nrrd_layout(tmp_path):
    root = tmp_path / "Training Set"
    for i, cid in enumerate(["A", "B"]):
        (root / cid).mkdir(parents=True)
        img, lab = _vol(i)
        for arr, name in ((img * 100 + 300, "lgemri.nrrd"), (lab * 255, "laendo.nrrd")):
            s = sitk.GetImageFromArray(np.transpose(arr, (2, 1, 0)))  # sitk arrays are (z, y, x)
            s.SetSpacing((0.625, 0.625, 1.25))
            sitk.WriteImage(s, str(root / cid / name))
    assert _main([str(tmp_path), str(tmp_path / "la"), "--layout", "raw"]) == 0
    dl = json.loads((tmp_path / "la" / "datalist.json").read_text())
    assert "official_train" not in dl and dl["spacing"] == [0.625, 0.625, 1.25]
    nl = nib.load(tmp_path / "la" / "labelsTr" / "B.nii.gz")
    assert np.array_equal(np.asarray(nl.dataobj), _vol(1)[1])  # 255 -> 1, axes kept
    assert np.allclose(nl.header.get_zooms(), (0.625, 0.625, 1.25))


def test_la_errors(tmp_path):
    with pytest.raises(PreparationError, match="missing folder"):
        _main([str(tmp_path / "none"), str(tmp_path / "o")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PreparationError, match="mri_norm2.h5"):
        _main([str(tmp_path / "empty"), str(tmp_path / "o")])
    d = tmp_path / "r" / "2018LA_Seg_Training Set" / "X"
    d.mkdir(parents=True)
    with h5py.File(d / "mri_norm2.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((4, 4, 4), np.float32))
        f.create_dataset("label", data=np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(PreparationError, match=r"mri_norm2\.h5:label: mask/image size mismatch"):
        _main([str(tmp_path / "r"), str(tmp_path / "o")])
    (d / "mri_norm2.h5").write_bytes(b"not hdf5")
    with pytest.raises(PreparationError, match=r"mri_norm2\.h5: unreadable HDF5"):
        _main([str(tmp_path / "r"), str(tmp_path / "o")])
    (tmp_path / "r" / "test.list").write_text("Y\n")
    with pytest.raises(PreparationError, match=r"test\.list: 1 test id\(s\) without a case folder"):
        _main([str(tmp_path / "r"), str(tmp_path / "o")])

"""End-to-end test of scripts/prepare_folder.py (generic image/mask folders, several formats)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from script_loader import load_script

from custom_components.data.datalist import validate_datalist
from custom_components.data.prepare import PreparationError


def _main(argv):
    return load_script("prepare_folder").main(argv)


def _dirs(tmp_path):
    (tmp_path / "im").mkdir()
    (tmp_path / "ma").mkdir()
    return tmp_path / "im", tmp_path / "ma"


def test_2d_mixed_formats_binarize_with_suffix(tmp_path, capsys):
    im, ma = _dirs(tmp_path)
    rng = np.random.default_rng(0)
    m = np.zeros((12, 16), np.uint8)
    m[3:9, 4:12] = 255
    for name, ext in (("a", ".png"), ("b", ".tif"), ("c", ".jpg"), ("d", ".bmp")):
        Image.fromarray(rng.integers(0, 255, (12, 16), dtype=np.uint8)).save(im / f"{name}{ext}")
    Image.fromarray(m).save(ma / "a_mask.png")
    Image.fromarray(m).save(ma / "b_mask.tif")
    Image.fromarray(m).save(ma / "c_mask.bmp")
    Image.fromarray(m > 0).convert("1").save(ma / "d_mask.bmp")
    assert _main(["--images", str(im), "--masks", str(ma), "--out", str(tmp_path / "o"), "--mask-suffix", "_mask",
                  "--binarize", "--name", "HMEPS"]) == 0
    assert "dataset HMEPS: 4 cases" in capsys.readouterr().out
    dl = json.loads((tmp_path / "o" / "datalist.json").read_text())
    assert dl["in_channels"] == 1 and dl["num_classes"] == 2 and [c["id"] for c in dl["cases"]] == list("abcd")
    for c in "abcd":
        assert np.array_equal(np.array(Image.open(tmp_path / "o" / "labelsTr" / f"{c}.png")), (m > 0).astype(np.uint8))
    validate_datalist(tmp_path / "o" / "datalist.json", 2, spatial_dims=2, in_channels=1, require_keys=("cases",))


def test_label_map_and_class_indices(tmp_path):
    im, ma = _dirs(tmp_path)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(im / "x.png")
    m = np.zeros((8, 8), np.uint8)
    m[:4] = 128
    m[6:] = 255
    Image.fromarray(m).save(ma / "x.png")
    _main(["--images", str(im), "--masks", str(ma), "--out", str(tmp_path / "o"), "--label-map", "0:0,128:1,255:2"])
    lab = np.array(Image.open(tmp_path / "o" / "labelsTr" / "x.png"))
    assert lab[0, 0] == 1 and lab[7, 0] == 2 and lab[5, 0] == 0
    assert json.loads((tmp_path / "o" / "datalist.json").read_text())["num_classes"] == 3
    with pytest.raises(PreparationError, match=r"x\.png: mask values \[255\] missing from --label-map"):
        _main(["--images", str(im), "--masks", str(ma), "--out", str(tmp_path / "o"), "--label-map", "0:0,128:1"])
    with pytest.raises(PreparationError, match=r"x\.png: mask values \[0, 128, 255\] are not class indices"):
        _main(["--images", str(im), "--masks", str(ma), "--out", str(tmp_path / "o")])


def test_3d_nifti_and_nrrd(tmp_path):
    im, ma = _dirs(tmp_path)
    lab = np.zeros((6, 7, 5), np.uint8)
    lab[1:4, 2:5, 1:3] = 2
    aff = np.diag([0.8, 0.8, 1.5, 1])
    nib.save(nib.Nifti1Image(np.ones((6, 7, 5), np.float32), aff), im / "p.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), ma / "p.nii.gz")
    s = sitk.GetImageFromArray(np.transpose(np.ones((6, 7, 5), np.float32), (2, 1, 0)))
    s.SetSpacing((0.8, 0.8, 1.5))
    sitk.WriteImage(s, str(im / "q.nrrd"))
    s = sitk.GetImageFromArray(np.transpose(lab, (2, 1, 0)))
    s.SetSpacing((0.8, 0.8, 1.5))
    sitk.WriteImage(s, str(ma / "q.nrrd"))
    _main(["--images", str(im), "--masks", str(ma), "--out", str(tmp_path / "o")])
    dl = json.loads((tmp_path / "o" / "datalist.json").read_text())
    assert dl["spatial_dims"] == 3 and dl["num_classes"] == 3
    q = nib.load(tmp_path / "o" / "labelsTr" / "q.nii.gz")
    assert np.array_equal(np.asarray(q.dataobj), lab) and np.allclose(q.header.get_zooms(), (0.8, 0.8, 1.5))
    validate_datalist(tmp_path / "o" / "datalist.json", 3, spatial_dims=3, require_keys=("cases",))


def test_folder_errors(tmp_path):
    im, ma = _dirs(tmp_path)
    with pytest.raises(PreparationError, match="no image file"):
        _main(["--images", str(im), "--masks", str(ma), "--out", str(tmp_path / "o")])
    with pytest.raises(PreparationError, match=r"nope: missing folder"):
        _main(["--images", str(tmp_path / "nope"), "--masks", str(ma), "--out", str(tmp_path / "o")])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(im / "a.png")
    with pytest.raises(PreparationError, match=r"a\.png: no mask 'a_m\.\*'"):
        _main(["--images", str(im), "--masks", str(ma), "--out", str(tmp_path / "o"), "--mask-suffix", "_m"])
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(ma / "a.png")
    with pytest.raises(PreparationError, match=r"a\.png: mask/image size mismatch"):
        _main(["--images", str(im), "--masks", str(ma), "--out", str(tmp_path / "o")])
    (ma / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(PreparationError, match=r"a\.png: unreadable mask"):
        _main(["--images", str(im), "--masks", str(ma), "--out", str(tmp_path / "o")])


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_unlabelled_folders_mask_pattern_gif_and_id_regex(tmp_path):
    """DRIVE-like names (21_training.tif <-> 21_manual1.gif), two unlabelled folders, the pool under 'unlabeled'."""
    rng = np.random.default_rng(0)
    m = np.zeros((12, 16), np.uint8)
    m[2:6, 3:9] = 255
    for i in (21, 22):
        _png(tmp_path / "im" / f"{i}_training.tif", rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
        _png(tmp_path / "ma" / f"{i}_manual1.gif", m)
    for j in range(3):
        _png(tmp_path / "u1" / f"{30 + j}_test.png", rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
    _png(tmp_path / "u2" / "40_extra.jpg", rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
    out = tmp_path / "o"
    assert _main(["--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--out", str(out),
                  "--id-regex", r"^(\d+)_", "--mask-pattern", "{id}_manual1", "--binarize",
                  "--unlabeled-images", str(tmp_path / "u1"), "--unlabeled-images", str(tmp_path / "u2"),
                  "--resize", "8", "8"]) == 0
    dl = json.loads((out / "datalist.json").read_text())
    assert [c["id"] for c in dl["cases"]] == ["21", "22"]
    assert [c["id"] for c in dl["unlabeled"]] == ["30", "31", "32", "40"]
    assert all("label" not in c for c in dl["unlabeled"]) and dl["num_unlabeled"] == 4
    assert np.array(Image.open(out / "imagesTr" / "40.png")).shape == (8, 8, 3)
    lab = np.array(Image.open(out / "labelsTr" / "21.png"))
    assert lab.shape == (8, 8) and set(np.unique(lab).tolist()) == {0, 1}
    validate_datalist(out / "datalist.json", 2, spatial_dims=2, in_channels=3, require_keys=("cases", "unlabeled"))


def test_missing_mask_error_or_unlabelled_on_request(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 1
    for n in ("a", "b", "c"):
        _png(tmp_path / "im" / f"{n}.png", np.full((8, 8), 100, np.uint8))
    _png(tmp_path / "ma" / "a_mask.bmp", m)  # another extension than the image
    args = ["--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--out", str(tmp_path / "o"),
            "--mask-pattern", "{id}_mask"]
    with pytest.raises(PreparationError, match=r"im/b\.png: no mask 'b_mask\.\*' in .*--no-mask-as-unlabeled"):
        _main(args)
    assert not (tmp_path / "o").exists()  # nothing written before the error
    _main(args + ["--no-mask-as-unlabeled"])
    dl = json.loads((tmp_path / "o" / "datalist.json").read_text())
    assert [c["id"] for c in dl["cases"]] == ["a"] and [c["id"] for c in dl["unlabeled"]] == ["b", "c"]
    with pytest.raises(PreparationError, match=r"x\.png: the image name does not match --id-regex"):
        _png(tmp_path / "im2" / "x.png", np.zeros((8, 8), np.uint8))
        _main(["--images", str(tmp_path / "im2"), "--masks", str(tmp_path / "ma"), "--out", str(tmp_path / "o2"),
               "--id-regex", r"^(\d+)"])
    _png(tmp_path / "u" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(PreparationError, match=r"u/a\.png: duplicate case id 'a'"):
        _main(args + ["--unlabeled-images", str(tmp_path / "u"), "--no-mask-as-unlabeled"])


def test_unlabelled_3d_volumes(tmp_path):
    lab = np.zeros((6, 7, 5), np.uint8)
    lab[1:4, 2:5, 1:3] = 1
    aff = np.diag([0.8, 0.8, 1.5, 1])
    for d in ("im", "ma", "u"):
        (tmp_path / d).mkdir()
    nib.save(nib.Nifti1Image(np.ones((6, 7, 5), np.float32), aff), tmp_path / "im" / "p.nii.gz")
    nib.save(nib.Nifti1Image(lab, aff), tmp_path / "ma" / "p_seg.nii.gz")
    for i in range(2):
        nib.save(nib.Nifti1Image(np.full((6, 7, 5), i, np.float32), aff), tmp_path / "u" / f"u{i}.nii")
    _main(["--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--out", str(tmp_path / "o"),
           "--mask-suffix", "_seg", "--unlabeled-images", str(tmp_path / "u")])
    dl = json.loads((tmp_path / "o" / "datalist.json").read_text())
    assert dl["spatial_dims"] == 3 and [c["image"] for c in dl["unlabeled"]] == ["imagesTr/u0.nii.gz",
                                                                                 "imagesTr/u1.nii.gz"]
    u1 = nib.load(tmp_path / "o" / "imagesTr" / "u1.nii.gz")
    assert np.allclose(np.asarray(u1.dataobj), 1.0) and np.allclose(u1.header.get_zooms(), (0.8, 0.8, 1.5))
    (tmp_path / "u2").mkdir()
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(tmp_path / "u2" / "flat.png")
    with pytest.raises(PreparationError, match="mixes 2D and 3D images"):
        _main(["--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--out", str(tmp_path / "o3"),
               "--mask-suffix", "_seg", "--unlabeled-images", str(tmp_path / "u2")])

"""End-to-end test of scripts/prepare_folder.py (generic image/mask folders, several formats)."""

from __future__ import annotations

import json
import re

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
    lab[5, 5, 4] = 1
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


# ------------------------------------------------------------------ issue 28: data checks at the door
def _cli(argv, capsys):
    """Run the script as on the command line (``run_cli``): exit status and the last line of stderr."""
    from custom_components.errors import run_cli

    status = run_cli(load_script("prepare_folder").main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    return status, (err[-1] if err else "")


def _pair_2d(tmp_path, image, mask, name="a"):
    _png(tmp_path / "im" / f"{name}{'.tif' if image.dtype == np.float32 else '.png'}", image)
    _png(tmp_path / "ma" / f"{name}.png", mask)


def test_nonfinite_voxels_error_or_replaced(tmp_path, capsys):
    """NaN / Inf voxels: an error naming the file (exit 2), or with --replace-nonfinite replaced and reported."""
    img = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    img[0, :3] = np.nan
    img[1, 0] = np.inf
    m = np.zeros((8, 8), np.uint8)
    m[4:, 4:] = 1
    _pair_2d(tmp_path, img, m)
    args = ["--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--out", str(tmp_path / "o")]
    status, last = _cli(args, capsys)
    assert status == 2 and re.search(r"im/a\.tif: 4 non-finite voxel\(s\) \(NaN or Inf\).*--replace-nonfinite", last)
    assert not (tmp_path / "o").exists()
    status, last = _cli(args + ["--replace-nonfinite"], capsys)
    assert status == 0 and re.search(r"WARNING: .*im/a\.tif: 4 non-finite voxel\(s\) replaced", last)
    dl = json.loads((tmp_path / "o" / "datalist.json").read_text())
    assert dl["stats"]["nonfinite_replaced"] == {str(tmp_path / "im" / "a.tif"): 4}
    # 3D volume
    vol = np.zeros((6, 7, 5), np.float32)
    vol[0, 0, 0] = np.nan
    lab = np.zeros((6, 7, 5), np.uint8)
    lab[2:4, 2:4, 2:4] = 1
    (tmp_path / "im3").mkdir()
    (tmp_path / "ma3").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "im3" / "v.nii.gz")
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "ma3" / "v.nii.gz")
    status, last = _cli(["--images", str(tmp_path / "im3"), "--masks", str(tmp_path / "ma3"), "--out",
                         str(tmp_path / "o3")], capsys)
    assert status == 2 and re.search(r"im3/v\.nii\.gz: 1 non-finite voxel\(s\)", last)


@pytest.mark.parametrize("change, problem", [("flip", "direction mismatch"), ("origin", "origin mismatch"),
                                             ("nrrd_flip", "direction mismatch")])
def test_3d_mask_affine_flipped_or_moved(tmp_path, capsys, change, problem):
    """A 3D mask whose affine is flipped or whose origin moved (same spacing) is an error naming it."""
    for d in ("im", "ma"):
        (tmp_path / d).mkdir()
    aff = np.diag([0.8, 0.8, 1.5, 1])
    lab = np.zeros((6, 7, 5), np.uint8)
    lab[1:4, 2:5, 1:3] = 1
    nib.save(nib.Nifti1Image(np.ones((6, 7, 5), np.float32), aff), tmp_path / "im" / "p.nii.gz")
    if change == "nrrd_flip":  # ITK mask: LPS direction converted to RAS before the comparison
        s = sitk.GetImageFromArray(np.transpose(lab, (2, 1, 0)))
        s.SetSpacing((0.8, 0.8, 1.5))
        s.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))  # LPS identity = RAS x and y flipped vs the image
        sitk.WriteImage(s, str(tmp_path / "ma" / "p.nrrd"))
    else:
        lab_aff = aff.copy()
        if change == "flip":
            lab_aff[1, 1] = -0.8
        else:
            lab_aff[:3, 3] = [0, 0, 12.0]
        nib.save(nib.Nifti1Image(lab, lab_aff), tmp_path / "ma" / "p.nii.gz")
    args = ["--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--out", str(tmp_path / "o")]
    status, last = _cli(args, capsys)
    assert status == 2 and re.search(r"ma/p\.(nii\.gz|nrrd): image/mask " + problem, last), last
    assert _cli(args + ["--spacing", "0.8", "0.8", "1.5"], capsys)[0] == 0  # headers overridden: paired as stored


def test_stray_mask_value_and_declared_label_set(tmp_path, capsys):
    """One pixel of value 5: without --num-classes the empty classes are an error naming the file and the value;
    with --num-classes 3 the value is outside the label set (file, value, pixel count)."""
    rng = np.random.default_rng(0)
    for i in range(3):
        m = np.zeros((8, 8), np.uint8)
        m[:3], m[5:] = 1, 2
        if i == 1:
            m[0, 0] = 5
        _pair_2d(tmp_path, rng.integers(0, 255, (8, 8), dtype=np.uint8), m, name=f"c{i}")
    args = ["--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--out", str(tmp_path / "o")]
    status, last = _cli(args, capsys)
    assert status == 2 and re.search(r"class\(es\) \[3, 4\] of 0\.\.5 have no voxel .* because of .*ma/c1\.png "
                                     r"\(value 5 in 1 pixel\(s\)\)", last), last
    status, last = _cli(args + ["--num-classes", "3"], capsys)
    assert status == 2 and re.search(r"ma/c1\.png: mask value 5 \(1 pixel\(s\)\) outside the declared label set "
                                     r"0\.\.2", last), last
    assert not (tmp_path / "o").exists()


def test_all_empty_masks_error_or_warning(tmp_path, capsys):
    """All-empty masks: an error; with --allow-empty-classes a warning kept in the datalist."""
    for i in range(2):
        _pair_2d(tmp_path, np.full((8, 8), 9, np.uint8), np.zeros((8, 8), np.uint8), name=f"c{i}")
    args = ["--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--out", str(tmp_path / "o"),
            "--binarize"]
    status, last = _cli(args, capsys)
    assert status == 2 and "every mask is empty (background only) over the 2 labelled case(s)" in last
    status, last = _cli(args + ["--allow-empty-classes"], capsys)
    assert status == 0 and last.startswith("WARNING: every mask is empty")
    assert "every mask is empty" in json.loads((tmp_path / "o" / "datalist.json").read_text())["warnings"][0]


def test_non_empty_out_needs_overwrite_which_removes_the_old_dataset(tmp_path, capsys):
    """Preparing into a folder holding a dataset needs --overwrite; then the old files are gone, others kept."""
    m = np.zeros((8, 8), np.uint8)
    m[2:5] = 1
    for n in ("old1", "old2"):
        _pair_2d(tmp_path, np.full((8, 8), 3, np.uint8), m, name=n)
    out = tmp_path / "o"
    args = ["--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--out", str(out)]
    assert _cli(args, capsys)[0] == 0
    (out / "splits").mkdir()
    (out / "splits" / "datalist_r0.5_s0.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    for n in ("old1", "old2"):
        (tmp_path / "im" / f"{n}.png").unlink()
        (tmp_path / "ma" / f"{n}.png").unlink()
    _pair_2d(tmp_path, np.full((8, 8), 4, np.uint8), m, name="new")
    before = {p.relative_to(out) for p in out.rglob("*")}
    status, last = _cli(args, capsys)
    assert status == 2 and re.search(r"/o: output folder is not empty .* pass --overwrite", last), last
    assert {p.relative_to(out) for p in out.rglob("*")} == before
    assert _cli(args + ["--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["new.png"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["new.png"]
    assert not (out / "splits").exists() and (out / "notes.txt").read_text() == "mine"

"""Tests of datalist loading and validation: one negative test per error, each asserting the file is named."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from custom_components.data.datalist import DatalistError, load_datalist, main, validate_datalist


def _png(path: Path, arr: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return str(path)


@pytest.fixture
def ds(tmp_path):
    """A valid 2D RGB dataset with 3 labelled, 1 unlabelled, 1 validation case; returns (dir, datalist dict)."""
    rng = np.random.default_rng(0)
    entries = []
    for i in range(5):
        _png(tmp_path / "img" / f"c{i}.png", rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
        _png(tmp_path / "lab" / f"c{i}.png", (rng.random((12, 10)) > 0.5).astype(np.uint8))
        entries.append({"image": f"img/c{i}.png", "label": f"lab/c{i}.png"})
    d = {"num_classes": 2, "labeled": entries[:3], "unlabeled": [{"image": entries[3]["image"]}],
         "validation": [entries[4]], "test": []}
    return tmp_path, d


def _write(tmp_path: Path, d: dict) -> Path:
    p = tmp_path / "datalist.json"
    p.write_text(json.dumps(d))
    return p


def test_valid_stats_and_load(ds):
    root, d = ds
    p = _write(root, d)
    stats = validate_datalist(p, num_classes=2, spatial_dims=2, in_channels=3)
    assert stats["counts"] == {"labeled": 3, "unlabeled": 1, "validation": 1, "test": 0}
    assert stats["image_shapes"]["min"] == [10, 12] and stats["channels"] == [3]  # PILReader: (W, H)
    assert abs(sum(stats["class_fractions"]) - 1) < 1e-6
    loaded = load_datalist(p)
    assert loaded["labeled"][0]["image"] == str(root / "img/c0.png")


def test_3d_nifti_valid(tmp_path):
    aff = np.diag([0.6, 0.6, 0.6, 1])
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 5), np.float32), aff), tmp_path / "i.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((6, 7, 5), np.uint8), aff), tmp_path / "l.nii.gz")
    p = _write(tmp_path, {"labeled": [{"image": "i.nii.gz", "label": "l.nii.gz"}]})
    stats = validate_datalist(p, 2, spatial_dims=3, in_channels=1)
    assert stats["image_shapes"]["max"] == [6, 7, 5]
    with pytest.raises(DatalistError, match=r"i\.nii\.gz: 3D image where 2D is expected"):
        validate_datalist(p, 2, spatial_dims=2)


def test_missing_file(ds):
    root, d = ds
    d["labeled"][1]["label"] = "lab/nope.png"
    with pytest.raises(DatalistError, match=r"lab/nope\.png: missing file"):
        validate_datalist(_write(root, d), 2)


def test_missing_datalist(tmp_path):
    with pytest.raises(DatalistError, match=r"absent\.json: datalist file not found"):
        validate_datalist(tmp_path / "absent.json", 2)


def test_truncated_file(ds):
    root, d = ds
    f = root / "img" / "c2.png"
    f.write_bytes(f.read_bytes()[:60])
    with pytest.raises(DatalistError, match=r"img/c2\.png: unreadable or truncated file"):
        validate_datalist(_write(root, d), 2)


def test_unreadable_file(ds):
    root, d = ds
    (root / "lab" / "c0.png").write_text("not an image")
    with pytest.raises(DatalistError, match=r"lab/c0\.png: unreadable or truncated file"):
        validate_datalist(_write(root, d), 2)


def test_shape_mismatch(ds):
    root, d = ds
    _png(root / "lab" / "c1.png", np.zeros((11, 10), np.uint8))
    with pytest.raises(DatalistError, match=r"lab/c1\.png: image/label shape mismatch"):
        validate_datalist(_write(root, d), 2)


def test_label_values_out_of_range(ds):
    root, d = ds
    _png(root / "lab" / "c0.png", np.full((12, 10), 255, np.uint8))  # a 0/255 mask: not a class index
    with pytest.raises(DatalistError, match=r"lab/c0\.png: label values 255 \(120 pixel\(s\)\) outside \[0, 2\)"):
        validate_datalist(_write(root, d), 2)


def test_stray_label_value_names_value_and_pixel_count(ds):
    """One pixel of value 5 in a binary dataset: the file, the value and its pixel count are named."""
    root, d = ds
    m = np.array(Image.open(root / "lab" / "c4.png"))
    m[0, 0] = 5
    _png(root / "lab" / "c4.png", m)
    with pytest.raises(DatalistError, match=r"lab/c4\.png: label values 5 \(1 pixel\(s\)\) outside \[0, 2\) .*"
                                            r"validation\[0\]"):
        validate_datalist(_write(root, d), None)  # num_classes from the datalist's key


def test_empty_classes_over_the_labelled_set(ds, capsys):
    """All-empty masks, or a declared class without any voxel, are an error (a warning when allowed)."""
    root, d = ds
    for i in range(5):
        _png(root / "lab" / f"c{i}.png", np.zeros((12, 10), np.uint8))
    p = _write(root, d)
    with pytest.raises(DatalistError, match=r"datalist\.json: every label is empty \(background only\) over the 4 "
                                            r"labelled file\(s\)"):
        validate_datalist(p, 2)
    with pytest.warns(UserWarning, match="every label is empty"):
        stats = validate_datalist(p, 2, allow_empty_classes=True)
    assert "every label is empty" in stats["warnings"][0]
    assert main([str(p)]) == 1 and "every label is empty" in capsys.readouterr().err
    assert main([str(p), "--allow-empty-classes"]) == 0 and "WARNING: " in capsys.readouterr().err
    for i in range(5):
        _png(root / "lab" / f"c{i}.png", np.full((12, 10), i % 2, np.uint8))
    with pytest.raises(DatalistError, match=r"class\(es\) \[2\] of 0\.\.2 have no voxel over the 4 labelled"):
        validate_datalist(p, 3)


def test_nonfinite_voxels_2d_and_3d(ds, tmp_path):
    """NaN / Inf voxels in an image are an error naming the file (2D float TIFF and 3D NIfTI)."""
    root, d = ds
    img = np.ones((12, 10), np.float32)
    img[2, 3:5] = np.nan
    Image.fromarray(img, mode="F").save(root / "img" / "f.tif")
    _png(root / "lab" / "f.png", np.ones((12, 10), np.uint8))
    d["validation"] = [{"image": "img/f.tif", "label": "lab/f.png"}]
    with pytest.raises(DatalistError, match=r"img/f\.tif: 2 non-finite voxel\(s\) \(NaN or Inf\) .*--replace-nonf"):
        validate_datalist(_write(root, d), 2, in_channels=None)
    vol = np.zeros((6, 7, 5), np.float32)
    vol[0, 0, 0], vol[1, 1, 1] = np.inf, np.nan
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((6, 7, 5), np.uint8), np.eye(4)), tmp_path / "vl.nii.gz")
    p = _write(tmp_path, {"labeled": [{"image": "v.nii.gz", "label": "vl.nii.gz"}]})
    with pytest.raises(DatalistError, match=r"v\.nii\.gz: 2 non-finite voxel\(s\)"):
        validate_datalist(p, 2)


@pytest.mark.parametrize("change, problem", [
    ("flip", r"direction mismatch"), ("origin", r"origin mismatch, label origin \(5\.0, 0\.0, 0\.0\)"),
    ("spacing", r"spacing mismatch")])
def test_3d_affine_compared_whole(tmp_path, change, problem):
    """A mask whose affine is flipped or moved (same spacing) is not paired voxel by voxel with the image."""
    aff = np.diag([0.6, 0.6, 0.6, 1])
    lab_aff = aff.copy()
    if change == "flip":
        lab_aff[0, 0] = -0.6
    elif change == "origin":
        lab_aff[0, 3] = 5.0
    else:
        lab_aff[2, 2] = 1.2
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 5), np.float32), aff), tmp_path / "i.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((6, 7, 5), np.uint8), lab_aff), tmp_path / "l.nii.gz")
    p = _write(tmp_path, {"labeled": [{"image": "i.nii.gz", "label": "l.nii.gz"}]})
    with pytest.raises(DatalistError, match=r"l\.nii\.gz: image/label " + problem):
        validate_datalist(p, 2)
    nib.save(nib.Nifti1Image(np.ones((6, 7, 5), np.uint8), aff + 1e-5 * (aff != 0)), tmp_path / "l.nii.gz")
    validate_datalist(p, 2)  # within the tolerance


def test_same_image_in_two_splits(ds):
    root, d = ds
    d["test"] = [dict(d["labeled"][0])]
    with pytest.raises(DatalistError, match=r"img/c0\.png: the same image appears twice.*labeled\[0\] and test\[0\]"):
        validate_datalist(_write(root, d), 2, check_files=False)


def test_same_image_twice_in_one_list(ds):
    root, d = ds
    d["labeled"].append(dict(d["labeled"][2]))
    with pytest.raises(DatalistError, match=r"img/c2\.png: the same image appears twice"):
        validate_datalist(_write(root, d), 2, check_files=False)


def test_empty_labelled_set(ds):
    root, d = ds
    d["labeled"] = []
    with pytest.raises(DatalistError, match=r"datalist\.json: empty labelled set"):
        validate_datalist(_write(root, d), 2)


def test_malformed_json(tmp_path):
    p = tmp_path / "datalist.json"
    p.write_text('{"labeled": [')
    with pytest.raises(DatalistError, match=r"datalist\.json: malformed JSON"):
        validate_datalist(p, 2)


def test_malformed_entry(ds):
    root, d = ds
    d["labeled"][0] = {"label": "lab/c0.png"}
    with pytest.raises(DatalistError, match=r"datalist\.json: malformed entry labeled\[0\]"):
        validate_datalist(_write(root, d), 2)


def test_wrong_channel_count(ds):
    root, d = ds
    with pytest.raises(DatalistError, match=r"img/c0\.png: wrong channel count, 3 channel\(s\) where 1 expected"):
        validate_datalist(_write(root, d), 2, in_channels=1)


def test_2d_where_3d_expected(ds):
    root, d = ds
    with pytest.raises(DatalistError, match=r"img/c0\.png: 2D image where 3D is expected"):
        validate_datalist(_write(root, d), 2, spatial_dims=3)


def test_labelled_entry_without_label_and_unlabelled_with_label(ds):
    root, d = ds
    d2 = json.loads(json.dumps(d))
    d2["validation"][0].pop("label")
    with pytest.raises(DatalistError, match=r"img/c4\.png: entry validation\[0\].*has no 'label'"):
        validate_datalist(_write(root, d2), 2, check_files=False)
    d["unlabeled"][0]["label"] = "lab/c3.png"
    with pytest.raises(DatalistError, match=r"img/c3\.png: unlabelled entry unlabeled\[0\].*has a 'label' key"):
        validate_datalist(_write(root, d), 2, check_files=False)


def test_cli(ds, capsys):
    root, d = ds
    assert main([str(_write(root, d)), "--num-classes", "2"]) == 0
    assert "counts: labeled 3, unlabeled 1, validation 1, test 0" in capsys.readouterr().out
    assert main([str(_write(root, d)), "--num-classes", "2", "--spatial-dims", "3"]) == 1
    assert "INVALID" in capsys.readouterr().err


def test_prepared_datalist_where_a_split_is_needed_says_run_make_split(tmp_path):
    from custom_components.data.datalist import DatalistError, validate_datalist

    (tmp_path / "datalist.json").write_text(json.dumps({"cases": [{"image": "a.png", "label": "b.png"}]}))
    with pytest.raises(DatalistError, match=r"datalist\.json: this is a prepared dataset datalist .* run "
                                            r"'python scripts/make_split\.py .*datalist\.json --ratio 1\.0'"):
        validate_datalist(tmp_path / "datalist.json", 2, check_files=False, require_keys=("labeled",))


def test_inference_folder_checks(tmp_path):
    from PIL import Image

    from custom_components.data.datalist import DatalistError, folder_entries, validate_inference_input

    with pytest.raises(DatalistError, match=r"nope: input_dir does not exist"):
        folder_entries(tmp_path / "nope", ".png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg")
    with pytest.raises(DatalistError, match=r"holds no '\*\.png' image file .* it holds \.jpg files: pass --image_ext "
                                            r"\.jpg"):
        folder_entries(tmp_path, ".png")
    assert folder_entries(tmp_path, ".jpg") == [{"image": str(tmp_path / "a.jpg")}]
    validate_inference_input(tmp_path, ".jpg", "unused.json", "test", spatial_dims=2, in_channels=3)
    with pytest.raises(DatalistError, match=r"a\.jpg: wrong channel count, 3 channel\(s\) where 1 expected .*"
                                            r"convert this image to 1 channel\(s\) .*--in_channels must stay 1"):
        validate_inference_input(tmp_path, ".jpg", "unused.json", "test", spatial_dims=2, in_channels=1)
    with pytest.raises(DatalistError, match=r"datalist\.json: datalist file not found\. To predict on a folder of "
                                            r"images, pass --input_dir .* --output_dir OUT instead of --dataset_dir"):
        validate_inference_input(None, ".png", str(tmp_path / "datalist.json"), "test", spatial_dims=2, in_channels=3)
    with pytest.raises(DatalistError, match=r"a\.jpg: 2D image where 3D is expected"):
        validate_inference_input(tmp_path, ".jpg", "unused.json", "test", spatial_dims=3, in_channels=None)

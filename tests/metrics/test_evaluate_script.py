"""scripts/evaluate.py end to end, in process."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from script_loader import load_script

evaluate = load_script("evaluate")


def _test_entries(root: Path) -> list[dict]:
    return json.loads((root / "datalist.json").read_text())["test"]


def test_evaluate_3d_nifti_with_postfix(tiny_dataset_3d, tmp_path, capsys) -> None:
    root = tiny_dataset_3d(
        num_cases=4, size=12, spacing=(0.5, 0.5, 1.0), splits={"labeled": 1, "unlabeled": 0, "validation": 0, "test": 3}
    )
    preds = tmp_path / "preds"
    for i, e in enumerate(_test_entries(root)):
        stem = Path(e["image"]).name[: -len(".nii.gz")]
        (preds / stem).mkdir(parents=True)  # SaveImage-like layout: one folder per case
        lab = nib.load(str(root / e["label"]))
        arr = np.asarray(lab.dataobj).copy()
        if i == 0:
            arr[:] = 0  # an empty prediction: Dice 0, distances = image diagonal
        nib.save(nib.Nifti1Image(arr, lab.affine), str(preds / stem / f"{stem}_seg.nii.gz"))
    out = tmp_path / "metrics"
    assert evaluate.main(["--pred-dir", str(preds), "--datalist", str(root / "datalist.json"),
                          "--postfix", "_seg", "--output-dir", str(out)]) == 0
    assert "protocol: clean" in capsys.readouterr().out
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["case_001", "case_002", "case_003"]
    assert [float(r["dice_class_1"]) for r in rows] == [0.0, 1.0, 1.0]  # class names from the datalist
    assert rows[0]["flags"] == "class_1:empty_pred" and rows[0]["distance_unit"] == "mm"
    assert float(rows[0]["hd95_class_1"]) == pytest.approx(np.sqrt(6**2 + 6**2 + 12**2))
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["protocol"] == "clean" and summary["metrics"]["class_1"]["dice"]["mean"] == pytest.approx(2 / 3)


def test_evaluate_2d_png_paper2d_and_errors(tiny_dataset_2d, tmp_path) -> None:
    root = tiny_dataset_2d(num_cases=4, size=16, splits={"labeled": 1, "unlabeled": 0, "validation": 0, "test": 3})
    preds = tmp_path / "preds"
    preds.mkdir()
    entries = _test_entries(root)
    for e in entries:
        shutil.copy(root / e["label"], preds / Path(e["label"]).name)
    argv = ["--pred-dir", str(preds), "--datalist", str(root / "datalist.json"), "--protocol", "paper2d", "--quiet"]
    assert evaluate.main(argv) == 0
    payload = json.loads((preds / "metrics_paper2d" / "metrics.json").read_text())
    assert payload["protocol"] == "paper2d" and payload["summary"]["pooled"]["class_1"]["dice"] == 1.0
    assert {r["ref_class_1"] > 0 for r in payload["per_case"]} == {True}  # resized to 128x128
    assert all(r["distance_unit"] == "voxel" for r in payload["per_case"])

    # a 0/255 prediction is rejected naming the file
    bad = np.asarray(Image.open(preds / Path(entries[0]["label"]).name)) * 255
    Image.fromarray(bad.astype(np.uint8)).save(preds / Path(entries[0]["label"]).name)
    with pytest.raises(SystemExit, match=r"case_001\.png vs .*0/255 mask"):
        evaluate.main(argv)
    # a missing prediction is named
    (preds / Path(entries[1]["label"]).name).unlink()
    with pytest.raises(SystemExit, match=r"no prediction .* for 1 of 3 'test' entries .*case_002"):
        evaluate.main(argv)
    with pytest.raises(SystemExit, match="has no non-empty list 'nope'"):
        evaluate.main(argv + ["--split", "nope"])

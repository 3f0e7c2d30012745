"""Tests of scripts/merge_pseudolabels.py: reviewed + confident pseudo-labels join `labeled`, never over a human
label."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from script_loader import load_script

merge = load_script("merge_pseudolabels")


def _pseudolabels(data: Path, out: Path, scores: dict[str, float],
                  extra_images: dict[str, float] | None = None) -> Path:
    """A pseudolabels.json as the bundle writes it (paths relative to its folder), with one file per entry."""
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for img, score in {**scores, **(extra_images or {})}.items():
        stem = Path(img).name.split(".")[0]
        lab = out / f"{stem}_pseudo.png"
        shutil.copy(data / "labelsTr" / Path(img).name, lab)
        entries.append({"image": os.path.relpath(data / img, out), "pseudo_label": lab.name,
                        "uncertainty": f"{stem}_uncertainty.png", "score": score})
    entries.sort(key=lambda e: e["score"])
    path = out / "pseudolabels.json"
    path.write_text(json.dumps({"pseudolabels": entries}))
    return path


def _resolved(path: Path, key: str) -> dict[str, dict]:
    doc = json.loads(path.read_text())
    return {str((path.parent / e["image"]).resolve()): e for e in doc[key]}


def test_confident_pseudo_and_reviewed_join_labeled(tiny_dataset_2d, tmp_path, capsys):
    data = tiny_dataset_2d(num_cases=8, size=16, splits={"labeled": 2, "unlabeled": 4, "validation": 1, "test": 1})
    dl = json.loads((data / "datalist.json").read_text())
    u = [e["image"] for e in dl["unlabeled"]]
    pl = _pseudolabels(data, tmp_path / "pl", {u[0]: 0.95, u[1]: 0.5, u[2]: 0.99, u[3]: 0.97})
    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    shutil.copy(data / "labelsTr" / Path(u[3]).name, reviewed / (Path(u[3]).stem + "_seg.png"))  # reviewed beats pseudo
    out = tmp_path / "new" / "datalist.json"
    argv = ["--datalist", str(data / "datalist.json"), "--pseudolabels", str(pl), "--threshold", "0.9", "--reviewed",
            str(reviewed), "--out", str(out)]
    assert merge.main(argv) == 0
    assert "+1 reviewed, +2 pseudo (score >= 0.9), 1 below threshold, 1 still unlabelled" in capsys.readouterr().out
    lab = _resolved(out, "labeled")
    assert len(lab) == 5
    assert (lab[str((data / u[0]).resolve())]["source"] == "pseudo"
            and lab[str((data / u[0]).resolve())]["score"] == 0.95)
    assert lab[str((data / u[2]).resolve())]["source"] == "pseudo"
    assert lab[str((data / u[3]).resolve())]["source"] == "reviewed"
    for e in json.loads(out.read_text())["labeled"]:
        assert (out.parent / e["label"]).is_file(), "paths must resolve from the new datalist's folder"
    assert ([str((out.parent / e["image"]).resolve()) for e in json.loads(out.read_text())["unlabeled"]]
            == [str((data / u[1]).resolve())])
    new = json.loads(out.read_text())
    for key in ("validation", "test"):
        assert ([str((out.parent / e["image"]).resolve()) for e in new[key]]
                == [str((data / e["image"]).resolve()) for e in dl[key]])
    # the merged datalist is valid for the next co-training run
    from custom_components.data.datalist import validate_datalist

    validate_datalist(out, num_classes=2, spatial_dims=2, in_channels=3, require_keys=("labeled", "unlabeled"))


def test_pseudo_label_never_replaces_human_label(tiny_dataset_2d, tmp_path, capsys):
    data = tiny_dataset_2d(num_cases=6, size=16, splits={"labeled": 2, "unlabeled": 2, "validation": 1, "test": 1})
    dl = json.loads((data / "datalist.json").read_text())
    human = dl["labeled"][0]
    # a (very confident) pseudo-label and a reviewed label for an image that already has a human label
    pl = _pseudolabels(data, tmp_path / "pl", {dl["unlabeled"][0]["image"]: 0.99}, extra_images={human["image"]: 1.0})
    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    shutil.copy(data / "labelsTr" / Path(dl["unlabeled"][1]["image"]).name, reviewed / Path(human["image"]).name)
    out = data / "datalist_round2.json"  # same folder: entries stay byte-identical
    assert merge.main(["--datalist", str(data / "datalist.json"), "--pseudolabels", str(pl), "--reviewed",
                       str(reviewed), "--out", str(out)]) == 0
    assert "kept 2 existing human label(s) untouched" in capsys.readouterr().out
    new = json.loads(out.read_text())
    assert new["labeled"][: len(dl["labeled"])] == dl["labeled"], "human labels must be kept unchanged"
    labels_of_human = [e for e in new["labeled"] if e["image"] == human["image"]]
    assert labels_of_human == [human]
    assert new["validation"] == dl["validation"] and new["test"] == dl["test"]
    assert new["merged_from"]["protected"] == 2


def test_errors(tiny_dataset_2d, tmp_path, capsys):
    data = tiny_dataset_2d(num_cases=5, size=16, splits={"labeled": 1, "unlabeled": 2, "validation": 1, "test": 1})
    dl = data / "datalist.json"
    u0 = json.loads(dl.read_text())["unlabeled"][0]["image"]
    pl = _pseudolabels(data, tmp_path / "pl", {u0: 0.99})
    assert merge.main(["--datalist", str(dl), "--pseudolabels", str(pl), "--out", str(dl)]) == 2
    assert "is the input datalist" in capsys.readouterr().err
    out = tmp_path / "x.json"
    out.write_text("{}")
    assert merge.main(["--datalist", str(dl), "--pseudolabels", str(pl), "--out", str(out)]) == 2
    assert f"output '{out}' already exists; pass --overwrite" in capsys.readouterr().err
    (tmp_path / "pl" / (Path(u0).name.split(".")[0] + "_pseudo.png")).unlink()
    assert merge.main(["--datalist", str(dl), "--pseudolabels", str(pl), "--out", str(out), "--overwrite"]) == 2
    assert "pseudo-label file" in capsys.readouterr().err
    assert merge.main(["--datalist", str(dl), "--reviewed", str(tmp_path / "nope"), "--out", str(out),
                       "--overwrite"]) == 2
    assert "reviewed-labels folder" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pseudolabels": [{"image": "a.png"}]}))
    with pytest.raises(merge.MergeError, match=r"entry 0 needs 'image', 'pseudo_label' and 'score'"):
        merge.merge_pseudolabels(dl, tmp_path / "y.json", bad)

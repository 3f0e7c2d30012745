"""End-to-end test of scripts/make_split.py and scripts/make_synthetic.py (in-process ``main(argv)``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_synthetic_then_split(tmp_path, capsys):
    assert _load("make_synthetic").main(["--out", str(tmp_path), "--num-cases", "20", "--image-size", "16"]) == 0
    assert "wrote 20 cases" in capsys.readouterr().out
    assert _load("make_split").main([str(tmp_path / "datalist.json"), "--ratio", "0.1", "1.0", "--seed", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert "ratio 0.1 seed 0: labeled 1, unlabeled 11, validation 2, test 6" in out
    for r in ("0.1", "1"):
        for s in (0, 1):
            d = json.loads((tmp_path / "splits" / f"datalist_r{r}_s{s}.json").read_text())
            assert d["num_classes"] == 2 and d["spatial_dims"] == 2
            assert (tmp_path / "splits" / d["labeled"][0]["image"]).is_file()


def test_make_split_official_list_files(tmp_path, capsys):
    cases = [{"image": f"imagesTr/P{i}.nii.gz", "label": f"labelsTr/P{i}.nii.gz"} for i in range(12)]
    (tmp_path / "datalist.json").write_text(json.dumps({"cases": cases}))
    (tmp_path / "train.list").write_text("\n".join(f"P{i}" for i in range(2, 12)))
    (tmp_path / "test.list").write_text("P0\nP1\n")
    _load("make_split").main([str(tmp_path / "datalist.json"), "--ratio", "0.2", "--official-test",
                              str(tmp_path / "test.list"), "--official-train", str(tmp_path / "train.list"),
                              "--out", str(tmp_path / "x.json")])
    d = json.loads((tmp_path / "x.json").read_text())
    assert [e["image"] for e in d["labeled"]] == ["imagesTr/P2.nii.gz", "imagesTr/P3.nii.gz"]
    assert [e["image"] for e in d["test"]] == ["imagesTr/P0.nii.gz", "imagesTr/P1.nii.gz"]


def test_make_split_out_needs_single_regime(tmp_path):
    with pytest.raises(SystemExit, match="--out"):
        _load("make_split").main([str(tmp_path / "d.json"), "--ratio", "0.1", "0.2", "--out", "x.json"])

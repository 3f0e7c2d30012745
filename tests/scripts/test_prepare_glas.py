"""End-to-end test of scripts/prepare_glas.py on a fixture in GlaS's real format (instance-map BMP annotations)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from script_loader import load_script

from custom_components.data.prepare import PreparationError
from custom_components.data.splits import case_id, make_split


def _main(argv):
    return load_script("prepare_glas").main(argv)


def _pair(d: Path, name: str, h: int = 16, w: int = 20, anno_hw=None) -> None:
    rng = np.random.default_rng(len(name))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / f"{name}.bmp")
    ah, aw = anno_hw or (h, w)
    inst = np.zeros((ah, aw), np.uint8)
    inst[2:6, 2:6] = 1
    inst[8:12, 10:15] = 7  # instance ids, not class indices
    Image.fromarray(inst).save(d / f"{name}_anno.bmp")


def test_prepare_glas(tmp_path, capsys):
    raw = tmp_path / "Warwick QU Dataset (Released 2016_07_08)"
    raw.mkdir()
    for n in ["train_1", "train_2", "train_10", "testA_1", "testA_2", "testB_1"]:
        _pair(raw, n)
    (raw / "Grade.csv").write_text("name,grade\n")
    assert _main([str(raw), str(tmp_path / "glas")]) == 0
    assert "train / testA / testB: 3 / 2 / 1" in capsys.readouterr().out
    dl = json.loads((tmp_path / "glas" / "datalist.json").read_text())
    assert [c["id"] for c in dl["cases"]] == ["train_1", "train_2", "train_10", "testA_1", "testA_2", "testB_1"]
    assert dl["official_test"] == ["testA_1", "testA_2", "testB_1"] and dl["official_test_b"] == ["testB_1"]
    lab = np.array(Image.open(tmp_path / "glas" / "labelsTr" / "train_1.png"))
    assert set(np.unique(lab)) == {0, 1} and lab[9, 12] == 1  # instance 7 binarised
    split = make_split(tmp_path / "glas" / "datalist.json", 1.0, seed=0, val_fraction=0.2)
    assert sorted(case_id(e) for e in split["test"]) == sorted(dl["official_test"])


def test_prepare_glas_errors(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(PreparationError, match="no 'train_N.bmp'"):
        _main([str(raw), str(tmp_path / "o")])
    _pair(raw, "train_1", anno_hw=(16, 21))
    with pytest.raises(PreparationError, match=r"train_1_anno\.bmp: mask/image size mismatch"):
        _main([str(raw), str(tmp_path / "o")])
    (raw / "train_1_anno.bmp").unlink()
    with pytest.raises(PreparationError, match=r"train_1_anno\.bmp: missing annotation"):
        _main([str(raw), str(tmp_path / "o")])
    with pytest.raises(PreparationError, match="missing folder"):
        _main([str(tmp_path / "absent"), str(tmp_path / "o")])

"""End-to-end test of scripts/prepare_ph2.py on a fixture in PH2's real format (1-bit and 24-bit BMP masks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from script_loader import load_script

from custom_components.data.datalist import validate_datalist
from custom_components.data.prepare import PreparationError


def _main(argv):
    return load_script("prepare_ph2").main(argv)


def _case(base: Path, cid: str, h: int, w: int, mask24: bool = False, mask_hw=None) -> np.ndarray:
    rng = np.random.default_rng(int(cid[3:]))
    d = base / "PH2Dataset" / "PH2 Dataset images" / cid
    (d / f"{cid}_Dermoscopic_Image").mkdir(parents=True)
    (d / f"{cid}_lesion").mkdir()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp")
    mh, mw = mask_hw or (h, w)
    m = np.zeros((mh, mw), bool)
    m[mh // 4 : 3 * mh // 4, mw // 3 :] = True
    if mask24:
        Image.fromarray(np.stack([m.astype(np.uint8) * 255] * 3, -1)).save(d / f"{cid}_lesion" / f"{cid}_lesion.bmp")
    else:
        Image.fromarray(m).convert("1").save(d / f"{cid}_lesion" / f"{cid}_lesion.bmp")
    Image.fromarray(m.astype(np.uint8) * 255).save(d / f"{cid}_lesion" / f"{cid}_lesion.jpg")  # must be ignored
    return m


def test_prepare_ph2_native_and_resized(tmp_path, capsys):
    raw = tmp_path / "raw"
    m1 = _case(raw, "IMD001", 20, 24)
    with Image.open(raw / "PH2Dataset/PH2 Dataset images/IMD001/IMD001_lesion/IMD001_lesion.bmp") as im:
        assert im.mode == "1"  # the fixture really is a 1-bit BMP
    m2 = _case(raw, "IMD002", 22, 26, mask24=True)
    _case(raw, "IMD010", 21, 25)
    assert _main([str(raw), str(tmp_path / "ph2")]) == 0
    out = capsys.readouterr().out
    assert "dataset PH2: 3 cases" in out and "class fractions" in out
    dl = json.loads((tmp_path / "ph2" / "datalist.json").read_text())
    assert [c["id"] for c in dl["cases"]] == ["IMD001", "IMD002", "IMD010"]
    assert dl["num_classes"] == 2 and dl["in_channels"] == 3 and dl["spatial_dims"] == 2
    lab1 = np.array(Image.open(tmp_path / "ph2" / "labelsTr" / "IMD001.png"))
    lab2 = np.array(Image.open(tmp_path / "ph2" / "labelsTr" / "IMD002.png"))
    assert np.array_equal(lab1, m1.astype(np.uint8)) and np.array_equal(lab2, m2.astype(np.uint8))
    assert np.array(Image.open(tmp_path / "ph2" / "imagesTr" / "IMD002.png")).shape == (22, 26, 3)
    validate_datalist(tmp_path / "ph2" / "datalist.json", 2, spatial_dims=2, in_channels=3, require_keys=("cases",))

    assert _main([str(raw / "PH2Dataset"), str(tmp_path / "small"), "--resize", "8", "12"]) == 0
    lab = np.array(Image.open(tmp_path / "small" / "labelsTr" / "IMD002.png"))
    img = np.array(Image.open(tmp_path / "small" / "imagesTr" / "IMD002.png"))
    assert lab.shape == (8, 12) and img.shape == (8, 12, 3) and set(np.unique(lab)) == {0, 1}
    assert json.loads((tmp_path / "small" / "datalist.json").read_text())["resize"] == [8, 12]


def test_prepare_ph2_errors(tmp_path):
    with pytest.raises(PreparationError, match="missing folder"):
        _main([str(tmp_path / "nowhere"), str(tmp_path / "o")])
    raw = tmp_path / "raw"
    _case(raw, "IMD003", 20, 24, mask_hw=(20, 23))
    with pytest.raises(PreparationError, match=r"IMD003_lesion\.bmp: mask/image size mismatch"):
        _main([str(raw), str(tmp_path / "o")])
    (raw / "PH2Dataset/PH2 Dataset images/IMD003/IMD003_lesion/IMD003_lesion.bmp").write_bytes(b"BM broken")
    with pytest.raises(PreparationError, match=r"IMD003_lesion\.bmp: unreadable"):
        _main([str(raw), str(tmp_path / "o")])
    (raw / "PH2Dataset/PH2 Dataset images/IMD003/IMD003_Dermoscopic_Image/IMD003.bmp").unlink()
    with pytest.raises(PreparationError, match=r"IMD003\.bmp: missing file"):
        _main([str(raw), str(tmp_path / "o")])

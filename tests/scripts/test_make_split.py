"""End-to-end test of scripts/make_split.py and scripts/make_synthetic.py (in-process ``main(argv)``)."""

from __future__ import annotations

import json

import pytest
from script_loader import load_script


def test_make_synthetic_then_split(tmp_path, capsys):
    assert load_script("make_synthetic").main(["--out", str(tmp_path), "--num-cases", "20", "--image-size", "16"]) == 0
    assert "wrote 20 cases" in capsys.readouterr().out
    assert load_script("make_split").main([str(tmp_path / "datalist.json"), "--ratio", "0.1", "1.0", "--seed", "0",
                                           "1"]) == 0
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
    load_script("make_split").main([str(tmp_path / "datalist.json"), "--ratio", "0.2", "--official-test",
                                    str(tmp_path / "test.list"), "--official-train", str(tmp_path / "train.list"),
                                    "--out", str(tmp_path / "x.json")])
    d = json.loads((tmp_path / "x.json").read_text())
    assert [e["image"] for e in d["labeled"]] == ["imagesTr/P2.nii.gz", "imagesTr/P3.nii.gz"]
    assert [e["image"] for e in d["test"]] == ["imagesTr/P0.nii.gz", "imagesTr/P1.nii.gz"]


def test_make_split_out_needs_single_regime(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        load_script("make_split").main([str(tmp_path / "d.json"), "--ratio", "0.1", "0.2", "--out", "x.json"])
    assert e.value.code == 2 and "--out needs exactly one --ratio and one --seed" in capsys.readouterr().err


def test_make_split_real_pool_and_id_lists(tmp_path, capsys):
    cases = [{"id": f"c{i}", "image": f"imagesTr/c{i}.png", "label": f"labelsTr/c{i}.png"} for i in range(6)]
    pool = [{"id": f"u{i}", "image": f"imagesTr/u{i}.png"} for i in range(20)]
    (tmp_path / "datalist.json").write_text(json.dumps({"cases": cases, "unlabeled": pool}))
    (tmp_path / "test.txt").write_text("c0\nc1\n")
    (tmp_path / "val.txt").write_text("c5\n")
    assert load_script("make_split").main([str(tmp_path / "datalist.json"), "--ratio", "1.0", "--test-list",
                                           str(tmp_path / "test.txt"), "--val-list", str(tmp_path / "val.txt")]) == 0
    assert "ratio 1 seed 0: labeled 3, unlabeled 20, validation 1, test 2" in capsys.readouterr().out
    d = json.loads((tmp_path / "splits" / "datalist_r1_s0.json").read_text())
    assert [e["id"] for e in d["test"]] == ["c0", "c1"] and [e["id"] for e in d["validation"]] == ["c5"]
    assert [e["image"] for e in d["unlabeled"]] == [f"../imagesTr/u{i}.png" for i in range(20)]


def _four_labelled(tmp_path):
    cases = [{"image": f"imagesTr/c{i}.png", "label": f"labelsTr/c{i}.png"} for i in range(4)]
    pool = [{"image": f"imagesTr/u{i}.png"} for i in range(16)]
    (tmp_path / "datalist.json").write_text(json.dumps({"name": "mine", "cases": cases, "unlabeled": pool}))
    return tmp_path / "datalist.json"


def test_ratio_split_of_four_labelled_images_warns_and_points_to_folds(tmp_path, capsys):
    assert load_script("make_split").main([str(_four_labelled(tmp_path)), "--ratio", "1.0"]) == 0
    cap = capsys.readouterr()
    assert "labeled 2, unlabeled 16, validation 1, test 1" in cap.out
    assert "WARNING: test has 1 case(s) and validation has 1 case(s) (fewer than 5)" in cap.err
    assert "--folds 5" in cap.err


def test_folds_write_one_datalist_per_fold(tmp_path, capsys):
    dl = _four_labelled(tmp_path)
    assert load_script("make_split").main([str(dl), "--cv", "--seed", "0"]) == 0
    cap = capsys.readouterr()
    assert "WARNING" not in cap.err and cap.out.count("no validation: the last checkpoint is kept") == 4
    tested = []
    for i in range(4):
        d = json.loads((tmp_path / "splits" / f"datalist_cv4_f{i}_s0.json").read_text())
        assert d["selection"] == "last" and len(d["test"]) == 1 and len(d["unlabeled"]) == 16
        assert (tmp_path / "splits" / d["test"][0]["image"]).parent.name == "imagesTr"  # paths rewritten
        tested += [e["image"] for e in d["test"]]
    assert len(set(tested)) == 4 and not (tmp_path / "splits" / "datalist_cv4_f4_s0.json").exists()
    with pytest.raises(SystemExit):
        load_script("make_split").main([str(dl)])  # neither --ratio nor --folds

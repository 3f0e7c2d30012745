"""Tests of the deterministic split maker."""

from __future__ import annotations

import json

import pytest
from monai.data import load_decathlon_datalist

from custom_components.data.splits import (
    SplitError,
    case_id,
    fold_filename,
    make_folds,
    make_split,
    read_id_list,
    split_filename,
    write_split,
)


def _cases(n: int) -> list[dict]:
    return [{"image": f"imagesTr/c{i:03d}.png", "label": f"labelsTr/c{i:03d}.png"} for i in range(n)]


def _imgs(lst):
    return [e["image"] for e in lst]


def test_keys_counts_and_disjoint():
    s = make_split(_cases(100), labeled_ratio=0.1, seed=0)
    assert len(s["test"]) == 30 and len(s["validation"]) == 10
    assert len(s["labeled"]) == 6 and len(s["unlabeled"]) == 54  # 10 % of the 60-case pool
    all_imgs = _imgs(s["labeled"]) + _imgs(s["unlabeled"]) + _imgs(s["validation"]) + _imgs(s["test"])
    assert len(all_imgs) == len(set(all_imgs)) == 100
    assert all("label" not in e for e in s["unlabeled"])
    assert all("label" in e for k in ("labeled", "validation", "test") for e in s[k])
    assert s["seed"] == 0 and s["labeled_ratio"] == 0.1


def test_deterministic_and_seed_dependent():
    a = make_split(_cases(50), 0.2, seed=1)
    b = make_split(list(reversed(_cases(50))), 0.2, seed=1)  # input order does not matter
    c = make_split(_cases(50), 0.2, seed=2)
    assert a == b
    assert _imgs(a["test"]) != _imgs(c["test"])


def test_validation_test_independent_of_ratio_and_labeled_nested():
    splits = [make_split(_cases(80), r, seed=5) for r in (0.05, 0.1, 0.2, 0.5, 1.0)]
    for s in splits[1:]:
        assert s["validation"] == splits[0]["validation"] and s["test"] == splits[0]["test"]
    for small, large in zip(splits, splits[1:]):
        assert set(_imgs(small["labeled"])) < set(_imgs(large["labeled"]))
    assert splits[-1]["unlabeled"] == [] and len(splits[-1]["labeled"]) == 80 - 24 - 8


def test_min_labeled_and_first_n():
    assert len(make_split(_cases(20), 0.01, seed=0)["labeled"]) == 1
    assert len(make_split(_cases(20), 0.01, seed=0, min_labeled=3)["labeled"]) == 3
    s = make_split(_cases(20), 0.5, seed=0, labeled_first_n=2)
    assert len(s["labeled"]) == 2 and s["split"]["labeled_first_n"] == 2


def test_official_train_test_la_protocol():
    cases = [{"id": f"ID{i:02d}", "image": f"imagesTr/ID{i:02d}.nii.gz", "label": f"labelsTr/ID{i:02d}.nii.gz"}
             for i in range(100)]
    train = [f"ID{i:02d}" for i in range(99, 19, -1)]  # 80 ids, deliberately not sorted
    test = [f"ID{i:02d}" for i in range(20)]
    s8 = make_split(cases, 0.1, seed=0, official_train=train, official_test=test)
    assert [case_id(e) for e in s8["test"]] == test
    assert [case_id(e) for e in s8["labeled"]] == train[:8]  # labelled = first 8 ids of train.list
    assert len(s8["validation"]) == 8
    assert not set(case_id(e) for e in s8["validation"]) & set(train[:16])
    s4 = make_split(cases, 0.05, seed=0, official_train=train, official_test=test)
    s16 = make_split(cases, 0.2, seed=0, official_train=train, official_test=test)
    assert [case_id(e) for e in s4["labeled"]] == train[:4]
    assert [case_id(e) for e in s16["labeled"]] == train[:16]
    assert s4["validation"] == s8["validation"] == s16["validation"]
    assert len(s8["unlabeled"]) == 80 - 8 - 8
    s_other = make_split(cases, 0.1, seed=1, official_train=train, official_test=test)
    assert s_other["validation"] != s8["validation"]


def test_official_lists_read_from_datalist(tmp_path):
    data = {"cases": _cases(30), "official_test": [f"c{i:03d}" for i in range(10)]}
    s = make_split(data, 0.5, seed=0)
    assert sorted(case_id(e) for e in s["test"]) == [f"c{i:03d}" for i in range(10)]
    s_no = make_split(data, 0.5, seed=0, use_official=False)
    assert sorted(case_id(e) for e in s_no["test"]) != [f"c{i:03d}" for i in range(10)]


def test_read_id_list_uamt_style(tmp_path):
    p = tmp_path / "train.list"
    p.write_text("A1\n\nB2\n../data/2018LA_Seg_Training Set/C3/mri_norm2.h5\n")
    assert read_id_list(p) == ["A1", "B2", "C3"]


def test_write_split_paths_resolve(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    s = make_split(_cases(10), 0.2, seed=0)
    out = write_split(s, tmp_path)
    assert out == tmp_path / "splits" / "datalist_r0.2_s0.json"
    assert json.loads(out.read_text())["labeled"][0]["image"].startswith("../imagesTr/")
    items = load_decathlon_datalist(out, data_list_key="unlabeled")
    assert items[0]["image"].startswith(str(tmp_path / "imagesTr"))
    assert split_filename(1.0, 3) == "datalist_r1_s3.json" and split_filename(0.05, 0) == "datalist_r0.05_s0.json"


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"labeled_ratio": 0.0}, "labeled_ratio"),
        ({"labeled_ratio": 1.5}, "labeled_ratio"),
        ({"labeled_ratio": 0.1, "val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction"),
        ({"labeled_ratio": 0.1, "official_test": ["nope"]}, "official_test"),
        ({"labeled_ratio": 0.1, "labeled_first_n": 99}, "labeled_first_n"),
    ],
)
def test_invalid(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        make_split(_cases(10), **kwargs)


def test_duplicate_image_rejected():
    cases = _cases(5) + [{"id": "other", "image": "imagesTr/c000.png", "label": "labelsTr/c000.png"}]
    with pytest.raises(ValueError, match="c000.png listed twice"):
        make_split(cases, 0.5)


def _dataset_with_pool(n_lab: int, n_pool: int) -> dict:
    return {"name": "mine", "num_classes": 2, "cases": _cases(n_lab),
            "unlabeled": [{"id": f"u{i}", "image": f"imagesTr/u{i:03d}.png"} for i in range(n_pool)]}


def test_real_unlabelled_pool_goes_whole_into_unlabeled():
    data = _dataset_with_pool(6, 20)
    s = make_split(data, 1.0, seed=0)
    assert len(s["test"]) == 2 and len(s["validation"]) == 1 and len(s["labeled"]) == 3  # only labelled cases split
    assert _imgs(s["unlabeled"]) == [f"imagesTr/u{i:03d}.png" for i in range(20)]
    assert all("label" not in e for e in s["unlabeled"]) and s["split"]["num_unlabeled_pool"] == 20
    s2 = make_split(data, 0.5, seed=0)  # hidden labels join the real pool
    assert len(s2["labeled"]) == 2 and len(s2["unlabeled"]) == 21 and s2["validation"] == s["validation"]
    tiny = make_split(_dataset_with_pool(3, 20), 1.0, seed=0)  # 3 labelled cases: one each
    assert [len(tiny[k]) for k in ("labeled", "validation", "test", "unlabeled")] == [1, 1, 1, 20]


def test_fixed_validation_and_test_lists_win():
    ids = [f"c{i:03d}" for i in range(10)]
    s = make_split(_cases(10), 1.0, seed=3, val_ids=ids[:2], official_test=ids[7:])
    assert [case_id(e) for e in s["validation"]] == ids[:2] and [case_id(e) for e in s["test"]] == ids[7:]
    assert sorted(case_id(e) for e in s["labeled"]) == ids[2:7]
    with pytest.raises(ValueError, match=r"ids in both the validation and the test list: \['c007'\]"):
        make_split(_cases(10), 1.0, val_ids=["c007"], official_test=ids[7:])
    with pytest.raises(ValueError, match=r"val_ids \(validation list\) are not labelled cases.*'u1'"):
        make_split(_dataset_with_pool(10, 3), 1.0, val_ids=["u1"])


def test_no_validation_or_no_labelled_case_is_an_error(tmp_path):
    from custom_components.data.splits import SplitError

    with pytest.raises(SplitError, match="no validation case .* --val-fraction > 0 or --val-list"):
        make_split(_cases(10), 1.0, val_fraction=0.0)
    with pytest.raises(SplitError, match="no labelled case left for training"):
        make_split(_cases(2), 1.0)
    p = tmp_path / "datalist.json"
    p.write_text(json.dumps({"cases": [], "unlabeled": [{"image": "imagesTr/u.png"}]}))
    with pytest.raises(SplitError, match=r"datalist\.json: make_split: no labelled case \(1 unlabelled images\)"):
        make_split(p, 1.0)


# ------------------------------------------------------------------------------------------- cross-validation folds
@pytest.mark.parametrize("n_lab", [2, 4, 7, 12, 20])
def test_folds_test_each_labelled_case_once_and_never_an_unlabelled_image(n_lab):
    data = _dataset_with_pool(n_lab, 16)
    folds = make_folds(data, num_folds=5, seed=3)
    assert len(folds) == min(5, n_lab) and [f["fold"] for f in folds] == list(range(len(folds)))
    labelled = sorted(_imgs(data["cases"]))
    tested = [i for f in folds for i in _imgs(f["test"])]
    assert sorted(tested) == labelled  # every labelled case tested exactly once
    sizes = [len(f["test"]) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    pool = sorted(_imgs(data["unlabeled"]))
    for f in folds:
        train = _imgs(f["labeled"]) + _imgs(f["validation"])
        assert not set(_imgs(f["test"])) & set(train)  # the fold's test cases never train
        assert sorted(train + _imgs(f["test"])) == labelled  # the other labelled cases all train
        assert sorted(_imgs(f["unlabeled"])) == pool and not set(pool) & set(_imgs(f["test"]))
        assert all("label" not in e for e in f["unlabeled"]) and f["labeled_ratio"] == 1.0


def test_four_labelled_images_make_four_folds_of_one_without_validation():
    folds = make_folds(_dataset_with_pool(4, 16), num_folds=5, seed=0)
    assert len(folds) == 4 and all(f["num_folds"] == 4 for f in folds)
    assert [len(f["test"]) for f in folds] == [1, 1, 1, 1]
    for f in folds:  # 3 training cases: a carve-out of 1 would be noise, so no selection
        assert f["validation"] == [] and len(f["labeled"]) == 3 and f["selection"] == "last"
    assert fold_filename(4, 2, 0) == "datalist_cv4_f2_s0.json"


def test_fold_validation_carve_out_rule():
    """Validation = round(0.2 x training fold) when that is at least 3 cases, else none (the last checkpoint)."""
    f20 = make_folds(_dataset_with_pool(20, 0), num_folds=5, seed=0)  # 16 train -> 3 validation, 13 labelled
    assert all(len(f["validation"]) == 3 and len(f["labeled"]) == 13 and f["selection"] == "best" for f in f20)
    f10 = make_folds(_dataset_with_pool(10, 0), num_folds=5, seed=0)  # 8 train -> 2 (< 3): none
    assert all(f["validation"] == [] and len(f["labeled"]) == 8 and f["selection"] == "last" for f in f10)
    f10b = make_folds(_dataset_with_pool(10, 0), num_folds=5, seed=0, val_fraction=0.4)  # 8 train -> 3
    assert all(len(f["validation"]) == 3 and f["selection"] == "best" for f in f10b)
    for f in f20:
        assert not set(_imgs(f["validation"])) & set(_imgs(f["test"]) + _imgs(f["labeled"]))


def test_folds_are_deterministic_per_seed():
    data = _dataset_with_pool(9, 5)
    a, b, c = (make_folds(data, seed=s) for s in (1, 1, 2))
    assert a == b and [_imgs(f["test"]) for f in a] != [_imgs(f["test"]) for f in c]
    with pytest.raises(SplitError, match="at least 2"):
        make_folds(_dataset_with_pool(1, 5))

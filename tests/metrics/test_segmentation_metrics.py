"""Per-case metrics under the three protocols, checked against brute-force and MONAI reference computations."""

from __future__ import annotations

import csv
import json
import math
from itertools import product

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from custom_components.metrics import (
    EvaluationProtocol,
    compute_case_metrics,
    format_table,
    get_protocol,
    largest_connected_component,
    resolve_class_names,
    summarize,
    write_reports,
)


def _brute_surface(mask: np.ndarray) -> np.ndarray:
    """Coordinates of voxels of ``mask`` with a face neighbour outside the mask or outside the volume."""
    pts = []
    for idx in zip(*np.nonzero(mask)):
        for axis, step in product(range(mask.ndim), (-1, 1)):
            nb = list(idx)
            nb[axis] += step
            if not (0 <= nb[axis] < mask.shape[axis]) or not mask[tuple(nb)]:
                pts.append(idx)
                break
    return np.asarray(pts, dtype=float)


def _brute_directed(a: np.ndarray, b: np.ndarray, spacing=None) -> np.ndarray:
    sa, sb = _brute_surface(a), _brute_surface(b)
    if spacing is not None:
        sa, sb = sa * np.asarray(spacing), sb * np.asarray(spacing)
    d = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1)


def _two_blobs_3d() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((14, 12, 10), dtype=np.uint8)
    ref[3:10, 2:9, 2:8] = 1
    pred = np.zeros_like(ref)
    pred[4:11, 3:9, 1:7] = 1
    pred[0:2, 0:2, 8:10] = 1  # a small false-positive island touching the border
    pred[6, 5, 4] = 0  # a hole (its walls are surface too)
    return pred, ref


def test_la_uamt_matches_medpy_definitions_by_brute_force() -> None:
    pred, ref = _two_blobs_3d()
    row = compute_case_metrics(pred, ref, num_classes=2, protocol="la_uamt", spacing=(0.6, 0.6, 0.6), case_id="a")
    p, r = pred.astype(bool), ref.astype(bool)
    d_pr, d_rp = _brute_directed(p, r), _brute_directed(r, p)
    inter = float((pred & ref).sum())
    assert row["protocol"] == "la_uamt" and row["distance_unit"] == "voxel"  # spacing ignored: voxels
    assert row["dice_class1"] == pytest.approx(2 * inter / (pred.sum() + ref.sum()))
    assert row["jaccard_class1"] == pytest.approx(inter / ((pred | ref).sum()))
    assert row["hd95_class1"] == pytest.approx(np.percentile(np.concatenate([d_pr, d_rp]), 95), rel=1e-5)
    assert row["asd_class1"] == pytest.approx(d_pr.mean(), rel=1e-5)
    # the medpy conventions differ from MONAI's here, so the test can tell them apart
    assert row["asd_class1"] != pytest.approx(np.concatenate([d_pr, d_rp]).mean(), rel=1e-3)


def test_la_uamt_largest_cc_removes_island() -> None:
    pred, ref = _two_blobs_3d()
    proto = get_protocol("la_uamt", largest_cc=True)
    row = compute_case_metrics(pred, ref, 2, proto)
    kept = largest_connected_component(pred)
    assert not kept[0:2, 0:2, 8:10].any() and kept.sum() == pred.sum() - 8
    d_pr = _brute_directed(kept, ref.astype(bool))
    assert row["protocol"] == "la_uamt"
    assert row["asd_class1"] == pytest.approx(d_pr.mean(), rel=1e-5)
    assert row["pred_class1"] == int(kept.sum())


def test_largest_cc_uses_full_connectivity() -> None:
    m = np.zeros((5, 5), dtype=bool)
    m[1, 1] = m[2, 2] = m[3, 3] = True  # diagonal chain: one component under full connectivity
    m[0, 4] = True
    assert largest_connected_component(m).sum() == 3


def test_largest_cc_equals_the_former_ndimage_version_without_ties() -> None:
    """MONAI's KeepLargestConnectedComponent keeps what the hand-written ndimage version kept (full connectivity,
    2D and 3D); they may differ only where two components tie for the largest."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    compared = 0
    for t in range(120):
        shape = (int(rng.integers(3, 20)), int(rng.integers(3, 20))) if t % 2 else tuple(int(x) for x in
                                                                                      rng.integers(3, 10, 3))
        m = rng.random(shape) < rng.uniform(0.05, 0.6)
        labels, num = ndimage.label(m, ndimage.generate_binary_structure(m.ndim, m.ndim))
        sizes = np.bincount(labels.ravel())[1:]
        if num > 1 and (sizes == sizes.max()).sum() > 1:
            assert largest_connected_component(m).sum() == sizes.max()
            continue
        expected = m if num <= 1 else labels == int(np.argmax(sizes)) + 1
        np.testing.assert_array_equal(largest_connected_component(m), expected)
        compared += 1
    assert compared > 100


def test_clean_matches_monai_in_mm() -> None:
    pred, ref = _two_blobs_3d()
    spacing = (0.5, 1.0, 2.0)
    row = compute_case_metrics(torch.as_tensor(pred), ref, 2, "clean", spacing=spacing)
    assert row["distance_unit"] == "mm" and row["spacing"] == "0.5x1x2"
    yp = torch.as_tensor(pred)[None, None].float()
    yr = torch.as_tensor(ref)[None, None].float()
    yp2, yr2 = torch.cat([1 - yp, yp], 1), torch.cat([1 - yr, yr], 1)
    hd = compute_hausdorff_distance(yp2, yr2, percentile=95, spacing=list(spacing))
    asd = compute_average_surface_distance(yp2, yr2, symmetric=True, spacing=list(spacing))
    assert row["hd95_class1"] == pytest.approx(float(hd[0, 0]), rel=1e-5)
    assert row["asd_class1"] == pytest.approx(float(asd[0, 0]), rel=1e-5)
    # brute force for the symmetric ASD in mm
    d = np.concatenate([_brute_directed(pred, ref, spacing), _brute_directed(ref, pred, spacing)])
    assert row["asd_class1"] == pytest.approx(d.mean(), rel=1e-5)


def test_clean_without_spacing_is_in_voxels() -> None:
    pred, ref = _two_blobs_3d()
    assert compute_case_metrics(pred, ref, 2)["distance_unit"] == "voxel"


def test_paper2d_resizes_and_pools() -> None:
    rng = np.random.default_rng(0)
    rows = []
    ref_all, pred_all = [], []
    for i in range(3):
        ref = np.zeros((128, 128), dtype=np.uint8)
        ref[20 + 5 * i : 90, 30:100 - 3 * i] = 1
        pred = ref.copy()
        pred[rng.integers(0, 128, 200), rng.integers(0, 128, 200)] ^= 1
        ref_all.append(ref)
        pred_all.append(pred)
        rows.append(compute_case_metrics(pred, ref, 2, "paper2d", spacing=(0.1, 0.1), case_id=f"c{i}"))
    s = summarize(rows, 2, "paper2d")
    p, r = np.stack(pred_all).astype(bool), np.stack(ref_all).astype(bool)
    assert s["pooled"]["class1"]["dice"] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()))
    assert s["pooled"]["class1"]["jaccard"] == pytest.approx((p & r).sum() / (p | r).sum())
    assert rows[0]["distance_unit"] == "voxel"  # pixels, spacing ignored
    # a 64x64 case is resized to 128x128 with nearest: areas scale by 4
    small = np.zeros((64, 64), dtype=np.uint8)
    small[10:30, 10:40] = 1
    row = compute_case_metrics(small, small, 2, "paper2d")
    assert row["ref_class1"] == 4 * 20 * 30 and row["dice_class1"] == 1.0 and row["hd95_class1"] == 0.0
    with pytest.raises(ValueError, match="resizes to"):
        compute_case_metrics(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), 2, "paper2d")


def test_multiclass_columns_and_mean() -> None:
    ref = np.zeros((16, 16), dtype=np.uint8)
    ref[2:12, 2:12] = 1
    ref[4:8, 4:8] = 2
    pred = ref.copy()
    pred[4:8, 4:8] = 1  # class 2 missed entirely
    row = compute_case_metrics(pred, ref, 3, class_names={0: "bg", 1: "outer", 2: "inner"})
    assert row["dice_outer"] < 1.0 and row["dice_inner"] == 0.0
    assert row["hd95_inner"] == pytest.approx(math.sqrt(16**2 + 16**2))  # empty prediction -> image diagonal
    assert row["dice_mean"] == pytest.approx((row["dice_outer"] + row["dice_inner"]) / 2)
    assert row["flags"] == "inner:empty_pred"
    s = summarize([row], 3, class_names=["bg", "outer", "inner"])
    assert set(s["metrics"]) == {"outer", "inner", "mean"}


@pytest.mark.parametrize("protocol", ["clean", "la_uamt"])
def test_edge_cases(protocol: str) -> None:
    empty = np.zeros((6, 6, 6), dtype=np.uint8)
    blob = empty.copy()
    blob[1:4, 1:4, 1:4] = 1
    both = compute_case_metrics(empty, empty, 2, protocol)
    assert all(math.isnan(both[f"{m}_class1"]) for m in ("dice", "jaccard", "hd95", "asd"))
    assert both["flags"] == "class1:empty_both"
    for pred, ref, flag in ((empty, blob, "empty_pred"), (blob, empty, "empty_ref")):
        row = compute_case_metrics(pred, ref, 2, protocol)
        assert row["dice_class1"] == 0.0 and row["jaccard_class1"] == 0.0
        assert row["hd95_class1"] == pytest.approx(math.sqrt(3 * 36)) == row["asd_class1"]
        assert row["flags"] == f"class1:{flag}"
    row = compute_case_metrics(empty, blob, 2, get_protocol(protocol, empty_distance="nan"))
    assert math.isnan(row["hd95_class1"]) and row["dice_class1"] == 0.0
    # summary: the empty_both case is left out (n counts the rest) and the flags are reported
    rows = [both, compute_case_metrics(blob, blob, 2, protocol, case_id="ok")]
    both["case"] = "nothing"
    s = summarize(rows, 2, protocol)
    assert s["metrics"]["class1"]["dice"] == {"mean": 1.0, "std": 0.0, "n": 1}
    assert s["flagged_cases"] == {"nothing": "class1:empty_both"} and "empty" in s["empty_cases"]


def test_write_reports_and_table(tmp_path) -> None:
    pred, ref = _two_blobs_3d()
    rows = [
        compute_case_metrics(pred, ref, 2, "la_uamt", case_id="a"),
        compute_case_metrics(np.zeros_like(ref), ref, 2, "la_uamt", case_id="b"),
    ]
    s = summarize(rows, 2, "la_uamt")
    csv_path, json_path = write_reports(rows, s, tmp_path / "out", "la_uamt")
    with open(csv_path) as f:
        read = list(csv.DictReader(f))
    assert [r["case"] for r in read] == ["a", "b"] and {r["protocol"] for r in read} == {"la_uamt"}
    assert float(read[0]["dice_class1"]) == pytest.approx(rows[0]["dice_class1"])
    data = json.loads(json_path.read_text())
    assert data["protocol"] == "la_uamt" and data["summary"]["protocol"] == "la_uamt"
    assert data["protocol_definition"]["hd95"] == "pooled" and len(data["per_case"]) == 2
    assert data["summary"]["metrics"]["class1"]["dice"]["n"] == 2
    table = format_table(s)
    assert "protocol: la_uamt" in table and "class1" in table and "HD95 (voxel)" in table
    with pytest.raises(ValueError, match="write_reports was given 'clean'"):
        write_reports(rows, s, tmp_path / "x", "clean")


def test_invalid_inputs() -> None:
    a = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        compute_case_metrics(a, np.zeros((8, 9)), 2)
    with pytest.raises(ValueError, match="0/255 mask"):
        compute_case_metrics(a + 255, a, 2)
    with pytest.raises(ValueError, match="without channel dimension"):
        compute_case_metrics(np.zeros((1, 2, 8, 8)), np.zeros((1, 2, 8, 8)), 2)
    with pytest.raises(ValueError, match="spacing must have 2 positive values"):
        compute_case_metrics(a, a, 2, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="unknown protocol 'nope'"):
        get_protocol("nope")
    with pytest.raises(ValueError, match="unknown protocol field"):
        get_protocol("clean", bogus=1)
    with pytest.raises(ValueError, match="hd95 must be one of"):
        EvaluationProtocol(name="x", hd95="mean")
    with pytest.raises(ValueError, match="class_names has 1 names"):
        resolve_class_names(2, ["bg"])
    with pytest.raises(ValueError, match="computed under protocol"):
        summarize([compute_case_metrics(a, a, 2, "clean")], 2, "la_uamt")

"""Figures are written, non-empty, of the expected pixel size, and 3D slices are chosen as documented."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from custom_components.visualize import plot_curves, plot_dice_vs_ratio, qualitative_panel, select_slice


def _size(path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        return im.size


def _case_2d(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lab = np.zeros((24, 24), dtype=np.uint8)
    lab[5:18, 6:20] = 1
    lab[9:13, 10:15] = 2
    return rng.random((3, 24, 24)), lab


@pytest.mark.parametrize("mode", ["contour", "mask"])
def test_panel_2d_any_number_of_columns(tmp_path, mode: str) -> None:
    cases = [_case_2d(i) for i in range(2)]
    images = [c[0] for c in cases]  # channel-first RGB
    targets = [c[1] for c in cases]
    preds = [np.roll(t, 2, axis=0) for t in targets]
    uncertainty = [np.random.default_rng(0).random((24, 24)) * 0.5 for _ in cases]
    out = qualitative_panel(
        images,
        {"pseudo-label": preds, "prediction": preds, "target": targets, "uncertainty": uncertainty},
        tmp_path / "p.png",
        titles=["a", "b"],
        mode=mode,
        cell_size=2.0,
        dpi=50,
    )
    assert _size(out) == (5 * 100, 2 * 100)


def test_panel_3d_slice_choice(tmp_path) -> None:
    lab = np.zeros((16, 16, 12), dtype=np.uint8)
    lab[4:10, 4:10, 2:4] = 1
    lab[2:14, 2:14, 3] = 1  # slice 3 holds the most foreground
    assert select_slice([lab]) == 3 and select_slice([lab], "middle") == 6
    assert select_slice([np.zeros_like(lab), lab]) == 3  # first map is empty: next one decides
    img = np.random.default_rng(0).random((1, 16, 16, 12))
    out = qualitative_panel([img], {"prediction": [lab[None]], "target": [lab]}, tmp_path / "q.png", dpi=40)
    assert _size(out) == (int(3 * 2.5 * 40), int(2.5 * 40))


def test_panel_rejects_mismatches(tmp_path) -> None:
    img, lab = _case_2d(0)
    with pytest.raises(ValueError, match="column 'target' has 2 maps for 1 images"):
        qualitative_panel([img], {"target": [lab, lab]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="does not match the overlays' shape"):
        qualitative_panel([img[:, :10]], {"target": [lab]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="mode must be"):
        qualitative_panel([img], {"target": [lab]}, tmp_path / "x.png", mode="fill")


def test_dice_vs_ratio_both_input_forms(tmp_path) -> None:
    results = {
        "supervised": {1: [50.0, 55.0], 5: [70.0, 72.0], 10: {"mean": 80.0, "std": 1.0}},
        "full method": {1: 60.0, 5: [80.0, 82.0], 10: [88.0, 89.0]},
    }
    out = plot_dice_vs_ratio(results, tmp_path / "d.png", upper_bound=91.0, figsize=(5, 3), dpi=80)
    assert _size(out) == (400, 240)
    rows = [{"method": m, "ratio": r, "dice": d} for m in ("cps", "ours") for r in (5, 10) for d in (0.8, 0.9)]
    out2 = plot_dice_vs_ratio(rows, tmp_path / "d2.png", upper_bound={"full": 0.95}, ylabel="Dice", dpi=50)
    assert _size(out2) == (300, 200)
    with pytest.raises(ValueError, match=r"results row 0 lacks \['ratio'\]"):
        plot_dice_vs_ratio([{"method": "a", "dice": 1.0}], tmp_path / "e.png")


def test_curves_from_list_or_dict(tmp_path) -> None:
    hist = [{"loss": 1.0, "loss_cps": 0.5}, {"loss": 0.7, "loss_cps": 0.4, "loss_rec": 0.2}, {"loss": 0.5}]
    assert _size(plot_curves(hist, tmp_path / "c.png", dpi=50)) == (300, 200)
    hist2 = {"train": [1, 0.5, 0.2], "val": [1.1, 0.8]}
    out = plot_curves(hist2, tmp_path / "c2.png", log_y=True, figsize=(4, 4), dpi=50)
    assert _size(out) == (200, 200)
    with pytest.raises(ValueError, match="not in the history"):
        plot_curves(hist, tmp_path / "c3.png", keys=["nope"])


def test_orthogonal_slices_go_through_the_centre_on_every_axis():
    from custom_components.visualize import orthogonal_slices

    v = np.zeros((5, 6, 7))
    v[1, 2, 3] = 1.0
    ax, co, sa = orthogonal_slices(v, (1, 2, 3))
    assert ax.shape == (5, 6) and co.shape == (5, 7) and sa.shape == (6, 7)
    assert ax[1, 2] == co[1, 3] == sa[2, 3] == 1.0
    assert orthogonal_slices(v[None], (1, 2, 3))[1].shape == (1, 5, 7)  # a channel axis stays first
    with pytest.raises(ValueError, match="centre inside it"):
        orthogonal_slices(v, (5, 0, 0))

"""``custom_components.metrics.dice``: the one Dice of hard masks, and the empty case each caller passes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice

from custom_components.engines import dice_per_threshold
from custom_components.engines.pretrain import _fg_dice
from custom_components.metrics import compute_case_metrics, dice_from_counts, label_dice, mask_dice


def test_counts_formula_and_explicit_empty_case():
    assert dice_from_counts(3, 4, 6, empty=1.0) == pytest.approx(0.6)
    assert dice_from_counts(0, 0, 5, empty=1.0) == 0.0  # exactly one side empty: always 0
    assert dice_from_counts(0, 0, 0, empty=1.0) == 1.0
    assert math.isnan(dice_from_counts(0, 0, 0, empty=float("nan")))
    t = dice_from_counts(torch.tensor([3, 0]), torch.tensor([4, 0]), torch.tensor([6, 0]), empty=0.25)
    assert torch.allclose(t, torch.tensor([0.6, 0.25], dtype=torch.float64))


def test_label_dice_matches_monai_on_non_empty_classes():
    g = torch.Generator().manual_seed(0)
    pred, ref = torch.randint(0, 3, (4, 1, 9, 7), generator=g), torch.randint(0, 3, (4, 1, 9, 7), generator=g)
    oh = lambda x: torch.nn.functional.one_hot(x[:, 0], 3).movedim(-1, 1)  # noqa: E731
    expected = compute_dice(oh(pred), oh(ref), include_background=False)
    assert torch.allclose(label_dice(pred, ref, 3, empty=1.0).float(), expected.float(), atol=1e-6)
    with pytest.raises(ValueError, match="differs"):
        mask_dice(pred[:2] > 0, ref > 0, empty=1.0)


def test_callers_agree_except_the_documented_empty_case():
    """Selection, phase-1 monitoring and the test report give the same Dice on a non-empty case, and differ
    only where prediction and reference are both empty (1 for selection/monitoring, NaN in the report)."""
    y = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    y[0, 0, 2:6, 2:6] = 1  # case 0 has foreground, case 1 is empty
    pred = torch.zeros_like(y)
    pred[0, 0, 3:7, 3:7] = 1
    probs = torch.cat([1.0 - pred.float(), pred.float()], 1)
    sel = dice_per_threshold(probs, y, None)[:, 0]
    mon = _fg_dice(pred, y, 2)
    rep = [compute_case_metrics(pred[i, 0].numpy(), y[i, 0].numpy(), 2)["dice_class1"] for i in range(2)]
    assert sel[0].item() == pytest.approx(rep[0]) == pytest.approx(mon[0].item()) == pytest.approx(2 * 9 / 32)
    assert sel[1].item() == 1.0 and mon[1].item() == 1.0 and np.isnan(rep[1])

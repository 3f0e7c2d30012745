"""Tests of the pseudo-label transforms, on 2D and 3D, binary and multi-class."""

from __future__ import annotations

import pytest
import torch

from custom_components.transforms.pseudolabel import ConfidenceScore, ConfidenceScored
from custom_components.transforms.uncertainty import PredictiveEntropy

CASES = [(2, 2), (2, 3), (3, 2), (3, 4)]  # (spatial_dims, num_classes)
IDS = ["2d-binary", "2d-multiclass", "3d-binary", "3d-multiclass"]


def _probs(dims: int, k: int, seed: int = 0, sharp: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = sharp * torch.randn((k,) + (6,) * dims, generator=g)
    return logits.softmax(0)


@pytest.mark.parametrize("dims,k", CASES, ids=IDS)
def test_confidence_score_modes(dims, k):
    p = _probs(dims, k)
    pmax, arg = p.max(0)
    fg = arg != 0
    assert ConfidenceScore()(p) == pytest.approx(float(pmax[fg].mean()), rel=1e-6)
    assert ConfidenceScore("mean_max_prob")(p) == pytest.approx(float(pmax.mean()), rel=1e-6)
    ent = PredictiveEntropy()(p)
    assert ConfidenceScore("one_minus_entropy")(p) == pytest.approx(1 - float(ent.mean()), rel=1e-5)
    # a one-hot prediction is fully confident, a uniform one minimally
    onehot = torch.nn.functional.one_hot(arg, k).movedim(-1, 0).float()
    for mode in ("foreground_max_prob", "mean_max_prob", "one_minus_entropy"):
        assert ConfidenceScore(mode)(onehot) == pytest.approx(1.0)
    uniform = torch.full_like(p, 1.0 / k)
    assert ConfidenceScore()(uniform) == pytest.approx(1.0 / k)  # no foreground: whole image
    assert ConfidenceScore("one_minus_entropy")(uniform) == pytest.approx(0.0, abs=1e-6)
    d = ConfidenceScored("pred", output_key="conf")({"pred": p})
    assert isinstance(d["conf"], float) and d["conf"] == ConfidenceScore()(p)


def test_confidence_score_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        ConfidenceScore("max")
    with pytest.raises(ValueError, match=r"expected channel-first probabilities \(K >= 2"):
        ConfidenceScore()(torch.rand(1, 4, 4))

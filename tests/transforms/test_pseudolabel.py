"""Tests of the pseudo-label transforms, on 2D and 3D, binary and multi-class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted

from custom_components.transforms.pseudolabel import (
    ConfidenceScore,
    ConfidenceScored,
    ConfidenceThreshold,
    ConfidenceThresholdd,
    LabelToOneHot,
    LabelToOneHotd,
    MaskUncertain,
    MaskUncertaind,
    OneHotToLabel,
    OneHotToLabeld,
)
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


@pytest.mark.parametrize("dims,k", CASES, ids=IDS)
@pytest.mark.parametrize("as_numpy", [False, True])
def test_confidence_threshold(dims, k, as_numpy):
    label = torch.randint(0, k, (1,) + (5,) * dims, dtype=torch.uint8)
    lab = label.numpy() if as_numpy else label
    t = ConfidenceThreshold(0.8)
    assert t(lab, 0.8) is lab  # at the threshold: kept as is
    dropped = t(lab, torch.tensor(0.79))
    assert dropped.shape == lab.shape and (np.asarray(dropped) == -1).all()
    assert (np.asarray(lab) == label.numpy()).all(), "input must not be modified"
    # dictionary: flag only
    d = ConfidenceThresholdd("label", threshold=0.8)({"label": lab, "score": 0.5})
    assert d["confident"] is False and d["label"] is lab
    # dictionary: drop
    d = ConfidenceThresholdd("label", threshold=0.8, mode="drop", ignore_value=-1)({"label": lab, "score": 0.5})
    assert d["confident"] is False and (np.asarray(d["label"]) == -1).all()
    d = ConfidenceThresholdd("label", threshold=0.8, mode="drop")({"label": lab, "score": 0.9})
    assert d["confident"] is True and d["label"] is lab
    # a human label (no score) is always kept
    d = ConfidenceThresholdd("label", threshold=0.8, mode="drop")({"label": lab})
    assert d["confident"] is True and d["label"] is lab


def test_confidence_threshold_errors():
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        ConfidenceThreshold(1.5)
    with pytest.raises(ValueError, match="mode must be 'flag' or 'drop'"):
        ConfidenceThresholdd(mode="remove")
    with pytest.raises(ValueError, match="score must be finite"):
        ConfidenceThreshold(0.5).is_confident(float("nan"))


@pytest.mark.parametrize("dims,k", CASES, ids=IDS)
def test_mask_uncertain(dims, k):
    p = _probs(dims, k, sharp=1.5)
    label = p.argmax(0, keepdim=True).to(torch.uint8)
    unc = PredictiveEntropy()(p)
    out = MaskUncertain(0.5)(label, unc)
    bad = unc > 0.5
    assert bad.any() and (~bad).any(), "fixture must have both certain and uncertain voxels"
    assert out.dtype == torch.int64 and (out[bad] == -1).all() and torch.equal(out[~bad], label[~bad].long())
    out = MaskUncertain(0.7, criterion="max_prob", ignore_value=255)(label.long(), p)
    low = p.max(0, keepdim=True).values < 0.7
    assert (out[low] == 255).all() and torch.equal(out[~low], label[~low].long())
    # dictionary version, MetaTensor meta kept
    meta_label = MetaTensor(label.float(), meta={"filename_or_obj": "case.png"})
    d = MaskUncertaind("label", ref_key="uncertainty", threshold=0.5)({"label": meta_label, "uncertainty": unc})
    assert isinstance(d["label"], MetaTensor) and d["label"].meta["filename_or_obj"] == "case.png"
    assert (d["label"][bad] == -1).all()
    assert torch.equal(meta_label, label.float()), "input must not be modified"


def test_mask_uncertain_errors():
    p = _probs(2, 3)
    lab = p.argmax(0, keepdim=True)
    with pytest.raises(ValueError, match="criterion must be"):
        MaskUncertain(0.5, criterion="entropy")
    with pytest.raises(ValueError, match="uncertainty map must have one channel"):
        MaskUncertain(0.5)(lab, p)
    with pytest.raises(ValueError, match="spatial shapes differ"):
        MaskUncertain(0.5)(lab, torch.rand(1, 3, 3))
    with pytest.raises(KeyError, match="reference key 'uncertainty' not in the data"):
        MaskUncertaind("label")({"label": lab})


@pytest.mark.parametrize("dims,k", CASES, ids=IDS)
def test_onehot_roundtrip_matches_monai_and_keeps_ignored(dims, k):
    label = torch.randint(0, k, (1,) + (5,) * dims)
    onehot = LabelToOneHot(k)(label)
    ref = AsDiscreted("l", to_onehot=k)({"l": label})["l"]
    assert torch.equal(torch.as_tensor(onehot), torch.as_tensor(ref).float()), "same as MONAI without ignored voxels"
    assert torch.equal(OneHotToLabel()(onehot), label)
    p = _probs(dims, k)
    assert torch.equal(torch.as_tensor(OneHotToLabel(ignore_value=None)(p)),
                       torch.as_tensor(AsDiscreted("p", argmax=True)({"p": p})["p"]).long())
    # ignored voxels survive the round trip
    label[(0,) + (slice(0, 2),) * dims] = -1
    onehot = LabelToOneHotd("label", num_classes=k)({"label": label})["label"]
    assert onehot.shape == (k,) + (5,) * dims
    assert (onehot[(slice(None),) + (slice(0, 2),) * dims] == 0).all()
    back = OneHotToLabeld("label")({"label": onehot})["label"]
    assert torch.equal(back, label)


def test_onehot_errors():
    with pytest.raises(ValueError, match=r"label values \[3\] outside \[0, 3\)"):
        LabelToOneHot(3)(torch.tensor([[[0, 3]]]))
    with pytest.raises(ValueError, match="one-channel class-index map"):
        LabelToOneHot(3)(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        LabelToOneHot(1)

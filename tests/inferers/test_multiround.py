"""Tests of the phase-3 multi-round pseudo-label inferer."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from custom_components.inferers.multiround import MultiRoundPseudoLabelInferer, multi_round_probabilities
from custom_components.networks import DiffusionTeacher


def _teacher(dims: int, k: int = 2, c: int = 1) -> DiffusionTeacher:
    torch.manual_seed(0)
    t = DiffusionTeacher(dims, c, k, channels=(8, 16), norm_num_groups=4, num_train_timesteps=100,
                         infer_timestep=50).eval()
    with torch.no_grad():  # non-zero output convolutions, so the rounds actually change the probabilities
        for p in t.parameters():
            if p.ndim > 1 and not bool(p.any()):
                p.normal_(0, 0.1)
    return t


@pytest.mark.parametrize("dims,k", [(2, 2), (2, 3), (3, 2)])
def test_mean_of_pt_and_rounds(dims, k):
    teacher = _teacher(dims, k)
    x = torch.randn((2, 1) + (8,) * dims)
    inferer = MultiRoundPseudoLabelInferer(rounds=2, seed=3)
    out = inferer(x, teacher)
    assert out.shape == (2, k) + (8,) * dims
    torch.testing.assert_close(out.sum(1), torch.ones_like(out[:, 0]))
    torch.testing.assert_close(out, inferer(x, teacher))  # deterministic
    # by hand: P_T and two independent rounds conditioned on P_T
    from custom_components.networks.teacher import make_noise

    p_t, _ = teacher.predict(x, timestep=50, seed=3)
    total = p_t.clone()
    for j in (1, 2):
        noise = make_noise((1, *x.shape[1:]), 3 + 1000 + j, x.device, x.dtype).expand_as(x)
        with torch.no_grad():
            rec = teacher.reconstruct(x, 2 * p_t - 1, 50, noise)
        total += teacher.predict(rec.x0_hat, timestep=50, seed=3)[0]
    torch.testing.assert_close(out, total / 3)
    # R = 0 is P_T alone; chained differs from independent
    torch.testing.assert_close(MultiRoundPseudoLabelInferer(rounds=0, seed=3)(x, teacher), p_t)
    chained = multi_round_probabilities(teacher, x, rounds=2, round_mode="chained", seed=3)
    assert not torch.allclose(chained, out)


def test_sliding_window_wraps_multi_round():
    teacher = _teacher(3)
    x = torch.randn(1, 1, 12, 10, 8)  # not a multiple of the window: padded by the sliding window
    sw = SlidingWindowInferer(roi_size=(8, 8, 8), sw_batch_size=1, overlap=0.25)
    out = MultiRoundPseudoLabelInferer(rounds=1, window_inferer=sw)(x, teacher)
    assert out.shape == (1, 2, 12, 10, 8)
    torch.testing.assert_close(out.sum(1), torch.ones_like(out[:, 0]))


def test_errors():
    teacher = _teacher(2, c=3)
    with pytest.raises(ValueError, match="rounds must be >= 0"):
        MultiRoundPseudoLabelInferer(rounds=-1)
    with pytest.raises(ValueError, match="round_mode must be 'independent' or 'chained'"):
        MultiRoundPseudoLabelInferer(round_mode="serial")
    with pytest.raises(ValueError, match="round_mode must be 'independent' or 'chained', got 'serial'"):
        multi_round_probabilities(teacher, torch.randn(1, 3, 8, 8), rounds=1, round_mode="serial")
    with pytest.raises(ValueError, match=r"has 1 channel\(s\) but the teacher expects in_channels=3"):
        MultiRoundPseudoLabelInferer()(torch.randn(1, 1, 8, 8), teacher)
    with pytest.raises(ValueError, match="expected a 2D batch"):
        MultiRoundPseudoLabelInferer()(torch.randn(1, 3, 8, 8, 8), teacher)
    with pytest.raises(ValueError, match="every spatial size must be a multiple of 2"):
        MultiRoundPseudoLabelInferer()(torch.randn(1, 3, 9, 8), teacher)
    with pytest.raises(ValueError, match=r"timestep 100 outside \[0, 100\)"):
        MultiRoundPseudoLabelInferer(recon_timestep=100)(torch.randn(1, 3, 8, 8), teacher)
    with pytest.raises(TypeError, match="needs a DiffusionTeacher"):
        MultiRoundPseudoLabelInferer()(torch.randn(1, 3, 8, 8), torch.nn.Identity())

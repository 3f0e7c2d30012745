"""Tests for ``custom_components.networks.deployable.MaskPathwaySegmenter`` (METHOD.md, "Model selection"):
the deployable ``image -> class probabilities`` network with its noise, ``t`` and threshold fixed inside."""

from __future__ import annotations

import math

import pytest
import torch

from custom_components.networks import DiffusionTeacher, MaskPathwaySegmenter

torch.set_num_threads(1)

SIZE = 16
TINY = dict(channels=(8, 16), norm_num_groups=4)


def perturb_(module: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Seeded noise on every parameter (MONAI zero-initialises the UNet's output layer, which would make every
    output uniform and every comparison trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def tiny_teacher(dims: int, c: int, k: int, **kw) -> DiffusionTeacher:
    torch.manual_seed(0)
    return perturb_(DiffusionTeacher(dims, c, k, **TINY, **kw)).eval()


def images(dims: int, c: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, c, *([SIZE] * dims), generator=g)


@pytest.mark.parametrize("dims,c,k", [(2, 3, 2), (2, 1, 4), (3, 1, 2)], ids=["2d-C3-K2", "2d-C1-K4", "3d-C1-K2"])
@pytest.mark.parametrize("num_draws", [1, 2])
def test_wrapping_teacher_mask_net_equals_teacher_predict(dims: int, c: int, k: int, num_draws: int) -> None:
    teacher = tiny_teacher(dims, c, k, infer_timestep=300, infer_seed=7)
    seg = MaskPathwaySegmenter(
        dims, c, k, **TINY, mask_net=teacher.mask_net, timestep=300, seed=7, num_draws=num_draws
    ).eval()
    assert seg.mask_net is teacher.mask_net  # shared, not copied
    x = images(dims, c)
    with torch.no_grad():
        out = seg(x)
    expected, _ = teacher.predict(x, num_draws=num_draws)
    assert out.shape == (2, k, *x.shape[2:])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_output_is_seeded_and_seed_dependent() -> None:
    teacher = tiny_teacher(2, 1, 2)
    x = images(2, 1)
    seg0 = MaskPathwaySegmenter(2, 1, 2, **TINY, mask_net=teacher.mask_net, seed=0).eval()
    seg1 = MaskPathwaySegmenter(2, 1, 2, **TINY, mask_net=teacher.mask_net, seed=1).eval()
    with torch.no_grad():
        torch.manual_seed(1)
        a = seg0(x)
        torch.manual_seed(2)
        b = seg0(x)
        c = seg1(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_output_is_batch_invariant() -> None:
    teacher = tiny_teacher(2, 3, 2)
    seg = MaskPathwaySegmenter(2, 3, 2, **TINY, mask_net=teacher.mask_net, num_draws=2).eval()
    a, b = images(2, 3, batch=1, seed=3), images(2, 3, batch=1, seed=4)
    with torch.no_grad():
        alone = seg(a)
        pair = seg(torch.cat([b, a]))
    torch.testing.assert_close(pair[1:], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(pair[0], pair[1], atol=1e-3)


@pytest.mark.parametrize("thr", [0.2, 0.5, 0.73])
def test_folded_threshold_makes_argmax_equal_thresholding_raw_foreground(thr: float) -> None:
    teacher = tiny_teacher(2, 1, 2)
    x = images(2, 1, batch=2)
    raw = MaskPathwaySegmenter(2, 1, 2, **TINY, mask_net=teacher.mask_net).eval()
    folded = MaskPathwaySegmenter(2, 1, 2, **TINY, mask_net=teacher.mask_net, threshold=thr).eval()
    with torch.no_grad():
        p_raw = raw(x)[:, 1]
        p_folded = folded(x)
    assert folded.threshold == pytest.approx(thr, abs=1e-6)
    assert float(folded.fg_logit_offset) == pytest.approx(math.log(thr / (1 - thr)), abs=1e-6)
    torch.testing.assert_close(p_folded.sum(1), torch.ones_like(p_raw))
    # away from the decision boundary (measure zero, float rounding) argmax equals raw >= thr
    safe = (p_raw - thr).abs() > 1e-5
    assert torch.equal((p_folded.argmax(1) == 1)[safe], (p_raw >= thr)[safe])
    # the threshold is really used: both classes occur in this example, and it changes the decision for some
    # voxels unless it is 0.5
    assert 0 < (p_raw >= thr).float().mean() < 1 or thr == 0.5
    if thr != 0.5:
        assert not torch.equal(p_folded.argmax(1), p_raw.ge(0.5).long())


def test_threshold_is_ignored_for_multiclass() -> None:
    seg = MaskPathwaySegmenter(2, 1, 4, **TINY, threshold=0.3)
    assert float(seg.fg_logit_offset) == 0.0


@pytest.mark.parametrize("thr", [0.0, 1.0, -0.1])
def test_invalid_threshold_rejected(thr: float) -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        MaskPathwaySegmenter(2, 1, 2, **TINY, threshold=thr)


def test_state_dict_carries_offset_and_loads_with_weights_only(tmp_path) -> None:
    teacher = tiny_teacher(2, 3, 2)
    seg = MaskPathwaySegmenter(2, 3, 2, **TINY, mask_net=teacher.mask_net, threshold=0.3).eval()
    sd = seg.state_dict()
    assert "fg_logit_offset" in sd
    path = tmp_path / "model.pt"
    torch.save(sd, path)
    loaded = torch.load(path, weights_only=True)
    fresh = MaskPathwaySegmenter(2, 3, 2, **TINY).eval()
    assert fresh.threshold == pytest.approx(0.5)
    fresh.load_state_dict(loaded)
    assert fresh.threshold == pytest.approx(0.3, abs=1e-6)
    x = images(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), seg(x))


@pytest.mark.parametrize(
    "shape,msg",
    [
        ((2, 1, 16, 16), r"expected images of shape \(B, 3, \*, \*\), got \(2, 1, 16, 16\)"),
        ((2, 3, 16, 16, 16), r"expected images of shape \(B, 3, \*, \*\), got \(2, 3, 16, 16, 16\)"),
        ((2, 3, 15, 16), r"multiple of 2"),
    ],
)
def test_forward_rejects_wrong_input(shape: tuple, msg: str) -> None:
    seg = MaskPathwaySegmenter(2, 3, 2, **TINY)
    with pytest.raises(ValueError, match=msg):
        seg(torch.zeros(shape))


def test_num_draws_must_be_positive() -> None:
    with pytest.raises(ValueError, match="num_draws must be >= 1, got 0"):
        MaskPathwaySegmenter(2, 1, 2, **TINY, num_draws=0)


def test_torchscript_trace_is_seeded_and_matches_eager() -> None:
    """deployable.py's docstring and METHOD.md: TorchScript export uses the model like any segmentation network,
    so the exported graph must keep the fixed, seeded noise (``torch.jit.script`` is impossible: MONAI's
    ``DiffusionModelUNet`` does not script, so tracing is the export route)."""
    import warnings

    teacher = tiny_teacher(2, 1, 2)
    seg = MaskPathwaySegmenter(2, 1, 2, **TINY, mask_net=teacher.mask_net, threshold=0.4).eval()
    x = images(2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(seg, x, check_trace=False)
    with torch.no_grad():
        first, second, eager = traced(x), traced(x), seg(x)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, eager, atol=1e-5, rtol=1e-5)

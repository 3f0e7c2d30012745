"""Tests for ``custom_components.networks.deployable.MaskPathwaySegmenter`` (METHOD.md, "Model selection"):
the deployable ``image -> class probabilities`` network with its noise, ``t`` and threshold fixed inside."""

from __future__ import annotations

import pytest
import torch

from custom_components.networks import BACKBONES, DiffusionTeacher, MaskPathwaySegmenter

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
@pytest.mark.parametrize("backbone", BACKBONES)
def test_wrapping_teacher_mask_net_equals_teacher_predict(dims: int, c: int, k: int, num_draws: int,
                                                          backbone: str) -> None:
    teacher = tiny_teacher(dims, c, k, infer_timestep=300, infer_seed=7, backbone=backbone)
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


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_is_batch_invariant(backbone: str) -> None:
    teacher = tiny_teacher(2, 3, 2, backbone=backbone)
    seg = MaskPathwaySegmenter(2, 3, 2, **TINY, mask_net=teacher.mask_net, num_draws=2).eval()
    a, b = images(2, 3, batch=1, seed=3), images(2, 3, batch=1, seed=4)
    with torch.no_grad():
        alone = seg(a)
        pair = seg(torch.cat([b, a]))
    torch.testing.assert_close(pair[1:], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(pair[0], pair[1], atol=1e-3)


def test_returns_the_networks_probabilities_unchanged() -> None:
    """No threshold is folded in: the output is softmax of the mask pathway's logits for the fixed noise and t,
    so an uncertainty map computed from it reflects the network (a raw 0.02 stays 0.02)."""
    from custom_components.networks.teacher import draw_noise, segment_noised_background

    teacher = tiny_teacher(2, 1, 2)
    seg = MaskPathwaySegmenter(2, 1, 2, **TINY, mask_net=teacher.mask_net, timestep=300, seed=5).eval()
    x = images(2, 1, batch=2)
    with torch.no_grad():
        t = torch.full((2,), 300, dtype=torch.long)
        noise = draw_noise(x, 2, range(5, 6))
        expected = segment_noised_background(teacher.mask_net, seg.scheduler, x, 2, t, noise).float().softmax(1)
        out = seg(x)
    torch.testing.assert_close(out, expected)
    assert not hasattr(seg, "fg_logit_offset") and "fg_logit_offset" not in seg.state_dict()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_state_dict_loads_with_weights_only(tmp_path, backbone: str) -> None:
    teacher = tiny_teacher(2, 3, 2, backbone=backbone)
    seg = MaskPathwaySegmenter(2, 3, 2, **TINY, mask_net=teacher.mask_net).eval()
    path = tmp_path / "model.pt"
    torch.save(seg.state_dict(), path)
    fresh = MaskPathwaySegmenter(2, 3, 2, **TINY, backbone=backbone).eval()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = images(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), seg(x))


@pytest.mark.parametrize("num_draws", [1, 2])
def test_ddim_sampler_equals_the_teachers_ddim_and_differs_from_one_pass(num_draws: int) -> None:
    """``sampler="ddim"`` runs the teacher's DDIM refinement (one implementation, ``teacher.ddim_segment``): with one
    draw it is ``predict_ddim`` exactly; draw ``i`` of an ensemble is ``predict_ddim`` with seed ``seed + i``."""
    teacher = tiny_teacher(2, 3, 2, infer_seed=4)
    ddim = MaskPathwaySegmenter(2, 3, 2, **TINY, mask_net=teacher.mask_net, seed=4, num_draws=num_draws,
                                sampler="ddim", ddim_steps=4).eval()
    one = MaskPathwaySegmenter(2, 3, 2, **TINY, mask_net=teacher.mask_net, seed=4, num_draws=num_draws).eval()
    x = images(2, 3)
    with torch.no_grad():
        out = ddim(x)
        expected = torch.stack([teacher.predict_ddim(x, num_steps=4, seed=4 + i) for i in range(num_draws)]).mean(0)
        other_steps = MaskPathwaySegmenter(2, 3, 2, **TINY, mask_net=teacher.mask_net, seed=4, num_draws=num_draws,
                                           sampler="ddim", ddim_steps=2).eval()(x)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(out, one(x), atol=1e-3)
        assert not torch.allclose(out, other_steps, atol=1e-3)
    torch.testing.assert_close(out.sum(1), torch.ones(2, SIZE, SIZE))
    assert set(ddim.state_dict()) == set(one.state_dict())  # the same model.pt serves every sampler


@pytest.mark.parametrize("backbone", BACKBONES)
def test_ddim_sampler_traces_at_any_size(backbone: str) -> None:
    """TorchScript export of the deployable model traces (MONAI's DiffusionModelUNet cannot be scripted): the DDIM
    loop is unrolled over fixed timesteps and the seeded noise is computed in the graph, so a model traced at one
    size predicts what the eager model does at another."""
    teacher = tiny_teacher(2, 1, 2, backbone=backbone)
    seg = MaskPathwaySegmenter(2, 1, 2, **TINY, mask_net=teacher.mask_net, sampler="ddim", ddim_steps=3).eval()
    traced = torch.jit.trace(seg, images(2, 1, batch=1), check_trace=False)
    x = torch.randn(2, 1, 2 * SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        torch.testing.assert_close(traced(x), seg(x), atol=1e-5, rtol=1e-5)


def test_bad_sampler_settings_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"sampler must be one of \['one_pass', 'ddim'\], got 'ensemble'"):
        MaskPathwaySegmenter(2, 1, 2, **TINY, sampler="ensemble")
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        MaskPathwaySegmenter(2, 1, 2, **TINY, sampler="ddim", ddim_steps=0)
    with pytest.raises(ValueError, match=r"timestep must be in \[0, 1000\), got 1000"):
        MaskPathwaySegmenter(2, 1, 2, **TINY, timestep=1000)

"""Tests for ``custom_components.networks.teacher.DiffusionTeacher`` against METHOD.md ("The teacher").

Covers output shapes of every pathway (2D/3D, K = 2/4, 1/3 image channels), the clean-image recovery formula
against MONAI's own scheduler, seeded inference (reproducible, seed-dependent, batch-invariant) and the input
checks with their messages.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from custom_components.networks import BACKBONES, DiffusionTeacher, background_mask
from custom_components.networks.teacher import check_spatial_size, normalized_entropy

torch.set_num_threads(1)

SIZE = 16
BATCH = 2
TINY = dict(channels=(8, 16), norm_num_groups=4)

# (spatial_dims, in_channels, num_classes): 2D and 3D, binary and multi-class, grey and RGB.
CONFIGS = [(2, 1, 2), (2, 3, 4), (3, 1, 2), (3, 1, 4)]
CONFIG_IDS = [f"{d}d-C{c}-K{k}" for d, c, k in CONFIGS]

_CACHE: dict[tuple[int, int, int, str], DiffusionTeacher] = {}


def perturb_(module: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Add seeded noise to every parameter: MONAI zero-initialises the UNet's output convolution, so an untouched
    network returns 0 everywhere and every input would give the same (uniform) probabilities."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def tiny_teacher(spatial_dims: int, in_channels: int, num_classes: int,
                 backbone: str = "diffusion_unet") -> DiffusionTeacher:
    """A tiny teacher in eval mode with non-trivial weights, built once per configuration (tests here never
    change its weights)."""
    key = (spatial_dims, in_channels, num_classes, backbone)
    if key not in _CACHE:
        torch.manual_seed(0)
        _CACHE[key] = perturb_(DiffusionTeacher(spatial_dims, in_channels, num_classes, **TINY,
                                                backbone=backbone)).eval()
    return _CACHE[key]


def images(spatial_dims: int, in_channels: int, batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, in_channels, *([SIZE] * spatial_dims), generator=g)


# ---------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("dims,c,k", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_segment_returns_k_channel_logits(dims: int, c: int, k: int, backbone: str) -> None:
    teacher = tiny_teacher(dims, c, k, backbone)
    x = images(dims, c)
    with torch.no_grad():
        logits = teacher.segment(x)
        fixed = teacher.segment(x, t=500, noise=teacher.fixed_noise(x))
    assert logits.shape == (BATCH, k, *x.shape[2:])
    assert fixed.shape == logits.shape
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("dims,c,k", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_reconstruct_shapes_and_per_sample_loss(dims: int, c: int, k: int, backbone: str) -> None:
    teacher = tiny_teacher(dims, c, k, backbone)
    x = images(dims, c)
    mask = 2 * torch.rand(BATCH, k, *x.shape[2:]) - 1
    noise = torch.randn_like(x)
    with torch.no_grad():
        rec = teacher.reconstruct(x, mask, t=300, noise=noise)
    assert rec.eps_hat.shape == x.shape
    assert rec.x0_hat.shape == x.shape
    assert rec.loss.shape == (BATCH,)
    # L_rec = mean((eps - eps_hat)^2), per sample
    expected = ((rec.eps_hat - noise) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(rec.loss, expected)


@pytest.mark.parametrize("dims,c,k", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("num_draws", [1, 3])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_predict_probabilities_and_uncertainty(dims: int, c: int, k: int, num_draws: int, backbone: str) -> None:
    teacher = tiny_teacher(dims, c, k, backbone)
    x = images(dims, c)
    probs, unc = teacher.predict(x, num_draws=num_draws)
    assert probs.shape == (BATCH, k, *x.shape[2:])
    assert unc.shape == (BATCH, 1, *x.shape[2:])
    assert (probs >= 0).all() and (probs <= 1).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(BATCH, *x.shape[2:]))
    assert (unc >= -1e-6).all() and (unc <= 1 + 1e-6).all()
    torch.testing.assert_close(unc, normalized_entropy(probs))


def test_predict_chunked_equals_one_pass() -> None:
    teacher = tiny_teacher(2, 1, 2)
    x = images(2, 1, batch=3)
    full = teacher.predict(x, num_draws=2)
    chunked = teacher.predict(x, num_draws=2, chunk_size=2)
    torch.testing.assert_close(full[0], chunked[0], atol=1e-5, rtol=1e-5)


def test_predict_rejects_zero_draws() -> None:
    teacher = tiny_teacher(2, 1, 2)
    with pytest.raises(ValueError, match="num_draws must be >= 1, got 0"):
        teacher.predict(images(2, 1), num_draws=0)


@pytest.mark.parametrize("dims,c,k", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_predict_ddim_returns_probabilities(dims: int, c: int, k: int, backbone: str) -> None:
    teacher = tiny_teacher(dims, c, k, backbone)
    x = images(dims, c)
    probs = teacher.predict_ddim(x, num_steps=3)
    assert probs.shape == (BATCH, k, *x.shape[2:])
    torch.testing.assert_close(probs.sum(1), torch.ones(BATCH, *x.shape[2:]))
    # seeded, so reproducible; start_timestep below every DDIM step still runs one step
    torch.testing.assert_close(probs, teacher.predict_ddim(x, num_steps=3))
    low = teacher.predict_ddim(x, num_steps=3, start_timestep=5)
    assert low.shape == probs.shape
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        teacher.predict_ddim(x, num_steps=0)


def test_background_mask_is_scaled_one_hot_of_class_zero() -> None:
    x = images(2, 3)
    m = background_mask(x, 4)
    assert m.shape == (BATCH, 4, SIZE, SIZE)
    assert (m[:, 0] == 1).all() and (m[:, 1:] == -1).all()


def test_segment_noises_the_background_mask_with_the_scheduler() -> None:
    """``segment`` feeds ``concat[add_noise(m_bg, eps, t), x]`` and ``t`` to the mask pathway."""
    teacher = tiny_teacher(2, 3, 2)
    x = images(2, 3)
    seen = {}

    def spy(inp: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        seen["inp"], seen["t"] = inp, timesteps
        return inp[:, :2]

    eps = torch.randn(BATCH, 2, SIZE, SIZE)
    teacher.segment(x, t=123, noise=eps, mask_net=spy)
    expected_mt = teacher.scheduler.add_noise(background_mask(x, 2), eps, torch.full((BATCH,), 123))
    torch.testing.assert_close(seen["inp"][:, :2], expected_mt)
    torch.testing.assert_close(seen["inp"][:, 2:], x)
    assert seen["t"].tolist() == [123, 123]


# ---------------------------------------------------------------------------------------------------- x0_hat
@pytest.mark.parametrize("dims,c,k", [(2, 3, 2), (3, 1, 4)], ids=["2d-C3-K2", "3d-C1-K4"])
@pytest.mark.parametrize("t", [10, 500, 900])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_x0_hat_equals_ddpm_scheduler_predicted_original_sample(dims: int, c: int, k: int, t: int,
                                                                backbone: str) -> None:
    teacher = tiny_teacher(dims, c, k, backbone)
    x = images(dims, c)
    mask = 2 * torch.rand(BATCH, k, *x.shape[2:]) - 1
    noise = torch.randn_like(x)
    with torch.no_grad():
        rec = teacher.reconstruct(x, mask, t=t, noise=noise)
    x_t = teacher.scheduler.add_noise(x, noise, torch.full((BATCH,), t, dtype=torch.long))
    # MONAI's own formula: a fresh scheduler of the same schedule, epsilon prediction, no clipping
    ref = DDPMScheduler(num_train_timesteps=1000, schedule=teacher.schedule, clip_sample=False)
    _, pred_original = ref.step(rec.eps_hat, t, x_t)
    torch.testing.assert_close(rec.x0_hat, pred_original, atol=1e-4, rtol=1e-4)
    # and by hand: (z_t - sqrt(1 - abar) eps_hat) / sqrt(abar)
    abar = ref.alphas_cumprod[t].double()
    by_hand = (x_t.double() - (1 - abar).sqrt() * rec.eps_hat.double()) / abar.sqrt()
    torch.testing.assert_close(rec.x0_hat.double(), by_hand, atol=1e-4, rtol=1e-4)


def test_x0_hat_recovers_the_clean_image_from_the_true_noise() -> None:
    """With a perfect noise estimate (``eps_hat = eps``) the formula returns ``x`` itself."""
    x = images(2, 1)
    noise = torch.randn_like(x)

    class Oracle(torch.nn.Module):
        def forward(self, inp: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            return noise

    oracle_teacher = DiffusionTeacher(2, 1, 2, **TINY, image_net=Oracle())
    rec = oracle_teacher.reconstruct(x, background_mask(x, 2), t=400, noise=noise)
    torch.testing.assert_close(rec.x0_hat, x, atol=1e-4, rtol=1e-4)
    assert rec.loss.abs().max() == 0


# ---------------------------------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("backbone", BACKBONES)
def test_predict_is_seeded_and_repeatable(backbone: str) -> None:
    teacher = tiny_teacher(2, 3, 2, backbone)
    x = images(2, 3)
    torch.manual_seed(123)
    a, ua = teacher.predict(x, num_draws=2)
    torch.manual_seed(456)  # the global RNG must not matter
    b, ub = teacher.predict(x, num_draws=2)
    assert torch.equal(a, b) and torch.equal(ua, ub)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_predict_depends_on_seed_and_timestep(backbone: str) -> None:
    teacher = tiny_teacher(2, 3, 2, backbone)
    x = images(2, 3)
    base, _ = teacher.predict(x, seed=0)
    other_seed, _ = teacher.predict(x, seed=1)
    other_t, _ = teacher.predict(x, timestep=100)
    assert not torch.allclose(base, other_seed)
    assert not torch.allclose(base, other_t)
    # the default seed / timestep are the configured ones
    torch.testing.assert_close(base, teacher.predict(x, seed=teacher.infer_seed, timestep=teacher.infer_timestep)[0])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_predict_is_batch_invariant(dims: int, backbone: str) -> None:
    """An image's output does not depend on the other images of the batch (same noise per sample)."""
    teacher = tiny_teacher(dims, 1, 2, backbone)
    a = images(dims, 1, batch=1, seed=10)
    b = images(dims, 1, batch=1, seed=11)
    c = images(dims, 1, batch=1, seed=12)
    alone, u_alone = teacher.predict(a, num_draws=2)
    with_b, u_b = teacher.predict(torch.cat([a, b]), num_draws=2)
    with_c, _ = teacher.predict(torch.cat([c, a]), num_draws=2)
    torch.testing.assert_close(with_b[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(with_c[1:], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(u_b[:1], u_alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(with_b[0], with_b[1], atol=1e-3)  # the images do give different outputs


def test_fixed_noise_is_the_same_for_every_sample() -> None:
    teacher = tiny_teacher(2, 1, 4)
    x = images(2, 1, batch=3)
    n = teacher.fixed_noise(x)
    assert n.shape == (3, 4, SIZE, SIZE)
    assert torch.equal(n[0], n[1]) and torch.equal(n[0], n[2])
    assert not torch.equal(n, teacher.fixed_noise(x, seed=teacher.infer_seed + 1))


# ---------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("dims,c", [(2, 3), (3, 1)])
def test_check_input_rejects_wrong_channel_count(dims: int, c: int) -> None:
    teacher = tiny_teacher(dims, c, 2)
    wrong = c + 1
    x = torch.zeros(1, wrong, *([SIZE] * dims))
    with pytest.raises(ValueError, match=rf"case_7\.png: expected {c} image channel\(s\), got {wrong}"):
        teacher.check_input(x, "case_7.png")


def test_check_input_rejects_2d_image_for_3d_teacher() -> None:
    teacher = tiny_teacher(3, 1, 2)
    with pytest.raises(ValueError, match=r"batch: expected a 3D image batch of shape \(B, 1, \*, \*, \*\), got shape "
                                         r"\(2, 1, 16, 16\)"):
        teacher.check_input(torch.zeros(2, 1, SIZE, SIZE), "batch")


def test_check_input_rejects_3d_volume_for_2d_teacher() -> None:
    teacher = tiny_teacher(2, 1, 2)
    with pytest.raises(ValueError, match=r"expected a 2D image batch .* got shape \(2, 1, 16, 16, 16\)"):
        teacher.check_input(torch.zeros(2, 1, SIZE, SIZE, SIZE))


@pytest.mark.parametrize("dims", [2, 3])
def test_check_input_rejects_indivisible_spatial_size_and_says_which_work(dims: int) -> None:
    teacher = tiny_teacher(dims, 1, 2)  # 2 levels: sizes must be multiples of 2
    shape = (15,) + (16,) * (dims - 1)
    with pytest.raises(ValueError) as err:
        teacher.check_input(torch.zeros(1, 1, *shape), "img.nii.gz")
    msg = str(err.value)
    assert msg.startswith("img.nii.gz: spatial size")
    assert str(shape) in msg
    assert "multiple of 2" in msg
    assert str((14,) + (16,) * (dims - 1)) in msg  # a size that works
    teacher.check_input(torch.zeros(1, 1, *([16] * dims)))  # a valid one passes


def test_check_spatial_size_factor_follows_levels() -> None:
    check_spatial_size((32, 64), 4)
    with pytest.raises(ValueError, match=r"multiple of 8 \(e\.g\. \(16, 64\)\)"):
        check_spatial_size((20, 64), 4)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(spatial_dims=1, in_channels=1, num_classes=2), "spatial_dims must be 2 or 3, got 1"),
        (dict(spatial_dims=2, in_channels=1, num_classes=1), r"num_classes must be >= 2 \(2 for binary\), got 1"),
        (dict(spatial_dims=2, in_channels=0, num_classes=2), "in_channels must be >= 1, got 0"),
        (dict(spatial_dims=2, in_channels=1, num_classes=2, infer_timestep=1000),
         r"infer_timestep must be in \[0, 1000\)"),
        (dict(spatial_dims=2, in_channels=1, num_classes=2, backbone="unet"),
         r"backbone must be one of \['diffusion_unet', 'fast'\], got 'unet'"),
    ],
)
def test_constructor_rejects_invalid_arguments(kwargs: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        DiffusionTeacher(**kwargs, **TINY)


# ---------------------------------------------------------------------------------------------------- fast backbone
def _flops(net: torch.nn.Module, *args: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        net(*args).float().sum().backward()
    return int(fc.get_total_flops())


@pytest.mark.parametrize("dims,size,channels", [(2, (32, 32), (16, 32, 64, 128)), (3, (56, 56, 40), (8, 16, 32, 64))],
                         ids=["ph2_cpu-2d", "la_cpu-3d"])
def test_fast_backbone_costs_at_most_1_5x_the_supervised_unet_in_flops(dims: int, size: tuple, channels: tuple) -> None:
    """Issue 27: per pass (forward + backward) at most 1.5x MONAI's ``UNet(num_res_units=2)`` of the same widths, here
    counted in FLOPs (the wall-clock ratio is ``scripts/benchmark.py --cpu``'s); ``DiffusionModelUNet`` is several
    times over."""
    from monai.networks.nets import UNet

    from custom_components.networks import build_backbone

    c, k = (3, 2) if dims == 2 else (1, 2)
    x = torch.randn(1, c, *size)
    sup = _flops(UNet(dims, c, k, channels, [2] * (len(channels) - 1), num_res_units=2), x)
    t = torch.tensor([500])
    fast = _flops(build_backbone(dims, c + k, k, channels, backbone="fast"), torch.randn(1, c + k, *size), t)
    ref = _flops(build_backbone(dims, c + k, k, channels, backbone="diffusion_unet"), torch.randn(1, c + k, *size), t)
    assert fast <= 1.5 * sup, (fast / sup, ref / sup)
    assert ref > 2 * fast  # the reference backbone is the expensive one


@pytest.mark.parametrize("dims", [2, 3])
def test_fast_backbone_uses_the_timestep_from_the_start_and_scripts(dims: int) -> None:
    from custom_components.networks import build_backbone

    torch.manual_seed(0)
    net = build_backbone(dims, 3, 2, (8, 16, 32), backbone="fast").eval()
    x = torch.randn(2, 3, *([16] * dims))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        out = net(x, t)
        assert out.shape == (2, 2, *x.shape[2:])
        torch.testing.assert_close(out, net(x, t.flip(0)))  # zero-initialised time projections: t not used yet
        perturb_(net)
        out = net(x, t)
        assert not torch.allclose(out, net(x, t.flip(0)))
        torch.testing.assert_close(torch.jit.script(net)(x, t), out)  # scripts (export tries scripting first)

"""Tests for ``custom_components.engines.cotrain`` (METHOD.md, "Phase 2"): gradient routing of every loss term,
``R = 0`` as plain CPS, the ramp-up, batched vs looped rounds, chained rounds, and end-to-end runs."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from custom_components.data.loaders import PairedLoader
from custom_components.engines import CoTrainer, LinearRampUp, ProgressRampUp
from custom_components.losses.cps import CPSLoss, HardTargetDiceLoss
from custom_components.networks import DiffusionTeacher
from custom_components.networks.teacher import make_noise

torch.set_num_threads(1)

SIZE = 16
TINY = dict(channels=(8, 16), norm_num_groups=4)
OUTPUT_KEYS = {"loss", "loss_sup", "loss_unsup", "loss_sup_dice", "loss_cps", "loss_align", "loss_rec", "unsup_weight"}


def perturb_(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Noise on every parameter: MONAI zero-initialises the UNet's output layer, which would hide every gradient
    upstream of it and make every prediction uniform."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def nets(dims: int = 2, c: int = 1, k: int = 2, seed: int = 0,
         backbone: str = "diffusion_unet") -> tuple[DiffusionTeacher, DiffusionTeacher]:
    torch.manual_seed(seed)
    teacher = perturb_(DiffusionTeacher(dims, c, k, **TINY, backbone=backbone))
    student = perturb_(DiffusionTeacher(dims, c, k, **TINY, backbone=backbone))
    return teacher, student


def batch(dims: int = 2, c: int = 1, k: int = 2, n_l: int = 2, n_u: int = 2, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n_l, 1, *([SIZE] * dims)), generator=g)
    x_l = y.float() + 0.1 * torch.randn(n_l, c, *([SIZE] * dims), generator=g)
    x_u = torch.randn(n_u, c, *([SIZE] * dims), generator=g)
    return x_l, y, x_u


def dataset(dims: int = 2, c: int = 1, k: int = 2, n: int = 2, labelled: bool = True, seed: int = 0) -> list[dict]:
    x_l, y, x_u = batch(dims, c, k, n_l=n, n_u=n, seed=seed)
    if labelled:
        return [{"image": x_l[i], "label": y[i]} for i in range(n)]
    return [{"image": x_u[i]} for i in range(n)]


def paired(dims: int = 2, c: int = 1, k: int = 2, n_l: int = 2, n_u: int = 4, bs: int = 2) -> PairedLoader:
    lab = DataLoader(dataset(dims, c, k, n_l, True, seed=1), batch_size=bs)
    unl = DataLoader(dataset(dims, c, k, n_u, False, seed=2), batch_size=bs)
    return PairedLoader(lab, unl)


def make_trainer(teacher, student, loader=None, max_epochs: int = 1, **kw) -> CoTrainer:
    return CoTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=loader if loader is not None else paired(),
        teacher=teacher,
        student=student,
        teacher_optimizer=torch.optim.Adam(teacher.parameters(), lr=1e-3),
        student_optimizer=torch.optim.Adam(student.mask_net.parameters(), lr=1e-3),
        **kw,
    )


# ------------------------------------------------------------------------------------------- gradient routing
@functools.lru_cache(maxsize=None)
def _losses_for_routing(batch_rounds: bool, round_scale: float = 1.0, backbone: str = "diffusion_unet"):
    teacher, student = nets(backbone=backbone)
    trainer = make_trainer(teacher, student, rounds=2, batch_rounds=batch_rounds, unsup_weight=lambda e: 1.0,
                           round_scale=round_scale)
    x_l, y, x_u = batch()
    torch.manual_seed(0)
    out = trainer.compute_losses(x_l, y, x_u, epoch=0)
    groups = {
        "S_S": list(student.mask_net.parameters()),
        "S_T": list(teacher.mask_net.parameters()),
        "G_T": list(teacher.image_net.parameters()),
    }
    return out, groups


def grad_norms(term: str, batch_rounds: bool = True, round_scale: float = 1.0,
               backbone: str = "diffusion_unet") -> dict[str, float]:
    """|d term / d params| summed per parameter group (0 where a group is not in the term's graph)."""
    out, groups = _losses_for_routing(batch_rounds, round_scale, backbone)
    loss = out[term]
    names = list(groups)
    params = [p for n in names for p in groups[n]]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    norms, i = {}, 0
    for n in names:
        g = grads[i : i + len(groups[n])]
        norms[n] = float(sum(x.abs().sum() for x in g if x is not None))
        i += len(groups[n])
    return norms


@pytest.mark.parametrize("batch_rounds", [True, False], ids=["batched", "loop"])
def test_cps_trains_both_mask_pathways_and_nothing_in_g_t(batch_rounds: bool) -> None:
    g = grad_norms("loss_cps", batch_rounds)
    assert g["S_S"] > 0 and g["S_T"] > 0
    assert g["G_T"] == 0


@pytest.mark.parametrize("batch_rounds", [True, False], ids=["batched", "loop"])
def test_align_trains_only_the_teacher_mask_pathway(batch_rounds: bool) -> None:
    g = grad_norms("loss_align", batch_rounds)
    assert g["S_T"] > 0
    assert g["S_S"] == 0 and g["G_T"] == 0


@pytest.mark.parametrize("batch_rounds", [True, False], ids=["batched", "loop"])
def test_rec_trains_only_the_teacher_image_pathway(batch_rounds: bool) -> None:
    g = grad_norms("loss_rec", batch_rounds)
    assert g["G_T"] > 0
    assert g["S_T"] == 0 and g["S_S"] == 0


def test_the_fast_backbone_keeps_the_gradient_routing() -> None:
    cps, align, rec = (grad_norms(term, backbone="fast") for term in ("loss_cps", "loss_align", "loss_rec"))
    assert cps["S_S"] > 0 and cps["S_T"] > 0 and cps["G_T"] == 0
    assert align["S_T"] > 0 and align["S_S"] == 0 and align["G_T"] == 0
    assert rec["G_T"] > 0 and rec["S_T"] == 0 and rec["S_S"] == 0


def test_half_resolution_rounds_keep_the_gradient_routing() -> None:
    align, rec = grad_norms("loss_align", round_scale=0.5), grad_norms("loss_rec", round_scale=0.5)
    assert align["S_T"] > 0 and align["S_S"] == 0 and align["G_T"] == 0
    assert rec["G_T"] > 0 and rec["S_T"] == 0 and rec["S_S"] == 0


def test_round_scale_runs_the_rounds_at_the_lower_resolution_and_aligns_at_full_size(monkeypatch) -> None:
    teacher, student = nets()
    trainer = make_trainer(teacher, student, rounds=2, round_scale=0.5, unsup_weight=lambda e: 1.0)
    seen = {"image_net": [], "mask_net": []}
    for name in seen:
        getattr(teacher, name).register_forward_pre_hook(lambda m, a, n=name: seen[n].append(tuple(a[0].shape[2:])))
    aligned = []
    orig = trainer.seg_loss.forward
    monkeypatch.setattr(trainer.seg_loss, "forward", lambda lg, t: aligned.append(tuple(lg.shape[2:])) or orig(lg, t))
    x_l, y, x_u = batch()
    out = trainer.compute_losses(x_l, y, x_u, epoch=0)
    half = (SIZE // 2, SIZE // 2)
    assert seen["image_net"] == [half]  # the batched rounds: one pass of G_T at half size
    assert seen["mask_net"] == [(SIZE, SIZE), half]  # P_T at full size, the re-segmentation at half size
    assert set(aligned) == {(SIZE, SIZE)}  # every Dice (sup, CPS, align) against full-resolution targets
    ref = make_trainer(*nets(), rounds=2, unsup_weight=lambda e: 1.0).compute_losses(x_l, y, x_u, epoch=0)
    assert torch.isfinite(out["loss"]) and float(out["loss_rec"]) != float(ref["loss_rec"])


def test_supervised_dice_trains_both_mask_pathways() -> None:
    g = grad_norms("loss_sup_dice")
    assert g["S_S"] > 0 and g["S_T"] > 0
    assert g["G_T"] == 0


def test_total_loss_is_sup_plus_unsup_and_reaches_all_three_pathways() -> None:
    out, _ = _losses_for_routing(True)
    torch.testing.assert_close(out["loss"], out["loss_sup"] + out["loss_unsup"])
    g = grad_norms("loss")
    assert g["S_S"] > 0 and g["S_T"] > 0 and g["G_T"] > 0


# ------------------------------------------------------------------------------------------------- R = 0
def test_r0_is_plain_cps() -> None:
    teacher, student = nets()
    lam = 0.7
    trainer = make_trainer(teacher, student, rounds=0, unsup_weight=lambda e: lam)
    x_l, y, x_u = batch()
    torch.manual_seed(11)
    out = trainer.compute_losses(x_l, y, x_u, epoch=0)
    # the same draws by hand: student first, then teacher, each on concat[x_l, x_u]
    dice = HardTargetDiceLoss()
    x = torch.cat([x_l, x_u])
    torch.manual_seed(11)
    p_s = student.segment(x)
    p_t = teacher.segment(x)
    n = x_l.shape[0]
    cps = dice(p_s[n:], p_t[n:].argmax(1, keepdim=True)) + dice(p_t[n:], p_s[n:].argmax(1, keepdim=True))
    expected = lam * cps + dice(p_s[:n], y) + dice(p_t[:n], y)
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["loss_cps"], cps)
    assert float(out["loss_align"]) == 0 and float(out["loss_rec"]) == 0
    assert float(out["unsup_weight"]) == pytest.approx(lam)
    out["loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in teacher.image_net.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in teacher.mask_net.parameters())


def test_r0_never_calls_the_image_pathway(monkeypatch: pytest.MonkeyPatch) -> None:
    teacher, student = nets()
    trainer = make_trainer(teacher, student, rounds=0)

    def forbidden(*a, **k):
        raise AssertionError("reconstruct must not run with R = 0")

    monkeypatch.setattr(teacher, "reconstruct", forbidden)
    trainer.compute_losses(*batch(), epoch=0)


# ------------------------------------------------------------------------------------------------- ramp-up
def test_linear_ramp_up_values() -> None:
    ramp = LinearRampUp(1.0, 3)
    assert [ramp(e) for e in range(5)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    assert LinearRampUp(2.0, 4)(0) == pytest.approx(0.5)
    assert LinearRampUp(0.5, 1)(0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="ramp_epochs must be >= 1, got 0"):
        LinearRampUp(1.0, 0)
    with pytest.raises(ValueError, match="lambda_max must be >= 0, got -1"):
        LinearRampUp(-1.0, 3)


def test_unsup_weight_in_output_follows_the_default_ramp_over_three_epochs() -> None:
    teacher, student = nets()
    trainer = make_trainer(teacher, student, max_epochs=3, rounds=1, epoch_length=1)
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(float(e.state.output["unsup_weight"])))
    trainer.run()
    # default lambda(e) = 1 * min(1, (e + 1) / E_ramp) with E_ramp = max_epochs = 3, e 0-based
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])


# ------------------------------------------------------------------------------------------ batched vs loop
class RowDraws:
    """Replace the random ``t`` and noise of ``segment`` / ``reconstruct`` by deterministic per-row draws.

    Rows are numbered in call order per (network, pathway); row ``r`` always gets the same ``t`` and noise. The
    batched path draws round ``j`` sample ``i`` at row ``j * B + i`` of one call; the loop draws it at row
    ``i`` of its ``j``-th call: the same row number, hence the same draw, and the two paths must agree exactly.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, net: DiffusionTeacher, tag: int) -> None:
        self.rows = {"seg": 0, "rec": 0}
        self.tag = tag
        seg, rec = net.segment, net.reconstruct

        def segment(x, t=None, noise=None, mask_net=None):
            t, noise = self.draw("seg", x.shape[0], (net.num_classes, *x.shape[2:]))
            return seg(x, t, noise, mask_net)

        def reconstruct(x, mask, t=None, noise=None):
            t, noise = self.draw("rec", x.shape[0], tuple(x.shape[1:]))
            return rec(x, mask, t, noise)

        monkeypatch.setattr(net, "segment", segment)
        monkeypatch.setattr(net, "reconstruct", reconstruct)

    def draw(self, kind: str, n: int, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.rows[kind]
        self.rows[kind] += n
        return _draw(self.tag, kind, start, n, shape)


def _losses_with_row_draws(monkeypatch, batch_rounds: bool, seg_loss, rounds: int = 3) -> dict:
    teacher, student = nets(seed=2)
    with monkeypatch.context() as m:
        RowDraws(m, teacher, 1)
        RowDraws(m, student, 2)
        trainer = make_trainer(teacher, student, rounds=rounds, batch_rounds=batch_rounds, seg_loss=seg_loss,
                               unsup_weight=lambda e: 0.6)
        x_l, y, x_u = batch(n_l=2, n_u=3)  # unequal halves catch a wrong labelled / unlabelled split
        out = trainer.compute_losses(x_l, y, x_u, epoch=0)
    return {k: v.detach() for k, v in out.items()}


@pytest.mark.parametrize(
    "seg_loss",
    [
        pytest.param(HardTargetDiceLoss(), id="dice"),
        pytest.param(HardTargetDiceLoss(use_ce=True), id="dice_ce"),
        pytest.param(HardTargetDiceLoss(batch=True), id="dice_batch"),
    ],
)
def test_batched_rounds_equal_the_loop_with_the_same_draws(monkeypatch: pytest.MonkeyPatch, seg_loss) -> None:
    batched = _losses_with_row_draws(monkeypatch, True, seg_loss)
    looped = _losses_with_row_draws(monkeypatch, False, seg_loss)
    for key in OUTPUT_KEYS:
        torch.testing.assert_close(batched[key], looped[key], atol=2e-5, rtol=1e-5, msg=key)
    assert float(batched["loss_align"]) > 0 and float(batched["loss_rec"]) > 0


def test_row_draws_differ_between_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard for the test above: with these draws one round does not simply repeat another."""
    one = _losses_with_row_draws(monkeypatch, False, HardTargetDiceLoss(), rounds=1)
    three = _losses_with_row_draws(monkeypatch, False, HardTargetDiceLoss(), rounds=3)
    assert not torch.allclose(one["loss_rec"], three["loss_rec"])
    assert not torch.allclose(one["loss_align"], three["loss_align"])


# ------------------------------------------------------------------------------------------ round conditions
def _spy_rounds(monkeypatch, round_mode: str, batch_rounds: bool, rounds: int = 3):
    teacher, student = nets()
    masks, seg_outputs, rec_inputs = [], [], []
    seg, rec = teacher.segment, teacher.reconstruct

    def segment(x, *a, **k):
        out = seg(x, *a, **k)
        seg_outputs.append(out.detach())
        return out

    def reconstruct(x, mask, *a, **k):
        masks.append(mask.detach().clone())
        out = rec(x, mask, *a, **k)
        rec_inputs.append(out.x0_hat.detach())
        return out

    monkeypatch.setattr(teacher, "segment", segment)
    monkeypatch.setattr(teacher, "reconstruct", reconstruct)
    trainer = make_trainer(teacher, student, rounds=rounds, round_mode=round_mode, batch_rounds=batch_rounds)
    trainer.compute_losses(*batch(), epoch=0)
    return masks, seg_outputs


def test_chained_rounds_condition_on_the_previous_round(monkeypatch: pytest.MonkeyPatch) -> None:
    masks, segs = _spy_rounds(monkeypatch, "chained", batch_rounds=True)  # chained ignores batch_rounds
    assert len(masks) == 3 and len(segs) == 4  # P_T, then P~_1..P~_3
    # round 1 conditions on P_T, round j on P~_(j-1)
    for j in range(3):
        torch.testing.assert_close(masks[j], 2 * segs[j].softmax(1) - 1)
    assert not torch.allclose(masks[1], masks[0]) and not torch.allclose(masks[2], masks[1])


def test_independent_rounds_all_condition_on_p_t(monkeypatch: pytest.MonkeyPatch) -> None:
    masks, segs = _spy_rounds(monkeypatch, "independent", batch_rounds=False)
    assert len(masks) == 3
    for m in masks:
        torch.testing.assert_close(m, 2 * segs[0].softmax(1) - 1)


def test_batched_independent_rounds_repeat_the_p_t_condition(monkeypatch: pytest.MonkeyPatch) -> None:
    masks, segs = _spy_rounds(monkeypatch, "independent", batch_rounds=True)
    assert len(masks) == 1
    b = segs[0].shape[0]
    assert masks[0].shape[0] == 3 * b
    for j in range(3):
        torch.testing.assert_close(masks[0][j * b : (j + 1) * b], 2 * segs[0].softmax(1) - 1)


def test_align_uses_detached_reconstruction_as_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """``P~_j = S_T(stopgrad(x0_hat_j))``: the image the teacher re-segments carries no graph."""
    teacher, student = nets()
    inputs = []
    seg = teacher.segment

    def segment(x, *a, **k):
        inputs.append(x)
        return seg(x, *a, **k)

    monkeypatch.setattr(teacher, "segment", segment)
    make_trainer(teacher, student, rounds=2, batch_rounds=False).compute_losses(*batch(), epoch=0)
    assert len(inputs) == 3
    assert all(not x.requires_grad for x in inputs[1:])


# ------------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize(
    "dims,c,k,rounds,mode,backbone",
    [(2, 1, 2, 2, "independent", "diffusion_unet"), (2, 3, 4, 1, "chained", "diffusion_unet"),
     (3, 1, 2, 1, "independent", "diffusion_unet"), (2, 3, 4, 2, "independent", "fast"),
     (3, 1, 2, 1, "independent", "fast")],
    ids=["2d-C1-K2-R2", "2d-C3-K4-R1-chained", "3d-C1-K2-R1", "2d-C3-K4-R2-fast", "3d-C1-K2-R1-fast"],
)
def test_trainer_runs_and_reports_every_component(dims: int, c: int, k: int, rounds: int, mode: str,
                                                  backbone: str) -> None:
    teacher, student = nets(dims, c, k, backbone=backbone)
    loader = paired(dims, c, k, n_l=2, n_u=4, bs=2) if dims == 2 else paired(dims, c, k, n_l=1, n_u=1, bs=1)
    t_before = [p.detach().clone() for p in teacher.parameters()]
    s_before = [p.detach().clone() for p in student.mask_net.parameters()]
    trainer = make_trainer(teacher, student, loader, max_epochs=2 if dims == 2 else 1, rounds=rounds, round_mode=mode)
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    trainer.run()
    assert len(outputs) == (4 if dims == 2 else 1)  # epoch = longer stream (2 batches) x 2 epochs
    out = trainer.state.output
    assert OUTPUT_KEYS <= set(out)
    for key in OUTPUT_KEYS:
        v = torch.as_tensor(out[key])
        assert v.numel() == 1 and torch.isfinite(v) and not v.requires_grad, key
    torch.testing.assert_close(out["loss"], out["loss_sup"] + out["loss_unsup"])
    assert float(out["loss_align"]) > 0 and float(out["loss_rec"]) > 0
    # both optimizers stepped: both pathways of the teacher and the student's mask pathway moved
    assert any(not torch.equal(a, b.detach()) for a, b in zip(t_before, teacher.parameters()))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(s_before, student.mask_net.parameters()))


def test_trainer_rejects_batches_without_paired_streams() -> None:
    teacher, student = nets()
    loader = DataLoader(dataset(), batch_size=2)
    trainer = make_trainer(teacher, student, loader, rounds=0)
    with pytest.raises(KeyError, match="co-training batch has no 'labeled' stream"):
        trainer.run()


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(rounds=-1), "rounds must be >= 0, got -1"),
        (dict(round_mode="serial"), "round_mode must be 'independent' or 'chained', got 'serial'"),
        (dict(round_scale=0.0), r"round_scale must be in \(0, 1\], got 0.0"),
        (dict(round_scale=2), r"round_scale must be in \(0, 1\], got 2"),
    ],
)
def test_invalid_arguments_rejected(kwargs: dict, msg: str) -> None:
    teacher, student = nets()
    with pytest.raises(ValueError, match=msg):
        make_trainer(teacher, student, **kwargs)


def test_round_scale_the_backbone_cannot_take_is_named() -> None:
    teacher, student = nets()
    trainer = make_trainer(teacher, student, rounds=1, round_scale=0.25)  # 16 -> 4 is fine, 0.3 -> 5 is not
    trainer.round_scale = 0.3
    with pytest.raises(ValueError, match=r"round_scale 0.3 of \(16, 16\): spatial size \(5, 5\) cannot be taken"):
        trainer.compute_losses(*batch(), epoch=0)


def test_student_must_match_teacher() -> None:
    teacher, _ = nets()
    student = DiffusionTeacher(2, 1, 3, **TINY)
    with pytest.raises(ValueError, match=r"the twin student must match the teacher"):
        make_trainer(teacher, student)


# ------------------------------------------------------------------------- the full loss, recomputed from METHOD.md
def _soft_dice(logits: torch.Tensor, target: torch.Tensor, w: torch.Tensor | float = 1.0) -> torch.Tensor:
    """METHOD.md's ``Dice(P, target)``, written out here (not via the project's loss): soft Dice of softmax
    probabilities against the one-hot hard target, per sample and class, averaged over both (background included);
    ``w``: per-pixel weights of the pseudo-label safeguard (every sum weighted)."""
    p = logits.float().softmax(1)
    oh = torch.nn.functional.one_hot(target[:, 0].long(), p.shape[1]).movedim(-1, 1).float()
    dims = tuple(range(2, p.ndim))
    inter, denom = (w * p * oh).sum(dims), (w * p).sum(dims) + (w * oh).sum(dims)
    return (1 - (2 * inter + 1e-5) / (denom + 1e-5)).mean()


def _draw(tag: int, kind: str, start: int, n: int, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """The deterministic ``t`` and noise of rows ``start .. start + n - 1`` of network ``tag``'s pathway ``kind``."""
    rows = range(start, start + n)
    salt = 7919 * tag + (0 if kind == "seg" else 104729)
    t = torch.tensor([(97 * r + 31 * tag + (13 if kind == "rec" else 0)) % 1000 for r in rows])
    return t, torch.cat([make_noise((1, *shape), salt + r, "cpu", torch.float32) for r in rows])


def _reference_losses(teacher, student, x_l, y, x_u, rounds: int, mode: str, lam: float, w_d: float,
                      confidence: float = 0.0, weighting: str = "hard") -> dict:
    """METHOD.md, "Phase 2", term by term, from the networks' outputs under the draws of ``RowDraws``
    (teacher tag 1, student tag 2): ``P_S`` / ``P_T`` are rows ``0..B-1``; round ``j`` reconstructs at rows
    ``j B .. (j+1) B - 1`` and re-segments at teacher rows ``B + j B ..``. ``confidence`` / ``weighting``: the
    pseudo-label safeguard (issue 25), every pseudo-labelled pixel weighted by ``[q >= confidence]`` (times ``q``
    for ``"confidence"``), ``q`` = the max softmax of the network that gives the target."""
    n_l, x = x_l.shape[0], torch.cat([x_l, x_u])
    b, k = x.shape[0], teacher.num_classes

    def seg(net, tag, img, start):
        t, noise = _draw(tag, "seg", start, img.shape[0], (k, *img.shape[2:]))
        return net.segment(img, t, noise)

    p_s, p_t = seg(student, 2, x, 0), seg(teacher, 1, x, 0)
    hard = lambda logits: logits.detach().argmax(1, keepdim=True)  # noqa: E731

    def weight(logits):
        q = logits.detach().softmax(1).amax(1, keepdim=True)
        return (q >= confidence).float() * (q if weighting == "confidence" else 1.0)

    sup_dice = _soft_dice(p_s[:n_l], y) + _soft_dice(p_t[:n_l], y)
    w_s, w_t = weight(p_s[n_l:]), weight(p_t[n_l:])
    cps = _soft_dice(p_s[n_l:], hard(p_t[n_l:]), w_t) + _soft_dice(p_t[n_l:], hard(p_s[n_l:]), w_s)
    target = torch.cat([y, hard(p_s[n_l:])])  # y on labelled data, argmax P_S on unlabelled data
    align_l = align_u = rec_l = rec_u = torch.zeros(())
    cond = p_t
    for j in range(rounds):
        t, noise = _draw(1, "rec", j * b, b, tuple(x.shape[1:]))
        rec = teacher.reconstruct(x, 2 * cond.detach().softmax(1) - 1, t, noise)
        p_tilde = seg(teacher, 1, rec.x0_hat.detach(), b + j * b)
        align_l = align_l + _soft_dice(p_tilde[:n_l], target[:n_l])
        align_u = align_u + _soft_dice(p_tilde[n_l:], target[n_l:], w_s)
        rec_l, rec_u = rec_l + rec.loss[:n_l].mean(), rec_u + rec.loss[n_l:].mean()
        if mode == "chained":
            cond = p_tilde
    c = w_d / rounds
    unsup = lam * (cps + c * (align_u + rec_u))
    sup = sup_dice + c * (align_l + rec_l)
    return {"loss": sup + unsup, "loss_sup": sup, "loss_unsup": unsup, "loss_cps": cps, "loss_sup_dice": sup_dice,
            "loss_align": (align_l + align_u) / rounds, "loss_rec": (rec_l + rec_u) / rounds,
            "_targets_differ": bool((hard(p_s[n_l:]) != hard(p_t[n_l:])).any()),
            "_kept": (float((w_s > 0).float().mean()), float((w_t > 0).float().mean()))}


def _losses_under_row_draws(monkeypatch: pytest.MonkeyPatch, **trainer_kw) -> tuple[dict, DiffusionTeacher,
                                                                                     DiffusionTeacher, tuple]:
    """``compute_losses`` of a trainer (``make_trainer(**trainer_kw)``) on the seed-2 networks and a 2 + 3 batch,
    under ``RowDraws`` (so ``_reference_losses`` can recompute the same draws): ``(losses, teacher, student,
    (x_l, y, x_u))``."""
    teacher, student = nets(seed=2)
    x_l, y, x_u = batch(n_l=2, n_u=3)
    with monkeypatch.context() as m:
        RowDraws(m, teacher, 1)
        RowDraws(m, student, 2)
        trainer = make_trainer(teacher, student, **trainer_kw)
        got = {k: v.detach() for k, v in trainer.compute_losses(x_l, y, x_u, epoch=0).items()}
    return got, teacher, student, (x_l, y, x_u)


@pytest.mark.parametrize(
    "mode,batch_rounds", [("independent", True), ("independent", False), ("chained", False)],
    ids=["independent-batched", "independent-loop", "chained"],
)
def test_total_loss_equals_the_method_formula(monkeypatch: pytest.MonkeyPatch, mode: str, batch_rounds: bool) -> None:
    """Every term of ``L = L_sup + L_unsup`` for ``R = 3`` with ``lambda = 0.6`` and ``w_d = 0.7`` (values that
    make ``lambda`` on the diffusion terms, ``w_d / R`` and the alignment target visible) equals the METHOD.md
    formula recomputed here from the same networks under the same draws."""
    rounds, lam, w_d = 3, 0.6, 0.7
    got, teacher, student, (x_l, y, x_u) = _losses_under_row_draws(monkeypatch, rounds=rounds, round_mode=mode,
                                                                   batch_rounds=batch_rounds, w_d=w_d,
                                                                   unsup_weight=lambda e: lam)
    with torch.no_grad():
        ref = _reference_losses(teacher, student, x_l, y, x_u, rounds, mode, lam, w_d)
    # guards: the mutations this test must catch change the result on this batch
    assert ref.pop("_targets_differ"), "argmax P_S and argmax P_T agree everywhere: the alignment target is untested"
    ref.pop("_kept")
    assert float(ref["loss_align"]) > 0 and float(ref["loss_rec"]) > 0
    for key, value in ref.items():
        torch.testing.assert_close(got[key], value.float(), atol=2e-5, rtol=1e-5, msg=key)
    assert float(got["unsup_weight"]) == pytest.approx(lam)


# ------------------------------------------------------------------------------------------ round_batch
class ContentDraws:
    """``t`` and noise of ``segment`` / ``reconstruct`` drawn per row from a seed computed from that row's input, so
    an image gets the same draws whatever else is in the batch (with one round: the same draws in both settings)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, net: DiffusionTeacher) -> None:
        seg, rec = net.segment, net.reconstruct

        def segment(x, t=None, noise=None, mask_net=None):
            t, noise = self.draw(x, (net.num_classes, *x.shape[2:]))
            return seg(x, t, noise, mask_net)

        def reconstruct(x, mask, t=None, noise=None):
            t, noise = self.draw(x, tuple(x.shape[1:]))
            return rec(x, mask, t, noise)

        monkeypatch.setattr(net, "segment", segment)
        monkeypatch.setattr(net, "reconstruct", reconstruct)

    @staticmethod
    def draw(x: torch.Tensor, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        ts, noises = [], []
        for row in x.detach():
            g = torch.Generator().manual_seed(int(abs(float(row.double().sum())) * 1e4) % 2**31)
            ts.append(torch.randint(0, 1000, (1,), generator=g))
            noises.append(torch.randn(shape, generator=g))
        return torch.cat(ts), torch.stack(noises).to(x.dtype)


def _losses_with_content_draws(monkeypatch, round_batch: str, batch_rounds: bool) -> dict:
    teacher, student = nets(seed=2)
    with monkeypatch.context() as m:
        ContentDraws(m, teacher)
        ContentDraws(m, student)
        trainer = make_trainer(teacher, student, rounds=1, round_batch=round_batch, batch_rounds=batch_rounds,
                               unsup_weight=lambda e: 0.6)
        out = trainer.compute_losses(*batch(n_l=2, n_u=3), epoch=0)
    return {k: v.detach() for k, v in out.items()}


@pytest.mark.parametrize("batch_rounds", [True, False], ids=["batched", "loop"])
def test_round_batch_unlabeled_drops_exactly_the_labelled_round_terms(monkeypatch, batch_rounds: bool) -> None:
    full = _losses_with_content_draws(monkeypatch, "all", batch_rounds)
    unl = _losses_with_content_draws(monkeypatch, "unlabeled", batch_rounds)
    # the labelled alignment / reconstruction terms are 0: L_sup is the supervised Dice alone
    torch.testing.assert_close(unl["loss_sup"], unl["loss_sup_dice"])
    assert float(full["loss_sup"]) > float(full["loss_sup_dice"])
    # everything on the unlabelled half is the full computation's (the same draws per image)
    for key in ("loss_unsup", "loss_cps", "loss_sup_dice"):
        torch.testing.assert_close(unl[key], full[key], atol=1e-6, rtol=1e-6, msg=key)
    assert float(unl["loss_unsup"]) > 0.6 * float(unl["loss_cps"]) + 1e-4  # the unlabelled round terms are in it
    assert float(unl["loss_align"]) < float(full["loss_align"]) and float(unl["loss_rec"]) < float(full["loss_rec"])


def test_round_batch_unlabeled_runs_the_image_pathway_on_the_unlabelled_images_only(monkeypatch) -> None:
    teacher, student = nets()
    seen = []
    rec = teacher.reconstruct

    def reconstruct(x, mask, *a, **k):
        seen.append(x.detach().clone())
        return rec(x, mask, *a, **k)

    monkeypatch.setattr(teacher, "reconstruct", reconstruct)
    x_l, y, x_u = batch(n_l=2, n_u=3)
    make_trainer(teacher, student, rounds=2, round_batch="unlabeled").compute_losses(x_l, y, x_u, epoch=0)
    assert len(seen) == 1 and torch.equal(seen[0], x_u.repeat(2, 1, 1, 1))


def test_round_batch_must_be_known() -> None:
    teacher, student = nets()
    with pytest.raises(ValueError, match=r"round_batch must be one of \['all', 'unlabeled'\], got 'labeled'"):
        make_trainer(teacher, student, round_batch="labeled")


# ------------------------------------------------------------------- safeguards against a misleading teacher (issue 25)
@pytest.mark.parametrize(
    "confidence,weighting,mode,batch_rounds",
    [(0.56, "hard", "independent", True), (0.56, "confidence", "independent", False), (0.0, "confidence", "chained",
                                                                                       False)],
    ids=["threshold-batched", "threshold-confidence-loop", "confidence-chained"],
)
def test_pseudo_confidence_weights_every_pseudo_labelled_term_as_the_formula(
        monkeypatch: pytest.MonkeyPatch, confidence: float, weighting: str, mode: str, batch_rounds: bool) -> None:
    """With the pseudo-label safeguard on, CPS (each direction weighted by its source) and the unlabelled alignment
    (weighted by ``P_S``, the source of its target) equal the formula with the weights; the labelled terms keep
    ``y`` unweighted."""
    rounds, lam, w_d = 2, 0.6, 0.7
    got, teacher, student, (x_l, y, x_u) = _losses_under_row_draws(
        monkeypatch, rounds=rounds, round_mode=mode, batch_rounds=batch_rounds, w_d=w_d, unsup_weight=lambda e: lam,
        pseudo_confidence=confidence, pseudo_weighting=weighting)
    with torch.no_grad():
        ref = _reference_losses(teacher, student, x_l, y, x_u, rounds, mode, lam, w_d, confidence, weighting)
        plain = _reference_losses(teacher, student, x_l, y, x_u, rounds, mode, lam, w_d)
    ref.pop("_targets_differ"), plain.pop("_targets_differ"), plain.pop("_kept")
    kept_s, kept_t = ref.pop("_kept")
    if confidence > 0:  # guard: the threshold drops some pixels of both sources and keeps others
        assert 0.1 < kept_s < 0.9 and 0.1 < kept_t < 0.9, (kept_s, kept_t)
        assert float(got["pseudo_kept"]) == pytest.approx((kept_s + kept_t) / 2)
    else:
        assert "pseudo_kept" not in got
    for key in ("loss_cps", "loss_align"):  # guard: the safeguard changes the pseudo-labelled terms on this batch
        assert abs(float(ref[key]) - float(plain[key])) > 1e-4, key  # 5x the tolerance below
    for key in ("loss_sup_dice", "loss_rec"):
        torch.testing.assert_close(ref[key], plain[key])
    for key, value in ref.items():
        torch.testing.assert_close(got[key], value.float(), atol=2e-5, rtol=1e-5, msg=key)


def test_cps_loss_with_other_pseudo_settings_than_the_trainer_is_rejected() -> None:
    teacher, student = nets()
    with pytest.raises(ValueError, match=r"cps_loss weights its pseudo-labels with confidence 0.5, weighting 'hard'; "
                                         r"the trainer's alignment targets with 0.0, 'hard'"):
        make_trainer(teacher, student, cps_loss=CPSLoss(confidence=0.5))
    with pytest.raises(ValueError, match=r"pseudo_confidence must be in \[0, 1\), got 1.5"):
        make_trainer(teacher, student, pseudo_confidence=1.5)
    trainer = make_trainer(teacher, student, pseudo_confidence=0.7, pseudo_weighting="confidence")
    assert (trainer.cps_loss.confidence, trainer.cps_loss.weighting) == (0.7, "confidence")


def test_progress_ramp_up_values() -> None:
    """~0 at the first iteration, 1 at the end of the ramp and after it."""
    sig, lin = ProgressRampUp(1.0, 0.4), ProgressRampUp(2.0, 0.4, "linear")
    assert sig(0.0) == pytest.approx(math.exp(-5)) and sig(0.0) < 0.01
    assert lin(0.0) == 0.0
    assert [sig(t) for t in (0.4, 0.7, 1.0)] == pytest.approx([1.0, 1.0, 1.0])
    assert [lin(t) for t in (0.1, 0.2, 0.4, 1.0)] == pytest.approx([0.5, 1.0, 2.0, 2.0])
    assert sig(0.2) == pytest.approx(math.exp(-5 * 0.25))
    with pytest.raises(ValueError, match=r"unlabeled_rampup must be one of \['sigmoid', 'linear'\], got 'step'"):
        ProgressRampUp(1.0, 0.4, "step")
    with pytest.raises(ValueError, match=r"ramp in \(0, 1\]"):
        ProgressRampUp(1.0, 0.0)


def test_unsup_rampup_scales_every_unlabelled_term_by_the_fraction_of_iterations() -> None:
    """At the first iteration a linear ramp gives weight 0: the total is the supervised loss alone, so no
    unlabelled term escapes the ramp (CPS, alignment and reconstruction on ``x_u`` are all non-zero); half-way up
    the ramp the weight is 0.5; it replaces ``lambda(e)``."""
    teacher, student = nets()
    trainer = make_trainer(teacher, student, max_epochs=2, epoch_length=4, rounds=1,
                           unsup_weight=lambda e: 0.3, unsup_rampup=ProgressRampUp(1.0, 0.5, "linear"))
    trainer.state.max_epochs, trainer.state.epoch_length = 2, 4
    trainer.state.iteration = 1  # progress 0
    out = trainer.compute_losses(*batch(), epoch=0)
    assert float(out["unsup_weight"]) == 0.0 and float(out["loss_cps"]) > 0
    assert float(out["loss_unsup"]) == 0.0
    torch.testing.assert_close(out["loss"], out["loss_sup"])
    trainer.state.iteration = 3  # progress 2 / 8 = 0.25: half of the ramp
    out = trainer.compute_losses(*batch(), epoch=0)
    assert float(out["unsup_weight"]) == pytest.approx(0.5)
    assert float(out["loss_unsup"]) > 0


def test_unsup_weight_in_output_follows_the_progress_ramp_per_iteration() -> None:
    teacher, student = nets()
    trainer = make_trainer(teacher, student, max_epochs=2, rounds=1, epoch_length=2,
                           unsup_rampup=ProgressRampUp(1.0, 0.5, "linear"))
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(float(e.state.output["unsup_weight"])))
    trainer.run()
    assert seen == pytest.approx([0.0, 0.5, 1.0, 1.0])  # progress 0, 1/4, 2/4, 3/4 of 4 iterations, ramp 0.5

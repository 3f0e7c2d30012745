"""The semi-supervised trainer API and the baselines (``engines/base.py``, ``engines/baselines.py``): each loss
against its published formula on known inputs, the EMA update after the step, UA-MT's uncertainty mask and
threshold ramp, CPS's cross targets, and the CPS loss injected into the paper's ``CoTrainer``."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from custom_components.data.loaders import PairedLoader
from custom_components.engines import (
    BCPTrainer,
    CPSTrainer,
    MeanTeacherTrainer,
    SemiSupervisedTrainer,
    SigmoidRampUp,
    UAMTTrainer,
    UniMatchTrainer,
    consistency_mse,
    masked_dice_ce,
    paste_mask,
    uncertainty_masked_mse,
    unet_encoder_blocks,
)
from custom_components.losses import CPSLoss, HardTargetDiceLoss

torch.set_num_threads(1)
SIZE = 16


def unet(seed: int, dropout: float = 0.0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0, dropout=dropout)
    with torch.no_grad():  # MONAI zero-initialises nothing here, but make the two networks clearly different
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def batch(n_l: int = 2, n_u: int = 2, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n_l, 1, SIZE, SIZE), generator=g)
    return y.float() + 0.1 * torch.randn(n_l, 1, SIZE, SIZE, generator=g), y, torch.randn(n_u, 1, SIZE, SIZE,
                                                                                        generator=g)


def paired(n: int = 2) -> PairedLoader:
    x_l, y, x_u = batch(n, n)
    lab = DataLoader([{"image": x_l[i], "label": y[i]} for i in range(n)], batch_size=n)
    unl = DataLoader([{"image": x_u[i]} for i in range(n)], batch_size=n)
    return PairedLoader(lab, unl)


def ema(net: torch.nn.Module, decay: float = 0.99) -> AveragedModel:
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


SUP = DiceCELoss(to_onehot_y=True, softmax=True)


def common(net, *more, max_epochs: int = 1, epoch_length: int | None = None, lr: float = 1e-2) -> dict:
    params = [p for m in (net, *more) for p in m.parameters()]
    return dict(device="cpu", max_epochs=max_epochs, train_data_loader=paired(), networks=[net],
                optimizers=[torch.optim.Adam(params, lr=lr)], sup_loss=SUP, epoch_length=epoch_length)


# ------------------------------------------------------------------------------------------- ramp-up
def test_sigmoid_ramp_up_is_exp_minus_5_one_minus_t_squared():
    r = SigmoidRampUp(0.1, 1.0)
    assert r(0.0) == pytest.approx(0.1 * math.exp(-5))
    assert r(0.5) == pytest.approx(0.1 * math.exp(-5 * 0.25))
    assert r(1.0) == pytest.approx(0.1) and r(2.0) == pytest.approx(0.1)
    assert SigmoidRampUp(1.0, 0.5)(0.25) == pytest.approx(math.exp(-5 * 0.25))
    with pytest.raises(ValueError, match="ramp in"):
        SigmoidRampUp(1.0, 0.0)


# ------------------------------------------------------------------------------------------- mean teacher
def test_consistency_mse_formula_on_known_inputs():
    s = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])  # softmax (0.25, 0.75)
    t = torch.tensor([[[[0.0]], [[0.0]]]])  # softmax (0.5, 0.5)
    assert float(consistency_mse(s, t)) == pytest.approx(((0.25 - 0.5) ** 2 + (0.75 - 0.5) ** 2) / 2)


def test_mean_teacher_loss_equals_its_formula():
    student, teacher_net = unet(0), unet(1)
    tr = MeanTeacherTrainer(teacher=ema(teacher_net), unsup_weight=lambda t: 0.3, noise_std=0.0, **common(student))
    x_l, y, x_u = batch()
    out = tr.compute_losses(x_l, y, x_u, 0)
    sup = SUP(student(x_l), y)
    cons = ((student(x_u).softmax(1) - teacher_net(x_u).softmax(1)) ** 2).mean()
    torch.testing.assert_close(out["loss_sup"], sup)
    torch.testing.assert_close(out["loss_cons"], cons)
    torch.testing.assert_close(out["loss"], sup + 0.3 * cons)
    assert float(cons) > 1e-6  # the teacher differs from the student: a student-vs-student target would fail


def test_mean_teacher_teacher_is_the_ema_of_the_student_after_each_step():
    student = unet(0)
    teacher = ema(unet(1), decay=0.9)
    tr = MeanTeacherTrainer(teacher=teacher, unsup_weight=lambda t: 1.0, **common(student, max_epochs=2))
    seen = []
    def snapshot(net):
        return [p.detach().clone() for p in net.parameters()]

    tr.add_event_handler(Events.ITERATION_COMPLETED,
                         lambda e: seen.append((snapshot(student), snapshot(teacher.module))))
    tr.run()
    (s1, t1), (s2, t2) = seen
    for a, b in zip(s1, t1):  # first update: AveragedModel copies the student
        torch.testing.assert_close(a, b)
    for s, t_prev, t in zip(s2, t1, t2):  # then t <- 0.9 t + 0.1 s, with the student after its step
        torch.testing.assert_close(t, 0.9 * t_prev + 0.1 * s)
    assert any(not torch.equal(a, b) for a, b in zip(s1, s2))  # the student moved
    assert all(not p.requires_grad or p.grad is None for p in teacher.parameters())  # no optimizer on the teacher


def test_progress_runs_over_the_whole_training():
    tr = MeanTeacherTrainer(teacher=ema(unet(1)), **common(unet(0), max_epochs=2))
    seen = []
    tr.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(float(e.state.output["unsup_weight"])))
    tr.run()
    assert seen == pytest.approx([0.1 * math.exp(-5), 0.1 * math.exp(-5 * 0.25)])


# ------------------------------------------------------------------------------------------- UA-MT
def test_uncertainty_masked_mse_counts_only_certain_voxels():
    s = torch.zeros(1, 2, 1, 2)
    s[0, 1, 0, 0] = math.log(3.0)  # voxel 0: (0.25, 0.75); voxel 1: (0.5, 0.5)
    t = torch.zeros(1, 2, 1, 2)
    t[0, 1, 0, 1] = math.log(3.0)  # voxel 0: (0.5, 0.5); voxel 1: (0.25, 0.75)
    u = torch.tensor([[[[0.1, 0.9]]]])
    d0 = (0.25 - 0.5) ** 2 + (0.75 - 0.5) ** 2
    assert float(uncertainty_masked_mse(s, t, u, 0.5)) == pytest.approx(d0 / 2)  # voxel 1 is masked out
    assert float(uncertainty_masked_mse(s, t, u, 1.0)) == pytest.approx(2 * d0 / 4)
    assert float(uncertainty_masked_mse(s, t, u, 0.05)) == 0.0


def test_uamt_uncertainty_threshold_and_loss_follow_yu_et_al(monkeypatch):
    student, teacher_net = unet(0, dropout=0.3), unet(1, dropout=0.3)
    tr = UAMTTrainer(teacher=ema(teacher_net), unsup_weight=lambda t: 0.5, noise_std=0.0, mc_samples=4,
                     **common(student))
    x_l, y, x_u = batch()
    teacher_net = tr.teacher.module.eval()  # deterministic passes: the uncertainty is the entropy of one softmax
    student.eval()
    mu = teacher_net(x_u).softmax(1)
    unc = -(mu * torch.log(mu + 1e-6)).sum(1, keepdim=True)
    torch.testing.assert_close(tr.uncertainty(x_u), unc)
    fractions = []
    for t in (0.0, 0.5, 1.0):
        monkeypatch.setattr(tr, "progress", lambda t=t: t)
        out = tr.compute_losses(x_l, y, x_u, 0)
        thr = (0.75 + 0.25 * math.exp(-5 * (1 - t) ** 2)) * math.log(2)
        torch.testing.assert_close(out["mask_fraction"], (unc < thr).float().mean())
        cons = uncertainty_masked_mse(student(x_u), teacher_net(x_u), unc, thr)
        torch.testing.assert_close(out["loss_cons"], cons)
        torch.testing.assert_close(out["loss"], SUP(student(x_l), y) + 0.5 * cons)
        fractions.append(float(out["mask_fraction"]))
    assert 0.0 < fractions[0] < fractions[1] < 1.0  # the mask and its ramp matter on these inputs


def test_uamt_mc_passes_use_dropout_in_train_mode():
    student, teacher_net = unet(0, dropout=0.5), unet(1, dropout=0.5)
    tr = UAMTTrainer(teacher=ema(teacher_net), noise_std=0.0, mc_samples=8, **common(student))
    tr.teacher.eval()
    x_u = batch()[2]
    det = tr.uncertainty(x_u)
    tr.teacher.train()
    assert not torch.allclose(tr.uncertainty(x_u), det)  # stochastic passes average to another distribution


# ------------------------------------------------------------------------------------------- CPS (two UNets)
def test_cps_loss_equals_chen_et_al_on_labelled_and_unlabelled_images():
    a, b = unet(0), unet(1)
    seg = HardTargetDiceLoss(use_ce=True)
    tr = CPSTrainer(network_b=b, cps_loss=CPSLoss(seg), unsup_weight=lambda t: 0.7, **common(a, b))
    x_l, y, x_u = batch()
    out = tr.compute_losses(x_l, y, x_u, 0)
    x = torch.cat([x_l, x_u])
    pa, pb = a(x), b(x)
    cps = seg(pa, pb.argmax(1, keepdim=True)) + seg(pb, pa.argmax(1, keepdim=True))
    sup = SUP(a(x_l), y) + SUP(b(x_l), y)
    torch.testing.assert_close(out["loss_cps"], cps)
    torch.testing.assert_close(out["loss"], sup + 0.7 * cps)
    own = seg(pa, pa.argmax(1, keepdim=True)) + seg(pb, pb.argmax(1, keepdim=True))
    assert abs(float(own) - float(cps)) > 1e-4  # each network's own argmax would be another loss


def test_cps_trains_both_networks_through_one_optimizer():
    a, b = unet(0), unet(1)
    tr = CPSTrainer(network_b=b, **common(a, b))
    before = [p.detach().clone() for p in (*a.parameters(), *b.parameters())]
    tr.run()
    after = list(a.parameters()) + list(b.parameters())
    n_a = len(list(a.parameters()))
    assert any(not torch.equal(x, y.detach()) for x, y in zip(before[:n_a], after[:n_a]))
    assert any(not torch.equal(x, y.detach()) for x, y in zip(before[n_a:], after[n_a:]))
    assert set(tr.state.output) == {"loss", "loss_sup", "loss_cps", "unsup_weight"}
    assert all(not v.requires_grad for v in tr.state.output.values())


# ------------------------------------------------------------------------------------------- the base API
def test_base_steps_then_calls_post_step_and_rejects_unpaired_batches():
    net = unet(0)
    order = []

    class Toy(SemiSupervisedTrainer):
        def compute_losses(self, x_l, y, x_u, epoch):
            order.append("losses")
            return {"loss": self.sup_loss(self.network(x_l), y)}

        def post_step(self):
            order.append("post_step" if self.optimizers[0].state else "post_step before the step")

    Toy(**common(net)).run()
    assert order == ["losses", "post_step"]
    with pytest.raises(ValueError, match="at least one network"):
        Toy(**{**common(net), "networks": []})
    tr = Toy(**{**common(net), "train_data_loader": DataLoader([{"image": torch.zeros(1, SIZE, SIZE)}])})
    with pytest.raises(KeyError, match="has no 'labeled' stream"):
        tr.run()


def test_cotrainer_takes_the_cps_loss_from_the_config():
    from custom_components.engines import CoTrainer
    from custom_components.networks import DiffusionTeacher

    torch.manual_seed(0)
    t, s = (DiffusionTeacher(2, 1, 2, channels=(8, 16), norm_num_groups=4) for _ in range(2))

    class Const(torch.nn.Module):
        def forward(self, a, b):
            return a.sum() * 0 + 1.25

    opts = torch.optim.Adam(t.parameters()), torch.optim.Adam(s.mask_net.parameters())
    tr = CoTrainer("cpu", 1, paired(), t, s, *opts, cps_loss=Const(), rounds=0)
    x_l, y, x_u = batch()
    assert float(tr.compute_losses(x_l, y, x_u, 0)["loss_cps"]) == 1.25


# ------------------------------------------------------------------------------------------- BCP
def test_paste_mask_is_ones_with_one_zero_box_of_two_thirds():
    g = torch.Generator().manual_seed(0)
    for spatial in ((12, 9), (6, 6, 9)):
        m = paste_mask(spatial, generator=g)
        assert m.shape == (1, 1, *spatial) and set(m.unique().tolist()) == {0.0, 1.0}
        zero = (m[0, 0] == 0).nonzero()
        sides = [round(2 / 3 * s) for s in spatial]
        assert int((m == 0).sum()) == math.prod(sides)
        assert (zero.max(0).values - zero.min(0).values + 1).tolist() == sides  # one contiguous box


def test_masked_dice_ce_formula_and_region():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    t = torch.randint(0, 3, (2, 1, 4, 4), generator=g)
    w = torch.ones(1, 1, 4, 4)
    w[..., :2] = 0
    dice, ce = masked_dice_ce(logits, t, w)
    p, oh = logits.softmax(1), torch.nn.functional.one_hot(t[:, 0], 3).movedim(-1, 1).float()
    sel = (slice(None), slice(None), slice(None), slice(2, None))
    inter = (p * oh)[sel].sum((0, 2, 3))
    expected = (1 - (2 * inter + 1e-5) / ((p * p)[sel].sum((0, 2, 3)) + (oh * oh)[sel].sum((0, 2, 3)) + 1e-5)).mean()
    torch.testing.assert_close(dice, expected)
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(logits[sel], t[:, 0][..., 2:]))
    changed = logits.clone()
    changed[..., :2] += 5 * torch.randn(2, 3, 4, 2, generator=g)  # outside the region: no effect
    torch.testing.assert_close(masked_dice_ce(changed, t, w), (dice, ce))


def _bcp(monkeypatch, progress: float):
    from custom_components.engines import baselines

    student, teacher_net = unet(0), unet(1)
    tr = BCPTrainer(teacher=ema(teacher_net), **common(student))
    m = torch.ones(1, 1, SIZE, SIZE)
    m[..., 2:12, 5:15] = 0
    monkeypatch.setattr(baselines, "paste_mask", lambda *a, **k: m)
    monkeypatch.setattr(tr, "progress", lambda: progress)
    return tr, student, tr.teacher.module, m


def test_bcp_loss_equals_the_bidirectional_copy_paste_formula(monkeypatch):
    tr, s, t, m = _bcp(monkeypatch, 0.5)
    x_l, y, x_u = batch(3, 3)
    out = tr.compute_losses(x_l, y, x_u, 0)

    def ell(logits, target, w):
        return sum(masked_dice_ce(logits, target, w)) / 2

    xb, yb, ub = x_l.roll(1, 0), y.roll(1, 0), x_u.roll(1, 0)
    pa, pb = t(x_u).argmax(1, keepdim=True), t(ub).argmax(1, keepdim=True)
    q_in, q_out = s(x_l * m + x_u * (1 - m)), s(ub * m + xb * (1 - m))
    loss_in = ell(q_in, y, m) + 0.5 * ell(q_in, pa, 1 - m)
    loss_out = 0.5 * ell(q_out, pb, m) + ell(q_out, yb, 1 - m)
    torch.testing.assert_close(out["loss_in"], loss_in)
    torch.testing.assert_close(out["loss_out"], loss_out)
    torch.testing.assert_close(out["loss"], loss_in + loss_out)


def test_bcp_pretraining_stage_mixes_labelled_images_and_the_teacher_copies_the_student(monkeypatch):
    tr, s, t, m = _bcp(monkeypatch, 0.1)
    x_l, y, x_u = batch(3, 3)
    out = tr.compute_losses(x_l, y, x_u, 0)
    q = s(x_l * m + x_l.roll(1, 0) * (1 - m))
    expected = sum(masked_dice_ce(q, y, m)) / 2 + sum(masked_dice_ce(q, y.roll(1, 0), 1 - m)) / 2
    torch.testing.assert_close(out["loss"], expected)
    assert float(out["pretraining"]) == 1.0
    tr.post_step()
    for a, b in zip(s.parameters(), t.parameters()):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------- UniMatch
def _unimatch(monkeypatch, threshold: float, fp_dropout: float = 0.0):
    from custom_components.engines import baselines

    net = unet(0)
    with torch.no_grad():  # confident predictions on part of the image
        for p in net.parameters():
            p.mul_(3.0)
    tr = UniMatchTrainer(threshold=threshold, fp_dropout=fp_dropout, **common(net))
    box = torch.zeros(2, 1, SIZE, SIZE)
    box[0, :, 3:9, 4:12] = 1
    monkeypatch.setattr(baselines, "cutmix_box", lambda *a, **k: box)
    monkeypatch.setattr(baselines, "strong_intensity", lambda x: 0.5 * x + 0.1)
    return tr, net, box


def test_unimatch_loss_equals_its_formula_with_the_confidence_threshold(monkeypatch):
    tr, net, box = _unimatch(monkeypatch, threshold=0.9)
    x_l, y, x_u = batch()
    out = tr.compute_losses(x_l, y, x_u, 0)
    conf, pseudo = net(x_u).softmax(1).max(1, keepdim=True)
    s = 0.5 * x_u + 0.1
    x_s = s * (1 - box) + s.roll(1, 0) * box
    pseudo_s = torch.where(box > 0, pseudo.roll(1, 0), pseudo)
    conf_s = torch.where(box > 0, conf.roll(1, 0), conf)

    def dice(logits, target, c):
        return masked_dice_ce(logits, target, (c >= 0.9).float())[0]

    l_s = dice(net(x_s), pseudo_s, conf_s)
    l_fp = dice(net(x_u), pseudo, conf)
    expected = (SUP(net(x_l), y) + 0.25 * l_s + 0.25 * l_s + 0.5 * l_fp) / 2
    torch.testing.assert_close(out["loss"], expected)
    assert 0.0 < float(out["mask_fraction"]) < 1.0  # the threshold matters on these inputs
    torch.testing.assert_close(out["mask_fraction"], (conf >= 0.9).float().mean())


def test_unimatch_feature_dropout_perturbs_only_its_own_stream():
    net = unet(0)
    tr = UniMatchTrainer(fp_dropout=0.5, **common(net))
    assert len(unet_encoder_blocks(net)) == 2  # one down block and the bottom block
    x = batch()[2]
    plain = net(x)
    torch.manual_seed(0)
    assert not torch.allclose(tr.perturbed(x), plain)
    torch.testing.assert_close(net(x), plain)  # the hook is off outside the perturbed stream
    with pytest.raises(TypeError, match="not a MONAI UNet"):
        unet_encoder_blocks(torch.nn.Conv2d(1, 2, 1))

"""The semi-supervised baselines, each one :class:`~custom_components.engines.base.SemiSupervisedTrainer`: its
``compute_losses`` (the published formula) and, for teacher-student methods, the EMA update in ``post_step``.

They train the supervised bundle's network (``@network``, the student) with the bundle's supervised loss
(``sup_loss``) on the labelled batch; the bundles are ``bundles/supervised/configs/methods/<method>.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import CommonKeys
from torch.optim.swa_utils import AveragedModel

from ..losses import CPSLoss
from .base import SemiSupervisedTrainer

__all__ = ["BCPTrainer", "CPSTrainer", "MeanTeacherTrainer", "SigmoidRampUp", "UAMTTrainer", "UniMatchTrainer",
           "consistency_mse", "cutmix_box", "masked_dice_ce", "paste_mask", "strong_intensity",
           "uncertainty_masked_mse", "unet_encoder_blocks"]


class SigmoidRampUp:
    """``w(t) = w_max * exp(-5 (1 - min(1, t / ramp))^2)`` of the fraction ``t`` of training done (Laine & Aila
    2017, used by mean teacher, UA-MT and CPS).

    Args:
        w_max: the final weight.
        ramp: the fraction of training over which it ramps up (1.0: the whole run, as in the published code).

    Raises:
        ValueError: for ``w_max < 0`` or ``ramp`` outside (0, 1].
    """

    def __init__(self, w_max: float = 0.1, ramp: float = 1.0) -> None:
        if w_max < 0 or not 0.0 < ramp <= 1.0:
            raise ValueError(f"need w_max >= 0 and ramp in (0, 1], got w_max={w_max}, ramp={ramp}.")
        self.w_max = w_max
        self.ramp = ramp

    def __call__(self, t: float) -> float:
        phase = 1.0 - min(1.0, max(0.0, t) / self.ramp)
        return self.w_max * math.exp(-5.0 * phase * phase)


def consistency_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two softmax maps (the teacher's detached), over every voxel and class."""
    return ((student_logits.float().softmax(1) - teacher_logits.detach().float().softmax(1)) ** 2).mean()


def uncertainty_masked_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, uncertainty: torch.Tensor,
                           threshold: float) -> torch.Tensor:
    """UA-MT's consistency: the squared softmax difference averaged over the voxels whose uncertainty is below
    ``threshold`` (``sum(mask * d) / (K * sum(mask) + 1e-16)``, Yu et al. 2019).

    Args:
        student_logits: ``(B, K, *spatial)``.
        teacher_logits: same shape (detached here).
        uncertainty: ``(B, 1, *spatial)`` predictive entropy.
        threshold: voxels with ``uncertainty < threshold`` count.
    """
    d = (student_logits.float().softmax(1) - teacher_logits.detach().float().softmax(1)) ** 2
    mask = (uncertainty < threshold).float()
    return (mask * d).sum() / (d.shape[1] * mask.sum() + 1e-16)


class MeanTeacherTrainer(SemiSupervisedTrainer):
    """Mean teacher (Tarvainen & Valpola 2017): ``L = sup_loss(S(x_l), y) + w(t) MSE(softmax S(x_u),
    softmax T(x_u + n))`` with ``n = clip(0.1 N(0, 1), -0.2, 0.2)``; after each step ``T <- EMA(S)``.

    ``engine.state.output``: ``loss``, ``loss_sup``, ``loss_cons``, ``unsup_weight``.

    Args:
        teacher: the EMA teacher (a ``torch.optim.swa_utils.AveragedModel`` of the student with an EMA
            ``multi_avg_fn``); updated in :meth:`post_step`, never by an optimizer.
        unsup_weight: ``w(t)`` of the fraction of training done (default ``SigmoidRampUp(0.1)``).
        noise_std: std of the teacher's input noise (clipped at twice it; 0: none).
        kwargs: :class:`SemiSupervisedTrainer` arguments (``networks`` = the student first).
    """

    def __init__(self, *, teacher: AveragedModel, unsup_weight: Callable[[float], float] | None = None,
                 noise_std: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.teacher = teacher
        self.networks.append(teacher)  # train mode (dropout) like the published code; no optimizer
        self.unsup_weight = unsup_weight or SigmoidRampUp(0.1)
        self.noise_std = noise_std

    def noisy(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus the clipped Gaussian noise of the teacher's input."""
        if self.noise_std <= 0:
            return x
        return x + (self.noise_std * torch.randn_like(x)).clamp(-2 * self.noise_std, 2 * self.noise_std)

    def supervised_and_unlabelled(self, x_l: torch.Tensor, y: torch.Tensor, x_u: torch.Tensor):
        """``(sup_loss(S(x_l), y), S(x_u))`` from one student pass."""
        p = self.network(torch.cat([x_l, x_u], 0))
        return self.sup_loss(p[: x_l.shape[0]], y), p[x_l.shape[0]:]

    def compute_losses(self, x_l, y, x_u, epoch):
        loss_sup, p_u = self.supervised_and_unlabelled(x_l, y, x_u)
        with torch.no_grad():
            t_u = self.teacher(self.noisy(x_u))
        loss_cons = consistency_mse(p_u, t_u)
        w = float(self.unsup_weight(self.progress()))
        return {CommonKeys.LOSS: loss_sup + w * loss_cons, "loss_sup": loss_sup, "loss_cons": loss_cons,
                "unsup_weight": torch.tensor(w)}

    def post_step(self) -> None:
        self.teacher.update_parameters(self.network)


class UAMTTrainer(MeanTeacherTrainer):
    """Uncertainty-aware mean teacher (Yu et al. MICCAI 2019): the mean teacher whose consistency counts only the
    voxels where the teacher is certain. ``mc_samples`` stochastic teacher passes (dropout on, noisy input) give
    the mean softmax ``mu`` and the uncertainty ``U = -sum_c mu_c log(mu_c + 1e-6)``; the threshold ramps as
    ``(0.75 + 0.25 r(t)) ln K`` with ``r(t) = exp(-5 (1 - t)^2)``; the consistency is
    :func:`uncertainty_masked_mse` between the student and one noisy teacher pass.

    ``engine.state.output``: those of :class:`MeanTeacherTrainer` plus ``mask_fraction``.

    Args:
        mc_samples: teacher passes ``T`` (8 in the paper); the network needs dropout (``network_def#dropout``).
        kwargs: :class:`MeanTeacherTrainer` arguments.
    """

    def __init__(self, *, mc_samples: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        if mc_samples < 1:
            raise ValueError(f"mc_samples must be >= 1, got {mc_samples}.")
        self.mc_samples = mc_samples
        self.threshold_ramp = SigmoidRampUp(1.0, 1.0)

    def uncertainty(self, x_u: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *spatial)`` entropy of the teacher's mean softmax over ``mc_samples`` noisy passes."""
        with torch.no_grad():
            reps = x_u.repeat(self.mc_samples, *[1] * (x_u.ndim - 1))
            probs = self.teacher(self.noisy(reps)).float().softmax(1)
            mu = probs.reshape(self.mc_samples, *x_u.shape[:1], *probs.shape[1:]).mean(0)
            return -(mu * torch.log(mu + 1e-6)).sum(1, keepdim=True)

    def compute_losses(self, x_l, y, x_u, epoch):
        loss_sup, p_u = self.supervised_and_unlabelled(x_l, y, x_u)
        with torch.no_grad():
            t_u = self.teacher(self.noisy(x_u))
        unc = self.uncertainty(x_u)
        t = self.progress()
        threshold = (0.75 + 0.25 * self.threshold_ramp(t)) * math.log(p_u.shape[1])
        loss_cons = uncertainty_masked_mse(p_u, t_u, unc, threshold)
        w = float(self.unsup_weight(t))
        return {CommonKeys.LOSS: loss_sup + w * loss_cons, "loss_sup": loss_sup, "loss_cons": loss_cons,
                "unsup_weight": torch.tensor(w), "mask_fraction": (unc < threshold).float().mean()}


class CPSTrainer(SemiSupervisedTrainer):
    """Cross pseudo-supervision with two networks of the same architecture (Chen et al. CVPR 2021):
    ``L = sup(A(x_l), y) + sup(B(x_l), y) + w(t) L_cps(A(x), B(x))`` over the labelled and unlabelled images
    ``x``, with ``L_cps(P_A, P_B) = l(P_A, argmax P_B) + l(P_B, argmax P_A)`` (``cps_loss``).

    ``engine.state.output``: ``loss``, ``loss_sup``, ``loss_cps``, ``unsup_weight``.

    Args:
        network_b: the second network (its parameters in one of ``optimizers``).
        cps_loss: the CPS loss (default ``CPSLoss()``; the bundle passes Dice + CE against the hard targets).
        unsup_weight: ``w(t)`` of the fraction of training done (default ``SigmoidRampUp(1.0)``).
        kwargs: :class:`SemiSupervisedTrainer` arguments (``networks`` = network A first).
    """

    def __init__(self, *, network_b: nn.Module, cps_loss: nn.Module | None = None,
                 unsup_weight: Callable[[float], float] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.network_b = network_b
        self.networks.append(network_b)
        self.cps_loss = cps_loss or CPSLoss()
        self.unsup_weight = unsup_weight or SigmoidRampUp(1.0)

    def compute_losses(self, x_l, y, x_u, epoch):
        n_l = x_l.shape[0]
        x = torch.cat([x_l, x_u], 0)
        p_a, p_b = self.network(x), self.network_b(x)
        loss_sup = self.sup_loss(p_a[:n_l], y) + self.sup_loss(p_b[:n_l], y)
        loss_cps = self.cps_loss(p_a, p_b)
        w = float(self.unsup_weight(self.progress()))
        return {CommonKeys.LOSS: loss_sup + w * loss_cps, "loss_sup": loss_sup, "loss_cps": loss_cps,
                "unsup_weight": torch.tensor(w)}


def paste_mask(spatial: tuple[int, ...], ratio: float = 2 / 3, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """BCP's copy-paste mask ``M``: ``(1, 1, *spatial)`` ones with a zero box of ``round(ratio * size)`` per axis
    at a uniformly random position (Bai et al. CVPR 2023).

    Args:
        spatial: the image's spatial shape.
        ratio: the box's side as a fraction of the image's (2/3 in the paper).
        generator: random generator of the position (default: torch's global one).
        device: the mask's device.
    """
    m = torch.ones(1, 1, *spatial, device=device)
    box = []
    for s in spatial:
        side = max(1, int(round(ratio * s)))
        start = int(torch.randint(0, s - side + 1, (1,), generator=generator))
        box.append(slice(start, start + side))
    m[(slice(None), slice(None), *box)] = 0.0
    return m


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                   smooth: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Dice, CE)`` of ``logits`` against hard ``target`` ``(B, 1, *spatial)`` over the voxels of ``weight``
    (``(B or 1, 1, *spatial)`` in [0, 1]): CE ``= sum(w ce) / (sum(w) + 1e-16)``; Dice ``= mean_c [1 - (2 sum(w p_c
    t_c) + s) / (sum(w p_c^2) + sum(w t_c^2) + s)]`` over the whole batch (BCP's masked losses)."""
    logits = logits.float()
    w = weight.expand(logits.shape[0], 1, *logits.shape[2:])
    t = target.detach().long()
    ce = F.cross_entropy(logits, t[:, 0], reduction="none").unsqueeze(1)
    loss_ce = (w * ce).sum() / (w.sum() + 1e-16)
    p = logits.softmax(1)
    oh = F.one_hot(t[:, 0], logits.shape[1]).movedim(-1, 1).float()
    dims = [0, *range(2, logits.ndim)]
    inter = (w * p * oh).sum(dims)
    den = (w * p * p).sum(dims) + (w * oh * oh).sum(dims)
    return (1 - (2 * inter + smooth) / (den + smooth)).mean(), loss_ce


class BCPTrainer(MeanTeacherTrainer):
    """Bidirectional copy-paste (Bai et al. CVPR 2023) on a mean teacher.

    With the box mask ``M`` (:func:`paste_mask`: 1 outside a random box of 2/3 of each side, 0 inside), labelled
    pairs ``(x_a, y_a)``, ``(x_b, y_b)`` (the batch and the batch rolled by one) and unlabelled ``u_a``, ``u_b``
    with the teacher's hard pseudo-labels ``p_a``, ``p_b``:

    - ``X_in = x_a M + u_a (1 - M)``, ``X_out = u_b M + x_b (1 - M)``;
    - ``L_in = l(S(X_in); y_a on M) + alpha l(S(X_in); p_a on 1 - M)``,
      ``L_out = alpha l(S(X_out); p_b on M) + l(S(X_out); y_b on 1 - M)``, with ``l = (Dice + CE) / 2`` restricted to
      the region (:func:`masked_dice_ce`) and ``alpha = u_weight`` (0.5);
    - ``L = L_in + L_out``; the teacher is the EMA of the student.

    The paper's pre-training stage (copy-paste between labelled images, then both networks start from it) runs
    inside the same budget: for the first ``pretrain_frac`` of training the loss is ``l`` on
    ``x_a M + x_b (1 - M)`` against ``y_a M + y_b (1 - M)`` and the teacher copies the student after each step.
    Not done here: the paper's largest-connected-component filter of the pseudo-labels.

    ``engine.state.output``: ``loss``, ``loss_in``, ``loss_out``, ``pretraining``.

    Args:
        u_weight: ``alpha``, the weight of the pseudo-labelled region.
        box_ratio: the box side as a fraction of the image's.
        pretrain_frac: the fraction of training spent in the pre-training stage.
        kwargs: :class:`MeanTeacherTrainer` arguments (``unsup_weight`` and ``noise_std`` are unused).
    """

    def __init__(self, *, u_weight: float = 0.5, box_ratio: float = 2 / 3, pretrain_frac: float = 0.25,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.u_weight = u_weight
        self.box_ratio = box_ratio
        self.pretrain_frac = pretrain_frac

    def region_loss(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``(Dice + CE) / 2`` over the voxels of ``weight``."""
        return sum(masked_dice_ce(logits, target, weight)) / 2

    def compute_losses(self, x_l, y, x_u, epoch):
        n = min(len(x_l), len(x_u))
        x_a, y_a, u_a = x_l[:n], y[:n], x_u[:n]
        x_b, y_b, u_b = x_a.roll(1, 0), y_a.roll(1, 0), u_a.roll(1, 0)
        m = paste_mask(tuple(x_l.shape[2:]), self.box_ratio, device=x_l.device)
        if self.progress() < self.pretrain_frac:
            p = self.network(x_a * m + x_b * (1 - m))
            loss = self.region_loss(p, y_a, m) + self.region_loss(p, y_b, 1 - m)
            zero = torch.zeros((), device=x_l.device)
            return {CommonKeys.LOSS: loss, "loss_in": loss.detach(), "loss_out": zero, "pretraining": zero + 1}
        with torch.no_grad():
            pseudo = self.teacher(torch.cat([u_a, u_b])).argmax(1, keepdim=True)
        p_a, p_b = pseudo[:n], pseudo[n:]
        p = self.network(torch.cat([x_a * m + u_a * (1 - m), u_b * m + x_b * (1 - m)]))
        loss_in = self.region_loss(p[:n], y_a, m) + self.u_weight * self.region_loss(p[:n], p_a, 1 - m)
        loss_out = self.u_weight * self.region_loss(p[n:], p_b, m) + self.region_loss(p[n:], y_b, 1 - m)
        return {CommonKeys.LOSS: loss_in + loss_out, "loss_in": loss_in, "loss_out": loss_out,
                "pretraining": torch.zeros((), device=x_l.device)}

    def post_step(self) -> None:
        if self.progress() < self.pretrain_frac:  # pre-training: the teacher starts from the student
            with torch.no_grad():
                for t, s in zip(self.teacher.module.state_dict().values(), self.network.state_dict().values()):
                    t.copy_(s)
            return
        super().post_step()


def unet_encoder_blocks(net: nn.Module) -> list[nn.Module]:
    """The encoder blocks of a MONAI ``UNet`` (each level's down block and the bottom block), whose outputs are the
    features UniMatch perturbs.

    Raises:
        TypeError: for a network without MONAI ``UNet``'s ``model`` layout (pass ``fp_modules`` instead).
    """
    from monai.networks.layers import SkipConnection

    seq, blocks = getattr(net, "model", None), []
    while isinstance(seq, nn.Sequential) and len(seq) == 3 and isinstance(seq[1], SkipConnection):
        blocks.append(seq[0])
        seq = seq[1].submodule
    if not blocks:
        raise TypeError(f"{type(net).__name__} is not a MONAI UNet; name its encoder blocks in fp_modules.")
    return [*blocks, seq]


def cutmix_box(n: int, spatial: tuple[int, ...], p: float = 0.5, area: tuple[float, float] = (0.02, 0.4),
               device: torch.device | str = "cpu") -> torch.Tensor:
    """UniMatch's CutMix boxes: ``(n, 1, *spatial)``, per sample with probability ``p`` a box of a random fraction
    of the image (uniform in ``area``; the same fraction per axis) at a random position set to 1, else all 0."""
    out = torch.zeros(n, 1, *spatial, device=device)
    for i in range(n):
        if float(torch.rand(())) >= p:
            continue
        frac = float(torch.empty(()).uniform_(*area)) ** (1 / len(spatial))
        box = []
        for s in spatial:
            side = max(1, int(round(frac * s)))
            start = int(torch.randint(0, s - side + 1, (1,)))
            box.append(slice(start, start + side))
        out[(i, slice(None), *box)] = 1.0
    return out


def strong_intensity(x: torch.Tensor, p_jitter: float = 0.8, p_blur: float = 0.5) -> torch.Tensor:
    """UniMatch's strong image perturbation for grey / colour medical images, per sample: with ``p_jitter`` a
    brightness and contrast jitter (factors uniform in [0.5, 1.5]), with ``p_blur`` a Gaussian blur (sigma uniform in
    [0.1, 2.0] voxels)."""
    from monai.transforms import GaussianSmooth

    out = []
    for xi in x:
        if float(torch.rand(())) < p_jitter:
            b, c = torch.empty(2).uniform_(0.5, 1.5).tolist()
            mean = xi.mean()
            xi = (xi - mean) * c + mean * b
        if float(torch.rand(())) < p_blur:
            xi = GaussianSmooth(sigma=float(torch.empty(()).uniform_(0.1, 2.0)))(xi)
        out.append(torch.as_tensor(xi))
    return torch.stack(out)


class UniMatchTrainer(SemiSupervisedTrainer):
    """UniMatch (Yang et al. CVPR 2023, the medical-image variant): one network, weak / strong views of the
    unlabelled images and a feature-perturbed stream.

    The weak view ``x_w`` is the loaded unlabelled batch (the bundle's flips and rotations). Its prediction, taken
    without gradient, gives the pseudo-label ``argmax`` and the confidence ``max softmax``; only voxels with
    confidence ``>= threshold`` (0.95) count. Two strong views ``x_s1``, ``x_s2`` (:func:`strong_intensity`, then
    CutMix with the batch rolled by one, :func:`cutmix_box`; the pasted region takes the partner's pseudo-label and
    confidence) and the feature-perturbed prediction of ``x_w`` (channel dropout ``fp_dropout`` on every encoder
    block's output, :func:`unet_encoder_blocks`) are trained on them:

    ``L = (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2`` with ``L_x = sup_loss(S(x_l), y)`` and each unlabelled
    term the Dice of the softmax against the pseudo-label over the confident voxels (:func:`masked_dice_ce`'s Dice,
    weight = the confidence mask).

    ``engine.state.output``: ``loss``, ``loss_sup``, ``loss_s``, ``loss_fp``, ``mask_fraction``.

    Args:
        threshold: the confidence threshold.
        fp_dropout: the feature dropout rate.
        fp_modules: the modules whose outputs are perturbed (default: the encoder blocks of a MONAI ``UNet``).
        kwargs: :class:`SemiSupervisedTrainer` arguments.
    """

    def __init__(self, *, threshold: float = 0.95, fp_dropout: float = 0.5, fp_modules: list[nn.Module] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.fp_dropout = fp_dropout
        self._perturb = False
        for module in fp_modules or unet_encoder_blocks(self.network):
            module.register_forward_hook(self._feature_dropout)

    def _feature_dropout(self, module, inputs, output):
        if not self._perturb:
            return None
        drop = F.dropout2d if output.ndim == 4 else F.dropout3d
        return drop(output, self.fp_dropout, training=True)

    def perturbed(self, x: torch.Tensor) -> torch.Tensor:
        """The network's prediction of ``x`` with its encoder features dropped out."""
        self._perturb = True
        try:
            return self.network(x)
        finally:
            self._perturb = False

    def unlabelled_dice(self, logits: torch.Tensor, pseudo: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
        """Dice of ``logits`` against ``pseudo`` over the voxels with ``conf >= threshold``."""
        return masked_dice_ce(logits, pseudo, (conf >= self.threshold).float())[0]

    def compute_losses(self, x_l, y, x_u, epoch):
        n_l = x_l.shape[0]
        with torch.no_grad():
            self.network.eval()
            prob_w = self.network(x_u).float().softmax(1)
            self.network.train()
        conf, pseudo = prob_w.max(1, keepdim=True)
        conf_mix, pseudo_mix = conf.roll(1, 0), pseudo.roll(1, 0)
        strong, targets = [], []
        for _ in range(2):
            box = cutmix_box(x_u.shape[0], tuple(x_u.shape[2:]), device=x_u.device)
            s = strong_intensity(x_u)
            strong.append(s * (1 - box) + s.roll(1, 0) * box)
            targets.append((torch.where(box > 0, pseudo_mix, pseudo), torch.where(box > 0, conf_mix, conf)))
        p_fp = self.perturbed(x_u)
        p_l, p_s1, p_s2 = self.network(torch.cat([x_l, *strong])).split([n_l, x_u.shape[0], x_u.shape[0]])
        loss_sup = self.sup_loss(p_l, y)
        loss_s1 = self.unlabelled_dice(p_s1, *targets[0])
        loss_s2 = self.unlabelled_dice(p_s2, *targets[1])
        loss_fp = self.unlabelled_dice(p_fp, pseudo, conf)
        loss = (loss_sup + 0.25 * loss_s1 + 0.25 * loss_s2 + 0.5 * loss_fp) / 2
        return {CommonKeys.LOSS: loss, "loss_sup": loss_sup, "loss_s": (loss_s1 + loss_s2) / 2, "loss_fp": loss_fp,
                "mask_fraction": (conf >= self.threshold).float().mean()}

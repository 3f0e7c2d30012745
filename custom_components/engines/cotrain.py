"""Phase 2: teacher / twin-student co-training with CPS and R diffusion rounds (METHOD.md, "Phase 2")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys
from torch.utils.checkpoint import checkpoint

from ..losses import CPSLoss, HardTargetDiceLoss, check_pseudo_settings, pseudo_labels, weighted_loss
from ..networks.rounds import RoundMode
from ..networks.teacher import DiffusionTeacher, check_spatial_size, probabilities_to_mask
from .base import SemiSupervisedTrainer
from .baselines import SigmoidRampUp

__all__ = ["RAMP_SHAPES", "ROUND_BATCHES", "CoTrainer", "LinearRampUp", "ProgressRampUp"]

#: which part of the batch the R diffusion rounds run on (``round_batch``)
ROUND_BATCHES = ("all", "unlabeled")
#: shapes of :class:`ProgressRampUp` (``unlabeled_rampup``)
RAMP_SHAPES = ("sigmoid", "linear")


class LinearRampUp:
    """``lambda(e) = lambda_max * min(1, (e + 1) / ramp_epochs)`` for a 0-based epoch ``e``.

    Args:
        lambda_max: the final weight.
        ramp_epochs: epochs to reach it (``E_ramp``); must be >= 1.

    Raises:
        ValueError: for ``ramp_epochs < 1`` or ``lambda_max < 0``.
    """

    def __init__(self, lambda_max: float = 1.0, ramp_epochs: int = 1) -> None:
        if ramp_epochs < 1:
            raise ValueError(f"ramp_epochs must be >= 1, got {ramp_epochs}.")
        if lambda_max < 0:
            raise ValueError(f"lambda_max must be >= 0, got {lambda_max}.")
        self.lambda_max = lambda_max
        self.ramp_epochs = ramp_epochs

    def __call__(self, epoch: int) -> float:
        return self.lambda_max * min(1.0, (epoch + 1) / self.ramp_epochs)


class ProgressRampUp:
    """The weight of the unlabelled terms as a function of the fraction ``t`` of training done (iterations, not
    epochs): ``lambda_max * r(t)`` with ``r`` reaching 1 at ``t = ramp`` and 1 after it; ``"sigmoid"``:
    ``exp(-5 (1 - t / ramp)^2)`` (:class:`SigmoidRampUp`, about 0.007 at ``t = 0``), ``"linear"``: ``t / ramp`` (0 at
    ``t = 0``). The co-training's ``unsup_rampup`` (issue 25 safeguard, off by default).

    Args:
        lambda_max: the final weight.
        ramp: the fraction of the iterations over which it ramps up, in (0, 1].
        shape: ``"sigmoid"`` or ``"linear"``.

    Raises:
        ValueError: for ``lambda_max < 0``, ``ramp`` outside (0, 1] or an unknown shape.
    """

    def __init__(self, lambda_max: float = 1.0, ramp: float = 0.2, shape: str = "sigmoid") -> None:
        if shape not in RAMP_SHAPES:
            raise ValueError(f"unlabeled_rampup must be one of {list(RAMP_SHAPES)}, got {shape!r}.")
        self.sigmoid = SigmoidRampUp(lambda_max, ramp)  # validates lambda_max and ramp
        self.lambda_max, self.ramp, self.shape = float(lambda_max), float(ramp), shape

    def __call__(self, t: float) -> float:
        if self.shape == "sigmoid":
            return self.sigmoid(t)
        return self.lambda_max * min(1.0, max(0.0, t) / self.ramp)


class CoTrainer(SemiSupervisedTrainer):
    """Teacher / twin-student co-training (the paper's method, one :class:`SemiSupervisedTrainer`).

    Every iteration takes a labelled batch ``(x_l, y)`` and an unlabelled batch ``x_u`` (a ``PairedLoader``
    item). Both networks segment both batches (``P_S``, ``P_T``, each with its own noise draw), then:

    - ``L_cps = Dice(P_S, argmax P_T) + Dice(P_T, argmax P_S)`` on ``x_u``;
    - for ``j = 1..R``: ``(L_rec_j, x0_hat_j) = G_T(x | m = stopgrad(2 softmax(P_T) - 1))``,
      ``P~_j = S_T(stopgrad(x0_hat_j))``, ``L_align_j = Dice(P~_j, target)`` with ``target = argmax P_S`` on
      ``x_u`` and ``y`` on ``x_l``; ``round_mode="chained"`` conditions round ``j`` on ``P~_(j-1)`` instead;
    - ``L_unsup = lambda(e) [L_cps + (w_d / R) sum_j (L_align_j + L_rec_j)]`` on ``x_u``;
    - ``L_sup = Dice(P_S, y) + Dice(P_T, y) + (w_d / R) sum_j (L_align_j + L_rec_j)`` on ``(x_l, y)``;
    - ``L = L_sup + L_unsup``; both optimizers step.

    Safeguards against a misleading teacher (issue 25; off by default, the paper's behaviour): ``pseudo_confidence``
    / ``pseudo_weighting`` weight every pseudo-supervised pixel (both CPS directions and the unlabelled alignment
    target ``argmax P_S``) by its source's confidence (:func:`~custom_components.losses.pseudo_labels`);
    ``unsup_rampup`` replaces ``lambda(e)`` by a ramp of the fraction of iterations done (:class:`ProgressRampUp`).

    Gradient routing follows from the detaches: CPS and the supervised Dice train ``S_S`` and ``S_T``; the
    alignment terms train only ``S_T`` (detached input, hard target); the reconstruction terms train only
    ``G_T`` (detached condition). ``R = 0`` is plain CPS.

    With ``batch_rounds`` (default) the ``R`` independent rounds run as one forward pass over an ``R``-times
    repeated batch: the same maths (each round has its own ``t_j`` and noise), fewer kernel launches.

    ``engine.state.output`` holds ``loss``, ``loss_sup``, ``loss_unsup``, ``loss_sup_dice``, ``loss_cps``,
    ``loss_align``, ``loss_rec`` (each round-sum over labelled + unlabelled, divided by ``R``) and
    ``unsup_weight``; with ``pseudo_confidence > 0`` also ``pseudo_kept`` (the fraction of unlabelled pixels whose
    pseudo-label passes the threshold, mean over the teacher's and the student's).

    Args:
        device: training device.
        max_epochs: number of epochs.
        train_data_loader: a ``PairedLoader`` of labelled and unlabelled batches.
        teacher: the teacher (phase-1 weights or fresh for plain CPS).
        student: the twin student (same architecture; only its mask pathway is used).
        teacher_optimizer: optimizer of the teacher's parameters (both pathways).
        student_optimizer: optimizer of the student's mask-pathway parameters.
        seg_loss: ``Dice(P, target)`` against hard targets (default ``HardTargetDiceLoss()``; pass
            ``HardTargetDiceLoss(use_ce=True)`` for Dice + CE).
        cps_loss: ``L_cps(P_S, P_T)`` (default ``CPSLoss(seg_loss)``).
        rounds: ``R >= 0``.
        round_mode: ``"independent"`` or ``"chained"``.
        w_d: weight ``w_d`` of the diffusion terms.
        unsup_weight: callable ``lambda(e)`` of the 0-based epoch (default ``LinearRampUp(1.0, max_epochs)``).
        unsup_rampup: **safeguard, changes the method** (``None``: off): a callable of the fraction of training done
            (``progress()``, per iteration), e.g. ``ProgressRampUp(1.0, 0.2)``; when given, it replaces
            ``unsup_weight`` as the weight of every unlabelled term.
        pseudo_confidence: **safeguard, changes the method** (0: off): pseudo-labelled pixels whose source
            probability (max softmax of the network that gives the target) is under this threshold in [0, 1) are
            ignored by CPS and the unlabelled alignment terms.
        pseudo_weighting: **safeguard, changes the method** (``"hard"``: off): ``"confidence"`` weights each kept
            pseudo-labelled pixel by its source probability. Dice normalises itself over the kept pixels (a ratio of
            weighted sums); CE (``use_ce``) is divided by the number of kept pixels.
        batch_rounds: run independent rounds as one batched forward pass.
        checkpoint_rounds: the memory switch for 3D: the rounds run one at a time (as with ``batch_rounds=False``),
            each under activation checkpointing (``torch.utils.checkpoint``), so only one round's activations live
            at a time in the backward pass; they are recomputed with the same RNG state (same ``t_j`` and noise),
            so losses and gradients equal those of ``batch_rounds=False``. Costs one more forward pass of the
            rounds per step.
        round_scale: **changes the method** (an option, off at 1.0): the rounds run at this fraction of the input's
            spatial size: image and condition are area-downsampled, ``G_T`` and ``S_T`` run there (``L_rec`` is the
            noise error at that size) and ``P~_j`` is upsampled back (bilinear / trilinear) for ``L_align``
            against the full-resolution targets. 0.5 makes the rounds' passes about 4x (2D) cheaper; its effect on
            Dice is in ``docs/performance.md``.
        round_batch: **changes the method** (an option, ``"all"`` by default): ``"unlabeled"`` runs the R rounds
            on the unlabelled half of the batch only (the labelled ``L_align_j`` and ``L_rec_j`` are 0, the
            unlabelled ones unchanged): half the rounds' passes at equal halves.
        epoch_length: iterations per epoch (default: the paired loader's length).
        non_blocking: non-blocking copies.
        amp: autocast on.
        amp_dtype: ``"bfloat16"`` or ``"float16"``.
        grad_clip_norm: gradient-norm clipping (``None``: off).
        train_handlers: Ignite handlers of the trainer.
        image_key: image key.
        label_key: label key.
        labeled_key: key of the labelled batch in a paired item.
        unlabeled_key: key of the unlabelled batch in a paired item.

    Raises:
        ValueError: for ``rounds < 0``, an unknown ``round_mode``, ``round_scale`` outside (0, 1], a student
            whose channels or classes differ from the teacher's, a pseudo-label setting out of range, or a
            ``cps_loss`` (a ``CPSLoss``) whose pseudo-label settings differ from the trainer's.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        teacher: DiffusionTeacher,
        student: DiffusionTeacher,
        teacher_optimizer: torch.optim.Optimizer,
        student_optimizer: torch.optim.Optimizer,
        seg_loss: nn.Module | None = None,
        cps_loss: nn.Module | None = None,
        rounds: int = 3,
        round_mode: str = "independent",
        w_d: float = 1.0,
        unsup_weight: Callable[[int], float] | None = None,
        unsup_rampup: Callable[[float], float] | None = None,
        pseudo_confidence: float = 0.0,
        pseudo_weighting: str = "hard",
        batch_rounds: bool = True,
        checkpoint_rounds: bool = False,
        round_scale: float = 1.0,
        round_batch: str = "all",
        epoch_length: int | None = None,
        non_blocking: bool = False,
        amp: bool = False,
        amp_dtype: str = "bfloat16",
        grad_clip_norm: float | None = None,
        train_handlers: Sequence | None = None,
        image_key: str = CommonKeys.IMAGE,
        label_key: str = CommonKeys.LABEL,
        labeled_key: str = "labeled",
        unlabeled_key: str = "unlabeled",
    ) -> None:
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}.")
        round_mode = RoundMode.parse(round_mode)
        if not 0.0 < round_scale <= 1.0:
            raise ValueError(f"round_scale must be in (0, 1], got {round_scale}.")
        if round_batch not in ROUND_BATCHES:
            raise ValueError(f"round_batch must be one of {list(ROUND_BATCHES)}, got {round_batch!r}.")
        check_pseudo_settings(pseudo_confidence, pseudo_weighting)
        if isinstance(cps_loss, CPSLoss) and (cps_loss.confidence, cps_loss.weighting) != (
                float(pseudo_confidence), pseudo_weighting):
            raise ValueError(
                f"cps_loss weights its pseudo-labels with confidence {cps_loss.confidence}, weighting "
                f"{cps_loss.weighting!r}; the trainer's alignment targets with {pseudo_confidence}, "
                f"{pseudo_weighting!r}: pass the same pseudo_confidence / pseudo_weighting to both."
            )
        if teacher.num_classes != student.num_classes or teacher.in_channels != student.in_channels:
            raise ValueError(
                f"the twin student must match the teacher: teacher (in_channels={teacher.in_channels}, "
                f"num_classes={teacher.num_classes}), student (in_channels={student.in_channels}, "
                f"num_classes={student.num_classes})."
            )
        super().__init__(
            device, max_epochs, train_data_loader, [teacher, student], [teacher_optimizer, student_optimizer], None,
            epoch_length, non_blocking, amp, amp_dtype, grad_clip_norm, train_handlers, image_key, label_key,
            labeled_key, unlabeled_key,
        )
        self.teacher = teacher
        self.student = student
        self.teacher_optimizer = teacher_optimizer
        self.student_optimizer = student_optimizer
        self.seg_loss = seg_loss or HardTargetDiceLoss()
        self.pseudo_confidence = float(pseudo_confidence)
        self.pseudo_weighting = pseudo_weighting
        self.cps_loss = cps_loss or CPSLoss(self.seg_loss, self.pseudo_confidence, pseudo_weighting)
        self.rounds = rounds
        self.round_mode = round_mode
        self.w_d = w_d
        self.unsup_weight = unsup_weight or LinearRampUp(1.0, max_epochs)
        self.unsup_rampup = unsup_rampup
        self.batch_rounds = batch_rounds
        self.checkpoint_rounds = checkpoint_rounds
        self.round_scale = float(round_scale)
        self.round_batch = round_batch

    def check_inputs(self, x_l: torch.Tensor, x_u: torch.Tensor) -> None:
        self.teacher.check_input(x_l, "labelled batch")
        self.teacher.check_input(x_u, "unlabelled batch")

    def compute_losses(self, x_l: torch.Tensor, y: torch.Tensor, x_u: torch.Tensor,
                       epoch: int) -> dict[str, torch.Tensor]:
        """All loss terms of one iteration (no optimizer step); ``loss`` is the total.

        Args:
            x_l: labelled images ``(B_l, C, *spatial)``.
            y: their labels ``(B_l, 1, *spatial)``.
            x_u: unlabelled images ``(B_u, C, *spatial)``.
            epoch: the 0-based epoch of the ramp-up.
        """
        n_l = x_l.shape[0]
        x = torch.cat([x_l, x_u], dim=0)
        seg = self.seg_loss
        p_s = self.student.segment(x)
        p_t = self.teacher.segment(x)
        self.fire_event(IterationEvents.FORWARD_COMPLETED)
        ps_l, ps_u, pt_l, pt_u = p_s[:n_l], p_s[n_l:], p_t[:n_l], p_t[n_l:]
        loss_sup_dice = seg(ps_l, y) + seg(pt_l, y)
        loss_cps = self.cps_loss(ps_u, pt_u)
        target_u, weight_u = pseudo_labels(ps_u, self.pseudo_confidence, self.pseudo_weighting)
        target = torch.cat([y.long(), target_u], dim=0)
        zero = torch.zeros((), device=x.device)
        align_l, align_u, rec_l, rec_u = zero, zero, zero, zero
        r = self.rounds
        if r > 0:
            cond = probabilities_to_mask(p_t.detach().float().softmax(1)).to(x.dtype)
            xr, n_r = x, n_l
            if self.round_batch == "unlabeled":  # the labelled terms stay 0
                xr, cond, target, n_r = x[n_l:], cond[n_l:], target[n_l:], 0
            if self.round_mode == RoundMode.INDEPENDENT and self.batch_rounds and not self.checkpoint_rounds:
                align_l, align_u, rec_l, rec_u = self._run_round(xr, cond, target, weight_u, n_r, r)[:4]
            else:
                for _ in range(r):
                    a_l, a_u, r_l, r_u, p_tilde = self._run_round(xr, cond, target, weight_u, n_r, 1)
                    align_l, align_u, rec_l, rec_u = align_l + a_l, align_u + a_u, rec_l + r_l, rec_u + r_u
                    if self.round_mode == RoundMode.CHAINED:
                        cond = probabilities_to_mask(p_tilde.float().softmax(1)).to(x.dtype)
        coef = self.w_d / r if r > 0 else 0.0
        lam = float(self.unsup_weight(epoch) if self.unsup_rampup is None else self.unsup_rampup(self.progress()))
        loss_unsup = lam * (loss_cps + coef * (align_u + rec_u))
        loss_sup = loss_sup_dice + coef * (align_l + rec_l)
        loss = loss_sup + loss_unsup
        self.fire_event(IterationEvents.LOSS_COMPLETED)
        denom = max(r, 1)
        extra = {}
        if self.pseudo_confidence > 0:
            extra["pseudo_kept"] = sum((p.detach().float().softmax(1).amax(1) >= self.pseudo_confidence).float().mean()
                                       for p in (ps_u, pt_u)) / 2
        return {
            CommonKeys.LOSS: loss,
            "loss_sup": loss_sup,
            "loss_unsup": loss_unsup,
            "loss_sup_dice": loss_sup_dice,
            "loss_cps": loss_cps,
            "loss_align": (align_l + align_u) / denom,
            "loss_rec": (rec_l + rec_u) / denom,
            "unsup_weight": torch.tensor(lam),
            **extra,
        }

    def _run_round(
        self, x: torch.Tensor, cond: torch.Tensor, target: torch.Tensor, weight_u: torch.Tensor | None, n_l: int,
        repeats: int,
    ) -> tuple[torch.Tensor, ...]:
        """``repeats`` independent rounds as one forward pass over a ``repeats``-times repeated batch (each copy its
        own ``t_j`` and noise), under activation checkpointing when ``checkpoint_rounds`` is on (then ``repeats``
        is 1). ``weight_u``: the per-pixel weights of the unlabelled targets ``target[n_l:]`` (``None``: off).

        Returns ``(align_l, align_u, rec_l, rec_u, p_tilde)``: the round-sums of the labelled / unlabelled
        alignment and reconstruction terms and the detached re-segmentation logits of the last copy.
        """
        if self.checkpoint_rounds and torch.is_grad_enabled():
            # recomputed in backward with the same RNG state (same t_j and noise), so the gradients are unchanged
            return checkpoint(self._round_terms, x, cond, target, weight_u, n_l, repeats, use_reentrant=False)
        return self._round_terms(x, cond, target, weight_u, n_l, repeats)

    def _round_terms(
        self, x: torch.Tensor, cond: torch.Tensor, target: torch.Tensor, weight_u: torch.Tensor | None, n_l: int,
        repeats: int,
    ) -> tuple[torch.Tensor, ...]:
        seg = self.seg_loss
        rep = [repeats, *[1] * (x.ndim - 1)]
        full = x.shape[2:]
        if self.round_scale != 1.0:
            low = [int(round(s * self.round_scale)) for s in full]
            check_spatial_size(low, self.teacher.num_levels, f"round_scale {self.round_scale} of {tuple(full)}")
            x, cond = F.interpolate(x, size=low, mode="area"), F.interpolate(cond, size=low, mode="area")
        rec = self.teacher.reconstruct(x.repeat(rep), cond.repeat(rep))
        p_tilde = self.teacher.segment(rec.x0_hat.detach())
        if p_tilde.shape[2:] != full:
            p_tilde = F.interpolate(p_tilde, size=full, mode="bilinear" if len(full) == 2 else "trilinear")
        b = x.shape[0]
        pt_r = p_tilde.reshape(repeats, b, *p_tilde.shape[1:])
        rl = rec.loss.reshape(repeats, b)
        align_l, rec_l = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
        if n_l > 0:  # round_batch "unlabeled" passes none
            align_l = sum(seg(pt_r[j, :n_l], target[:n_l]) for j in range(repeats))
            rec_l = rl[:, :n_l].mean(1).sum()
        align_u = sum(weighted_loss(seg, pt_r[j, n_l:], target[n_l:], weight_u) for j in range(repeats))
        return align_l, align_u, rec_l, rl[:, n_l:].mean(1).sum(), pt_r[-1].detach()


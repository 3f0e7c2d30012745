"""Phase 1: unsupervised cycle-consistency pretraining of the diffusion teacher (METHOD.md, "Phase 1")."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from monai.engines import Evaluator
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer
from monai.utils import CommonKeys

from ..errors import CheckpointError
from ..losses import HardTargetDiceLoss
from ..metrics.dice import label_dice
from ..networks.teacher import DiffusionTeacher, background_mask, make_noise, probabilities_to_mask
from .base import DiffusionTrainerBase, plain

__all__ = [
    "TeacherPretrainTrainer",
    "TeacherMonitorEvaluator",
    "all_foreground_dice",
    "assignment_dice",
    "class_fractions",
    "permutation_dice",
    "phase1_gate",
    "phase1_warnings",
    "structure_warning",
    "shuffled_masks",
]

logger = logging.getLogger(__name__)


def all_foreground_dice(y: torch.Tensor, k: int) -> torch.Tensor:
    """Per-sample Dice of the trivial "everything is foreground" prediction, ``(B,)``: for each foreground class
    ``c`` the Dice of labelling every pixel ``c`` (``2 |Y_c| / (|Y_c| + N)``), averaged over the classes.

    Args:
        y: ``(B, 1, *spatial)`` labels.
        k: number of classes including background.
    """
    flat = y[:, 0].flatten(1).long()
    n = flat.shape[1]
    per_class = [2 * (flat == c).double().sum(1) / ((flat == c).double().sum(1) + n) for c in range(1, k)]
    return torch.stack(per_class, 1).mean(1)


def structure_warning(dice: float, baseline: float, measure: str = "best-assignment Dice") -> str | None:
    """A warning when phase 1's validation Dice does not beat the all-foreground baseline (the teacher's channels
    carry no usable partition yet); ``None`` otherwise.

    The measure is the best-assignment Dice (the teacher's own channels, one assignment for the whole validation
    set), not the online probe's: the phase-1 teacher's probabilities are soft (on PH2 at 32x32 the foreground
    channel's probability lies within 0.40-0.62 on 80 % of the validation pixels), and the 1x1 probe, one Adam
    step at lr 0.01 per batch holding labels while the teacher moves, ends with its boundary beyond most lesion
    pixels: probe Dice 0.15 where the teacher's channel thresholded at 0.5 gives 0.61
    (``docs/phase1/probe_diagnosis.md``).

    Args:
        dice: mean validation Dice of ``measure``.
        baseline: mean validation Dice of the all-foreground prediction (``all_foreground_dice``).
        measure: what ``dice`` is, for the message.
    """
    if dice > baseline:
        return None
    return (f"degenerate result: phase-1 {measure} {dice:.4f} does not beat the all-foreground baseline "
            f"{baseline:.4f} on validation.")


def class_fractions(logits: torch.Tensor) -> torch.Tensor:
    """Per-class pixel fractions of ``argmax`` of ``logits``, averaged over the batch: shape ``(K,)``.

    Args:
        logits: ``(B, K, *spatial)``.
    """
    k = logits.shape[1]
    lab = logits.argmax(1)
    return torch.stack([(lab == c).float().mean() for c in range(k)])


def _fg_dice(pred_lab: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Per-sample mean foreground Dice of hard label maps ``(B, 1, ...)``; empty-vs-empty counts as 1."""
    return label_dice(pred_lab, y.long(), k, empty=1.0).float().mean(1)


def assignment_dice(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample foreground Dice of the teacher's unnamed channels under every channel-to-class assignment:
    shape ``(B, K!)``, columns in ``itertools.permutations(range(K))`` order. Averaging the columns over a whole
    validation set and taking the best column (``metrics.BestAssignmentDice``) chooses one assignment for the set.

    Args:
        logits: ``(B, K, *spatial)`` teacher logits.
        y: ``(B, 1, *spatial)`` labels.
    """
    k = logits.shape[1]
    lab = logits.argmax(1, keepdim=True)
    cols = [_fg_dice(torch.as_tensor(perm, device=lab.device)[lab], y, k) for perm in itertools.permutations(range(k))]
    return torch.stack(cols, 1)


def permutation_dice(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample foreground Dice under the best channel-to-class assignment, chosen once for all the samples
    given (pass the whole validation set, or use ``assignment_dice`` with ``metrics.BestAssignmentDice``): ``(B,)``.

    Args:
        logits: ``(B, K, *spatial)`` teacher logits.
        y: ``(B, 1, *spatial)`` labels.
    """
    d = assignment_dice(logits, y)
    return d[:, int(d.nanmean(0).argmax())]


def shuffled_masks(m: torch.Tensor) -> torch.Tensor:
    """Masks that do not belong to their images: each sample gets the next sample's mask (``roll`` by one along
    the batch); a batch of one gets its own mask flipped along every spatial axis.

    Args:
        m: ``(B, K, *spatial)`` masks.
    """
    if m.shape[0] > 1:
        return m.roll(1, 0)
    return m.flip(tuple(range(2, m.ndim)))


def _phase1_check(metrics_csv: str | Path) -> tuple[str, float, float] | None:
    """``(measure, dice, all-foreground baseline)`` of the last phase-1 validation (best-assignment Dice; probe Dice
    where the file has no best-assignment value) from the bundle's ``MetricsSaver`` file; ``None`` when the file or
    a value is missing."""
    p = Path(metrics_csv)
    if not p.is_file():
        return None
    vals = {}
    for line in p.read_text().splitlines():
        name, _, value = line.partition(",")
        try:
            vals[name.strip()] = float(value)
        except ValueError:
            continue
    key = "val_best_assignment_dice" if "val_best_assignment_dice" in vals else "val_probe_dice"
    if key not in vals or "val_all_foreground_dice" not in vals:
        return None
    return _MEASURES[key], vals[key], vals["val_all_foreground_dice"]


def phase1_warnings(metrics_csv: str | Path) -> list[str]:
    """``structure_warning`` of the last phase-1 validation (best-assignment Dice; probe Dice where the file has no
    best-assignment value), read from the bundle's ``MetricsSaver`` file.

    Args:
        metrics_csv: ``<output_dir>/metrics.csv`` of a teacher_pretrain run (``name,value`` lines).

    Returns:
        the warning in a list, or an empty list (also when the file or a value is missing).
    """
    check = _phase1_check(metrics_csv)
    w = structure_warning(check[1], check[2], check[0]) if check else None
    return [w] if w else []


def phase1_gate(metrics_csv: str | Path) -> tuple[bool, str]:
    """The phase-1 gate of co-training (issue 25 safeguard, the cotrain bundle's ``phase1_gate``): use the phase-1
    teacher only when its masks beat the all-foreground baseline on the labelled validation cases of phase 1 (the
    comparison of :func:`structure_warning`, so the gate and the runner's phase-1 warning always agree).

    Args:
        metrics_csv: ``<output_dir>/metrics.csv`` of the teacher_pretrain run that wrote the teacher.

    Returns:
        ``(use_teacher, reason)``: ``False`` means co-training starts from a fresh (untrained) teacher; ``reason``
        says why, with both numbers.

    Raises:
        CheckpointError: when the file or one of its two values is missing (the gate cannot decide).
    """
    check = _phase1_check(metrics_csv)
    if check is None:
        raise CheckpointError(
            f"phase1_gate: no phase-1 checks in {metrics_csv} (the teacher_pretrain run's eval/metrics.csv with "
            "val_best_assignment_dice or val_probe_dice and val_all_foreground_dice); set phase1_metrics to that "
            "file, or phase1_gate false"
        )
    measure, dice, baseline = check
    if structure_warning(dice, baseline, measure) is None:
        reason = (f"phase1_gate: phase-1 {measure} {dice:.4f} beats the all-foreground baseline {baseline:.4f}; "
                  "co-training starts from the phase-1 teacher")
        logger.info("%s", reason)
        return True, reason
    reason = (f"phase1_gate: phase-1 {measure} {dice:.4f} does not beat the all-foreground baseline {baseline:.4f} "
              "on validation; co-training started from a fresh (untrained) teacher instead of the phase-1 weights")
    logger.warning("%s", reason)
    return False, reason


_MEASURES = {"val_best_assignment_dice": "best-assignment Dice", "val_probe_dice": "probe Dice"}


class TeacherPretrainTrainer(DiffusionTrainerBase):
    """Cycle-consistency pretraining of the teacher; labels only ever train the monitoring probe.

    One iteration on images ``x``:

    1. ``p = softmax(S(concat[m_t^bg, x], t1))``, ``m = 2 p - 1`` (not detached);
    2. ``L_cyc = mean((eps - G(concat[x_t2, m], t2)) ** 2)`` with a fresh ``t2``;
    3. one optimizer step on both pathways; then, on samples that carry a label (no ``ignore_value``), one
       step of the probe on ``p.detach()``.

    ``engine.state.output`` holds ``loss`` (= ``loss_cyc``), ``loss_cyc``, ``loss_probe`` and ``frac_class<k>``
    (per-class pixel fractions of the teacher's masks, so that a collapse shows in the logs).

    Args:
        device: training device.
        max_epochs: number of epochs.
        train_data_loader: loader over every training image (labelled and unlabelled).
        teacher: the ``DiffusionTeacher``.
        optimizer: optimizer of the teacher's parameters.
        probe: optional ``ChannelProbe``; ``None`` disables monitoring.
        probe_optimizer: optimizer of the probe's parameters (required with a probe).
        probe_loss: loss of the probe against labels (default: soft Dice over all classes; cross-entropy would
            favour the all-background probe on small structures).
        ignore_value: the label value marking "no label" (filled by ``FillMissingLabeld``).
        epoch_length: iterations per epoch.
        non_blocking: non-blocking copies.
        amp: autocast on.
        amp_dtype: ``"bfloat16"`` or ``"float16"``.
        grad_clip_norm: gradient-norm clipping of the teacher (``None``: off).
        train_handlers: Ignite handlers of the trainer.
        image_key: image key.
        label_key: label key.

    Raises:
        ValueError: when a probe is given without a ``probe_optimizer``.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        teacher: DiffusionTeacher,
        optimizer: torch.optim.Optimizer,
        probe: nn.Module | None = None,
        probe_optimizer: torch.optim.Optimizer | None = None,
        probe_loss: nn.Module | None = None,
        ignore_value: int = -1,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        amp: bool = False,
        amp_dtype: str = "bfloat16",
        grad_clip_norm: float | None = None,
        train_handlers: Sequence | None = None,
        image_key: str = CommonKeys.IMAGE,
        label_key: str = CommonKeys.LABEL,
    ) -> None:
        if probe is not None and probe_optimizer is None:
            raise ValueError("a probe needs a probe_optimizer.")
        super().__init__(
            device, max_epochs, train_data_loader, epoch_length, non_blocking, amp, amp_dtype, grad_clip_norm,
            train_handlers, image_key, label_key,
        )
        self.teacher = teacher
        self.network = teacher  # the standard id MONAI handlers look for
        self.optimizer = optimizer
        self.probe = probe
        self.probe_optimizer = probe_optimizer
        self.probe_loss = probe_loss or HardTargetDiceLoss()
        self.ignore_value = ignore_value

    def _iteration(self, engine: Engine, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        x, y = self.split_image_label(batchdata)
        self.teacher.check_input(x, "training batch")
        self.teacher.train()
        out: dict = {CommonKeys.IMAGE: x}
        with self.autocast():
            logits = self.teacher.segment(x)
            p = logits.float().softmax(1)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            rec = self.teacher.reconstruct(x, probabilities_to_mask(p))
            loss = rec.loss.mean()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        self.step(loss, [self.optimizer], [self.teacher.parameters()])
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        out.update({CommonKeys.LOSS: loss.detach(), "loss_cyc": loss.detach()})
        for c, f in enumerate(class_fractions(logits.detach())):
            out[f"frac_class{c}"] = f
        out["loss_probe"] = torch.zeros((), device=x.device)
        if self.probe is not None and y is not None:
            has_label = (y != self.ignore_value).flatten(1).all(1)
            if has_label.any():
                self.probe.train()
                probe_logits = self.probe(p.detach()[has_label])
                loss_probe = self.probe_loss(probe_logits, y[has_label])
                self.probe_optimizer.zero_grad(set_to_none=True)
                loss_probe.backward()
                self.probe_optimizer.step()
                out["loss_probe"] = loss_probe.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return out


class TeacherMonitorEvaluator(Evaluator):
    """Phase-1 validation: probe Dice, best-assignment Dice, class fractions, reconstruction error and gain.

    Each iteration segments the validation images at the teacher's fixed inference ``t`` with seeded noise,
    applies the probe, and reconstructs the image at ``recon_timestep`` conditioned on the teacher's mask, on the
    all-background (blank) mask and on shuffled masks (other images' predicted masks, ``shuffled_masks``), with the
    same noise. ``engine.state.output`` carries per-sample values ``probe_dice``, ``rec_mse``, ``frac_class<k>``,
    the label-free **reconstruction gains** ``rec_gain_blank = L_rec(blank) - L_rec(predicted)`` and
    ``rec_gain_shuffled = L_rec(shuffled) - L_rec(predicted)`` (how much the predicted mask helps the image pathway;
    0 when ``G`` ignores the mask) for ``OutputAverage`` metrics, ``assignment_dice`` ``(B, K!)`` for
    ``BestAssignmentDice`` (the assignment chosen over the whole validation set), plus ``pred`` (probe
    probabilities) and ``label``.
    ``engine.state.output`` also carries ``allfg_dice``; at the end of each validation (before the handlers run)
    ``engine.state.metrics`` receives ``val_all_foreground_dice`` (the trivial all-foreground baseline), and a
    warning is logged when the best-assignment Dice (else the key metric) does not beat it (``structure_warning``);
    ``engine.state.warnings`` holds it.

    Args:
        device: device.
        val_data_loader: validation loader (image + label).
        teacher: the ``DiffusionTeacher``.
        probe: the ``ChannelProbe`` (``None``: identity, i.e. the raw channels).
        recon_timestep: fixed ``t`` of the reconstruction check.
        seed: seed of the reconstruction noise.
        key_val_metric: the key metric (``{"val_probe_dice": OutputAverage("probe_dice")}`` typically).
        additional_metrics: further metrics.
        val_handlers: handlers of the evaluator.
        inferer: unused (kept for the standard evaluator signature); must be ``None``.
        non_blocking: non-blocking copies.
        amp: autocast on.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        teacher: DiffusionTeacher,
        probe: nn.Module | None = None,
        recon_timestep: int = 250,
        seed: int = 0,
        key_val_metric: dict | None = None,
        additional_metrics: dict | None = None,
        val_handlers: Sequence | None = None,
        inferer: Inferer | None = None,
        non_blocking: bool = False,
        amp: bool = False,
    ) -> None:
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            val_handlers=None,
            non_blocking=non_blocking,
            amp=amp,
            decollate=False,
        )
        self.teacher = teacher
        self.network = teacher
        self.probe = probe
        self.recon_timestep = recon_timestep
        self.seed = seed
        self._allfg: list[torch.Tensor] = []
        self.add_event_handler(Events.EPOCH_STARTED, lambda e: self._allfg.clear())
        self.add_event_handler(Events.EPOCH_COMPLETED, self._check_baseline)  # after the metrics, before handlers
        if val_handlers:
            self._register_handlers(val_handlers)

    def _check_baseline(self, engine: Engine) -> None:
        if not self._allfg:
            return
        baseline = float(torch.cat(self._allfg).mean())
        engine.state.metrics["val_all_foreground_dice"] = baseline
        m = engine.state.metrics
        key = "val_best_assignment_dice" if "val_best_assignment_dice" in m else engine.state.key_metric_name or ""
        score = m.get(key)
        warning = (structure_warning(float(score), baseline, _MEASURES.get(key, key)) if score is not None
                   else None)
        engine.state.warnings = [warning] if warning else []
        if warning:
            logger.warning("%s", warning)

    def _iteration(self, engine: Engine, batchdata: dict) -> dict:
        x = plain(batchdata[CommonKeys.IMAGE]).to(engine.state.device).float()
        y = plain(batchdata[CommonKeys.LABEL]).to(engine.state.device)
        self.teacher.eval()
        if self.probe is not None:
            self.probe.eval()
        with torch.no_grad():
            k = self.teacher.num_classes
            logits = self.teacher.segment(x, self.teacher.infer_timestep, self.teacher.fixed_noise(x))
            p = logits.float().softmax(1)
            probe_logits = self.probe(p) if self.probe is not None else logits
            noise = make_noise(x.shape, self.seed, x.device, x.dtype)
            m = probabilities_to_mask(p)
            rec = self.teacher.reconstruct(x, m, self.recon_timestep, noise)
            rec_blank = self.teacher.reconstruct(x, background_mask(m, k), self.recon_timestep, noise)
            rec_shuffled = self.teacher.reconstruct(x, shuffled_masks(m), self.recon_timestep, noise)
            out = {
                CommonKeys.PRED: probe_logits.softmax(1),
                CommonKeys.LABEL: y,
                "probe_dice": _fg_dice(probe_logits.argmax(1, keepdim=True), y, k),
                "assignment_dice": assignment_dice(logits, y),
                "rec_mse": rec.loss,
                "rec_gain_blank": rec_blank.loss - rec.loss,
                "rec_gain_shuffled": rec_shuffled.loss - rec.loss,
                "allfg_dice": all_foreground_dice(y, k),
            }
            self._allfg.append(out["allfg_dice"].cpu())
            lab = logits.argmax(1)
            for c in range(k):
                out[f"frac_class{c}"] = (lab == c).flatten(1).float().mean(1)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return out

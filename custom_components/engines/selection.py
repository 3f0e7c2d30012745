"""Phase-2 model selection: validate student and teacher, sweep the binary threshold, pick the best.

The chosen model is written by :class:`~custom_components.handlers.SelectedModelSaver`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from monai.engines import Evaluator
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.utils import CommonKeys

from ..metrics.dice import dice_from_counts, label_dice, mask_dice
from .base import plain

__all__ = [
    "DualNetworkEvaluator",
    "SELECTION_EMPTY_DICE",
    "class_overlap_counts",
    "dice_per_threshold",
    "evaluation_threshold",
    "foreground_warning",
    "pick_threshold",
    "selected_threshold",
    "sweep_threshold",
    "threshold_grid",
]

#: where an evaluation takes its binary threshold from: training's selection file, or a sweep on the validation
#: split under the evaluation's own inferer (``evaluation_threshold``)
THRESHOLD_SOURCES = ("selection", "validation")

#: Dice of an empty prediction of an empty reference during selection: a correct answer (see ``metrics/dice.py``)
SELECTION_EMPTY_DICE = 1.0


def dice_per_threshold(probs: torch.Tensor, label: torch.Tensor, thresholds: torch.Tensor | None) -> torch.Tensor:
    """Per-case foreground Dice for a batch: ``(B, len(thresholds))`` for binary tasks with a sweep,
    else ``(B, 1)`` (argmax). Binary: empty prediction and empty reference give 1. Multi-class (``K > 2``): the
    mean over the foreground classes that the case holds or the network predicts, as the test protocols compute
    it (a class empty in both is left out, NaN when every class is): counting such a class as 1 would reward a
    network that never predicts a rare class in every case without it.

    Args:
        probs: probabilities ``(B, K, *spatial)``.
        label: labels ``(B, 1, *spatial)``.
        thresholds: foreground thresholds (binary only); ``None``: argmax.
    """
    y = label[:, 0].long()
    k = probs.shape[1]
    if k == 2 and thresholds is not None:
        fg, yt = probs[:, 1], y == 1
        return torch.stack([mask_dice(fg >= thr, yt, empty=SELECTION_EMPTY_DICE) for thr in thresholds.tolist()], 1)
    if k == 2:
        return label_dice(probs.argmax(1), y, k, empty=SELECTION_EMPTY_DICE)
    # K > 2: a class empty in both is left out of the case's mean (NaN), as in the test protocols
    return label_dice(probs.argmax(1), y, k, empty=float("nan")).nanmean(1, keepdim=True)


def class_overlap_counts(probs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Pixel counts of the argmax prediction per foreground class, summed over the batch: ``(3, K - 1)`` rows
    ``intersection``, ``predicted``, ``reference``; pooled Dice of class ``c`` is ``dice_from_counts(*rows)``.

    Args:
        probs: probabilities ``(B, K, *spatial)``.
        label: labels ``(B, 1, *spatial)``.
    """
    k = probs.shape[1]
    pred = probs.argmax(1).flatten()
    y = label[:, 0].long().flatten()
    classes = torch.arange(1, k, device=probs.device)
    p, t = pred[None] == classes[:, None], y[None] == classes[:, None]
    return torch.stack([(p & t).sum(1), p.sum(1), t.sum(1)]).double()


def foreground_fraction_per_threshold(probs: torch.Tensor, thresholds: torch.Tensor | None) -> torch.Tensor:
    """Per-case predicted foreground fraction, ``(B, len(thresholds))`` (binary sweep) or ``(B, 1)`` (argmax != 0).

    Args:
        probs: probabilities ``(B, K, *spatial)``.
        thresholds: foreground thresholds (binary only); ``None``: argmax.
    """
    if probs.shape[1] == 2 and thresholds is not None:
        fg = probs[:, 1].flatten(1)
        return torch.stack([(fg >= thr).double().mean(1) for thr in thresholds.tolist()], 1)
    return (probs.argmax(1).flatten(1) != 0).double().mean(1, keepdim=True)


def foreground_warning(predicted: float, reference: float, factor: float = 4.0, min_diff: float = 0.02) -> str | None:
    """A warning when a model's predicted foreground fraction is far from the labels' (a degenerate model).

    "Far" means the foreground odds ``f / (1 - f)`` differ by more than ``factor`` in either direction and the
    fractions by more than ``min_diff`` (98 % predicted vs 6 % labelled: odds 49 vs 0.064; an empty prediction
    vs 6 %: odds 0 vs 0.064).

    Args:
        predicted: mean predicted foreground fraction on validation.
        reference: mean foreground fraction of the validation labels.
        factor: odds ratio above which the fractions count as far apart.
        min_diff: absolute difference below which nothing is reported.

    Returns:
        the message (starting with ``degenerate result:``), or ``None``.
    """
    if abs(predicted - reference) <= min_diff:
        return None
    eps = 1e-6

    def odds(f: float) -> float:
        f = min(max(f, eps), 1 - eps)
        return f / (1 - f)

    ratio = odds(predicted) / odds(reference)
    if 1 / factor <= ratio <= factor:
        return None
    return (f"degenerate result: the selected model predicts {100 * predicted:.1f} % foreground on validation, "
            f"the validation labels have {100 * reference:.1f} %.")


def threshold_grid(step: float) -> torch.Tensor:
    """The binary threshold sweep ``step, 2 step, ... < 1`` (float64; 0.02 in METHOD.md gives 0.02 ... 0.98).

    Raises:
        ValueError: for a ``step`` outside (0, 1).
    """
    if not 0 < step < 1:
        raise ValueError(f"threshold_step must be in (0, 1), got {step}.")
    return torch.tensor([i * step for i in range(1, int(round(1 / step)))], dtype=torch.float64)


def pick_threshold(thresholds: torch.Tensor, mean_dice: torch.Tensor, atol: float = 1e-9) -> int:
    """Index of the best threshold of a validation curve; ties go to the threshold nearest 0.5.

    Thresholds whose mean Dice is within ``atol`` of the best all score alike; among them the one nearest 0.5
    (plain argmax) is taken, so a flat curve never pulls the threshold to an extreme of the sweep.

    Args:
        thresholds: the swept thresholds ``(N,)``.
        mean_dice: mean validation Dice per threshold ``(N,)``.
        atol: Dice values this close to the best count as a tie.
    """
    mean_dice = mean_dice.double()
    tied = torch.nonzero(mean_dice >= mean_dice.max() - atol).flatten()
    dist = (thresholds.double()[tied] - 0.5).abs()
    return int(tied[int(torch.argmin(dist))])


def selected_threshold(selection_file: str | os.PathLike, num_classes: int) -> float:
    """The foreground threshold chosen on validation, read from ``model_selection.json`` (binary tasks).

    Post-processing of the evaluate / inference configs applies it to the model's raw probabilities. Multi-class
    tasks use argmax and need no file (0.5 is returned).

    Args:
        selection_file: the ``model_selection.json`` written beside ``model.pt`` by ``SelectedModelSaver``.
        num_classes: classes ``K``.

    Raises:
        FileNotFoundError: binary task and no selection file (pass ``--threshold 0.5`` to use plain argmax).
        ValueError: the file holds no valid ``threshold``.
    """
    if int(num_classes) != 2:
        return 0.5
    path = Path(selection_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no model selection file, so the foreground threshold chosen on validation is unknown; "
            "train the bundle (it writes the file beside model.pt) or pass --threshold 0.5."
        )
    try:
        thr = float(json.loads(path.read_text())["threshold"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: no valid 'threshold' in the model selection file ({e}).") from None
    if not 0.0 < thr < 1.0:
        raise ValueError(f"{path}: threshold must be in (0, 1), got {thr}.")
    return thr


def sweep_threshold(
    network: nn.Module, loader: Iterable, inferer: Inferer | None, device: torch.device | str, threshold_step: float
) -> dict:
    """The binary threshold sweep of model selection for one ``image -> probabilities`` network on one loader.

    Per-case foreground Dice at every threshold of :func:`threshold_grid`, mean over the cases, best one chosen
    by :func:`pick_threshold` (ties nearest 0.5): the same rule as training's selection.

    Args:
        network: ``image -> class probabilities`` (eval mode is set here).
        loader: batches with ``image`` and ``label`` (validation split).
        inferer: how the network is applied (e.g. the evaluation's sliding window); default ``SimpleInferer``.
        device: device.
        threshold_step: sweep step (0.02 in METHOD.md).

    Returns:
        ``{"threshold", "dice", "num_cases", "curve": {"thresholds", "dice"}}``.

    Raises:
        ValueError: an empty loader or a network that is not binary.
    """
    thresholds = threshold_grid(threshold_step)
    inferer = inferer or SimpleInferer()
    network.eval()
    per_case = []
    with torch.no_grad():
        for batch in loader:
            x = plain(batch[CommonKeys.IMAGE]).to(device).float()
            probs = inferer(x, network).float().cpu()
            if probs.shape[1] != 2:
                raise ValueError(f"the threshold sweep is for binary tasks; the network returns {probs.shape[1]} "
                                 "classes (multi-class tasks use argmax).")
            per_case.append(dice_per_threshold(probs, plain(batch[CommonKeys.LABEL]).cpu(), thresholds))
    if not per_case:
        raise ValueError("the threshold sweep got an empty validation loader.")
    cases = torch.cat(per_case).double()
    mean = cases.mean(0)
    i = pick_threshold(thresholds, mean)
    return {
        "threshold": round(float(thresholds[i]), 4),
        "dice": float(mean[i]),
        "num_cases": int(cases.shape[0]),
        "curve": {"thresholds": [round(float(t), 4) for t in thresholds], "dice": [round(float(d), 6) for d in mean]},
    }


def evaluation_threshold(
    source: str,
    selection_file: str | os.PathLike,
    num_classes: int,
    network: nn.Module | None = None,
    loader: Iterable | None = None,
    inferer: Inferer | None = None,
    device: torch.device | str = "cpu",
    threshold_step: float = 0.02,
    weights: nn.Module | None = None,
    ckpt_path: str | os.PathLike | None = None,
    output_file: str | os.PathLike | None = None,
) -> float:
    """The foreground threshold of an evaluation (the ``threshold`` id of the ``evaluate.json`` configs).

    ``source="selection"``: the one training's selection chose (:func:`selected_threshold`). ``"validation"``: chosen
    again on the validation split **under the evaluation's own inferer**. Training's selection sweeps with training's
    validation inferer (a cheap window in 3D); a test with another inferer (the ``la_uamt`` UA-MT window, whose dense
    overlap averages many windows into flatter probabilities) must not reuse a threshold tuned for other
    probabilities. So the selected weights are loaded, :func:`sweep_threshold` runs on ``loader`` with ``inferer``,
    and its record (training's threshold beside it) goes to ``output_file``. Multi-class tasks use argmax (0.5, no
    sweep) either way.

    Args:
        source: ``"selection"`` or ``"validation"``.
        selection_file: training's ``model_selection.json``.
        num_classes: ``K``.
        network: (validation) ``image -> probabilities`` as ``inferer`` expects it (the deployable model; for a
            logits network whose inferer does not apply softmax, the network followed by softmax).
        loader: (validation) validation batches, preprocessed as the evaluation preprocesses its images.
        inferer: (validation) the evaluation's inferer.
        device: device.
        threshold_step: sweep step.
        weights: (validation) the module the checkpoint is loaded into (``network`` or the logits network it wraps).
        ckpt_path: (validation) the selected weights (``model.pt``).
        output_file: (validation) where the record is written (JSON); ``None``: not written.

    Raises:
        ValueError: an unknown ``source``, or ``"validation"`` without a network, loader, weights or checkpoint.
    """
    if source not in THRESHOLD_SOURCES:
        raise ValueError(f"threshold_source must be one of {THRESHOLD_SOURCES}, got {source!r}.")
    if source == "selection" or int(num_classes) != 2:
        return selected_threshold(selection_file, num_classes)
    if network is None or loader is None or weights is None or ckpt_path is None:
        raise ValueError("threshold_source 'validation' needs the network, the validation loader, the weights module "
                         "and the checkpoint.")
    from ..networks.io import check_weights

    weights.load_state_dict(check_weights(weights, ckpt_path))
    result = sweep_threshold(network.to(device), loader, inferer, device, threshold_step)
    result["threshold_of_training_selection"] = selected_threshold(selection_file, num_classes)
    result["inferer"] = type(inferer).__name__ if inferer is not None else "SimpleInferer"
    result["split"] = "validation"
    if output_file is not None:
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(output_file).write_text(json.dumps(result, indent=2))
    return float(result["threshold"])


class DualNetworkEvaluator(Evaluator):
    """Validate several ``image -> probabilities`` networks (student and teacher) on the validation split.

    Each iteration runs every network through the inferer and records the per-case foreground Dice for each
    threshold of the sweep (binary) or of the argmax (multi-class). At the end of the run the best
    (network, threshold) pair is chosen by mean per-case Dice (thresholds that tie go to the one nearest 0.5,
    :func:`pick_threshold`); ``engine.state.metrics`` then holds ``val_dice`` (the selected pair's Dice, the key
    metric), ``val_dice_<name>`` (each network at its best threshold), ``val_threshold``, and per foreground class
    ``c`` the argmax Dice pooled over all validation pixels, ``val_dice_<name>_class<c>``, and the predicted pixel
    fraction ``val_frac_<name>_class<c>`` (so that a class one network stops predicting shows in the log);
    ``engine.state.selection`` holds the choice and, under ``curve``, the selected network's validation curve
    (``{"thresholds": [...], "dice": [...]}``, binary sweeps only).

    Args:
        device: device.
        val_data_loader: validation loader (image + label).
        networks: name -> ``image -> probabilities`` module (e.g. ``MaskPathwaySegmenter`` views).
        inferer: inferer (sliding window for 3D); default ``SimpleInferer``.
        threshold_step: sweep step for binary tasks (0.02 in METHOD.md); ``None``: plain argmax.
        val_handlers: handlers (``SelectedModelSaver``, stats).
        non_blocking: non-blocking copies.
        amp: autocast on.

    Raises:
        ValueError: for an empty ``networks`` or a ``threshold_step`` outside (0, 1).
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        networks: dict[str, nn.Module],
        inferer: Inferer | None = None,
        threshold_step: float | None = 0.02,
        val_handlers: Sequence | None = None,
        non_blocking: bool = False,
        amp: bool = False,
    ) -> None:
        if not networks:
            raise ValueError("networks must name at least one network.")
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            val_handlers=None,
            non_blocking=non_blocking,
            amp=amp,
            decollate=False,
        )
        self.networks = dict(networks)
        self.network = next(iter(self.networks.values()))
        self.inferer = inferer or SimpleInferer()
        self.thresholds = None if threshold_step is None else threshold_grid(threshold_step)
        self._curves: dict[str, list[torch.Tensor]] = {}
        self._fg: dict[str, list[torch.Tensor]] = {}
        self._ref_fg: list[torch.Tensor] = []
        self._counts: dict[str, torch.Tensor] = {}
        self._num_pixels = 0
        # selection runs before any handler (stats, model saver) reads the metrics
        self.add_event_handler(Events.EPOCH_STARTED, self._reset)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._select)
        if val_handlers:
            self._register_handlers(val_handlers)

    def _reset(self, engine: Engine) -> None:
        self._curves = {name: [] for name in self.networks}
        self._fg = {name: [] for name in self.networks}
        self._ref_fg = []
        self._counts = {name: torch.zeros(()) for name in self.networks}
        self._num_pixels = 0

    def _iteration(self, engine: Engine, batchdata: dict) -> dict:
        x = plain(batchdata[CommonKeys.IMAGE]).to(engine.state.device).float()
        y = plain(batchdata[CommonKeys.LABEL]).to(engine.state.device)
        out = {CommonKeys.LABEL: y}
        self._ref_fg.append((y[:, 0].flatten(1) != 0).double().mean(1).cpu())
        with torch.no_grad():
            for name, net in self.networks.items():
                net.eval()
                probs = self.inferer(x, net).float()
                k = probs.shape[1]
                thr = self.thresholds if k == 2 else None
                self._curves[name].append(dice_per_threshold(probs, y, thr).cpu())
                self._fg[name].append(foreground_fraction_per_threshold(probs, thr).cpu())
                self._counts[name] = self._counts[name] + class_overlap_counts(probs, y).cpu()
                out[f"{CommonKeys.PRED}_{name}"] = probs
        self._num_pixels += y[:, 0].numel()
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return out

    def _select(self, engine: Engine) -> None:
        best = None
        for name, curves in self._curves.items():
            mean = torch.cat(curves).nanmean(0).nan_to_num(1.0)  # NaN: no class in any case, nothing predicted
            swept = mean.numel() > 1 and self.thresholds is not None
            i = pick_threshold(self.thresholds, mean) if swept else 0
            thr = float(self.thresholds[i]) if swept else 0.5
            engine.state.metrics[f"val_dice_{name}"] = float(mean[i])
            if swept:
                i05 = int(torch.argmin((self.thresholds - 0.5).abs()))
                engine.state.metrics[f"val_dice_{name}_at_0.5"] = float(mean[i05])
            inter, pred, ref = self._counts[name]
            for c in range(inter.numel()):
                engine.state.metrics[f"val_dice_{name}_class{c + 1}"] = dice_from_counts(
                    float(inter[c]), float(pred[c]), float(ref[c]), empty=float("nan"))
                engine.state.metrics[f"val_frac_{name}_class{c + 1}"] = float(pred[c]) / max(1, self._num_pixels)
            if best is None or float(mean[i]) > best["dice"]:
                best = {"network": name, "threshold": round(thr, 4), "dice": float(mean[i])}
                if swept:
                    best["curve"] = {
                        "thresholds": [round(float(t), 4) for t in self.thresholds],
                        "dice": [round(float(d), 6) for d in mean],
                    }
                best["val_foreground_fraction"] = round(float(torch.cat(self._fg[name]).mean(0)[i]), 4)
        ref = float(torch.cat(self._ref_fg).mean())
        best["label_foreground_fraction"] = round(ref, 4)
        warning = foreground_warning(best["val_foreground_fraction"], ref)
        best["warnings"] = [warning] if warning else []
        engine.state.selection = best
        engine.state.metrics["val_dice"] = best["dice"]
        engine.state.metrics["val_threshold"] = best["threshold"]
        engine.state.key_metric_name = "val_dice"
        if best["dice"] > engine.state.best_metric:
            engine.state.best_metric = best["dice"]
            engine.state.best_metric_epoch = engine.state.epoch

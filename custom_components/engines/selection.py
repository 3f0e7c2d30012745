"""Phase-2 model selection: validate student and teacher, sweep the binary threshold, keep the best."""

from __future__ import annotations

import json
import logging
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

from ..handlers.checkpoint import _is_rank_zero as is_rank_zero, atomic_torch_save
from ..networks.deployable import MaskPathwaySegmenter
from .base import plain

__all__ = ["DualNetworkEvaluator", "SelectedModelSaver", "dice_per_threshold", "pick_threshold", "selected_threshold"]

logger = logging.getLogger(__name__)


def _binary_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row Dice of boolean masks ``(B, N)``; empty prediction and empty reference give 1."""
    inter = (pred & target).sum(1).double()
    denom = (pred.sum(1) + target.sum(1)).double()
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))


def dice_per_threshold(probs: torch.Tensor, label: torch.Tensor, thresholds: torch.Tensor | None) -> torch.Tensor:
    """Per-case foreground Dice for a batch: ``(B, len(thresholds))`` for binary tasks with a sweep,
    else ``(B, 1)`` (argmax, mean over foreground classes). Empty prediction and empty reference give 1.

    Args:
        probs: probabilities ``(B, K, *spatial)``.
        label: labels ``(B, 1, *spatial)``.
        thresholds: foreground thresholds (binary only); ``None``: argmax.
    """
    y = label[:, 0].long().flatten(1)
    k = probs.shape[1]
    if k == 2 and thresholds is not None:
        fg, yt = probs[:, 1].flatten(1), y == 1
        return torch.stack([_binary_dice(fg >= thr, yt) for thr in thresholds.tolist()], 1)
    lab = probs.argmax(1).flatten(1)
    return torch.stack([_binary_dice(lab == c, y == c) for c in range(1, k)], 1).mean(1, keepdim=True)


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
        selection_file: the ``model_selection.json`` written beside ``model.pt`` by :class:`SelectedModelSaver`.
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


class DualNetworkEvaluator(Evaluator):
    """Validate several ``image -> probabilities`` networks (student and teacher) on the validation split.

    Each iteration runs every network through the inferer and records the per-case foreground Dice for each
    threshold of the sweep (binary) or of the argmax (multi-class). At the end of the run the best
    (network, threshold) pair is chosen by mean per-case Dice (thresholds that tie go to the one nearest 0.5,
    :func:`pick_threshold`); ``engine.state.metrics`` then holds ``val_dice`` (the selected pair's Dice, the key
    metric), ``val_dice_<name>`` (each network at its best threshold) and ``val_threshold``;
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
        if threshold_step is not None:
            if not 0 < threshold_step < 1:
                raise ValueError(f"threshold_step must be in (0, 1), got {threshold_step}.")
            n = int(round(1 / threshold_step))
            self.thresholds: torch.Tensor | None = torch.tensor([i * threshold_step for i in range(1, n)], dtype=torch.float64)
        else:
            self.thresholds = None
        self._curves: dict[str, list[torch.Tensor]] = {}
        # selection runs before any handler (stats, model saver) reads the metrics
        self.add_event_handler(Events.EPOCH_STARTED, self._reset)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._select)
        if val_handlers:
            self._register_handlers(val_handlers)

    def _reset(self, engine: Engine) -> None:
        self._curves = {name: [] for name in self.networks}

    def _iteration(self, engine: Engine, batchdata: dict) -> dict:
        x = plain(batchdata[CommonKeys.IMAGE]).to(engine.state.device).float()
        y = plain(batchdata[CommonKeys.LABEL]).to(engine.state.device)
        out = {CommonKeys.LABEL: y}
        with torch.no_grad():
            for name, net in self.networks.items():
                net.eval()
                probs = self.inferer(x, net).float()
                k = probs.shape[1]
                self._curves[name].append(dice_per_threshold(probs, y, self.thresholds if k == 2 else None).cpu())
                out[f"{CommonKeys.PRED}_{name}"] = probs
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return out

    def _select(self, engine: Engine) -> None:
        best = None
        for name, curves in self._curves.items():
            mean = torch.cat(curves).mean(0)
            swept = mean.numel() > 1 and self.thresholds is not None
            i = pick_threshold(self.thresholds, mean) if swept else 0
            thr = float(self.thresholds[i]) if swept else 0.5
            engine.state.metrics[f"val_dice_{name}"] = float(mean[i])
            if swept:
                i05 = int(torch.argmin((self.thresholds - 0.5).abs()))
                engine.state.metrics[f"val_dice_{name}_at_0.5"] = float(mean[i05])
            if best is None or float(mean[i]) > best["dice"]:
                best = {"network": name, "threshold": round(thr, 4), "dice": float(mean[i])}
                if swept:
                    best["curve"] = {
                        "thresholds": [round(float(t), 4) for t in self.thresholds],
                        "dice": [round(float(d), 6) for d in mean],
                    }
        engine.state.selection = best
        engine.state.metrics["val_dice"] = best["dice"]
        engine.state.metrics["val_threshold"] = best["threshold"]
        engine.state.key_metric_name = "val_dice"
        if best["dice"] > engine.state.best_metric:
            engine.state.best_metric = best["dice"]
            engine.state.best_metric_epoch = engine.state.epoch


class SelectedModelSaver:
    """Save the selected network as the deployable model whenever validation improves.

    Attached to a ``DualNetworkEvaluator``; at the end of each validation run, if ``val_dice`` beats the best so
    far, ``filename`` receives a ``state_dict`` (one network, ``torch.load(weights_only=True)``-loadable, written
    atomically): with ``deployable``, that of the ``MaskPathwaySegmenter`` wrapping the selected mask pathway; without
    it, the selected network's own. ``<stem>_selection.json`` records network, threshold, Dice, epoch and the
    validation curve of the threshold sweep: the threshold is *not* part of the model, the evaluate / inference
    configs apply it to the raw probabilities in post-processing (:func:`selected_threshold`). ``also_save`` files
    (e.g. the whole teacher, for phase 3) are written at the same moment, so they come from the selected epoch.
    Its own ``state_dict`` (the best value) belongs in the resumable training state, so a resumed run never
    overwrites a better model with a worse one.

    Args:
        save_dir: folder of the model file.
        deployable: the ``MaskPathwaySegmenter`` template (its configuration; its weights are replaced), or ``None``
            to save the selected network of ``mask_nets`` as it is (the supervised baseline).
        mask_nets: name -> network whose weights are saved when selected (e.g. ``{"student": student.mask_net,
            "teacher": teacher.mask_net}``; with ``deployable``, mask backbones).
        filename: model file name.
        trainer: the trainer, to record the epoch (optional).
        also_save: file name -> module, saved (``state_dict``) together with every new best model.
    """

    def __init__(
        self,
        save_dir: str,
        deployable: MaskPathwaySegmenter | None,
        mask_nets: dict[str, nn.Module],
        filename: str = "model.pt",
        trainer: Engine | None = None,
        also_save: dict[str, nn.Module] | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.deployable = deployable
        self.mask_nets = mask_nets
        self.filename = filename
        self.trainer = trainer
        self.also_save = dict(also_save or {})
        self.best_dice = -1.0
        self.best: dict = {}
        self.history: list[dict] = []

    def attach(self, engine: Engine) -> None:
        """Attach to the evaluator.

        Args:
            engine: the ``DualNetworkEvaluator``.
        """
        engine.add_event_handler(Events.COMPLETED, self)

    def state_dict(self) -> dict:
        """The best value so far and the validation history (for the resumable state)."""
        return {"best_dice": self.best_dice, "best": json.dumps(self.best), "history": json.dumps(self.history)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`.

        Args:
            state: a dict from :meth:`state_dict`.
        """
        self.best_dice = float(state["best_dice"])
        self.best = json.loads(state.get("best", "{}"))
        self.history = json.loads(state.get("history", "[]"))
        path = self.save_dir / self.filename
        if self.best_dice >= 0 and path.exists():
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable model file is handled the same way
                logger.warning(
                    "cannot read the selected model %s (%s: %s); forgetting the best value so the next validation "
                    "rewrites it", path, type(e).__name__, e,
                )
                self.best_dice, self.best = -1.0, {}

    @staticmethod
    def _weights(module: nn.Module) -> dict:
        module = getattr(module, "module", module)  # unwrap DDP
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def __call__(self, engine: Engine) -> None:
        sel = getattr(engine.state, "selection", None)
        if sel is None:
            return
        epoch = int((self.trainer or engine).state.epoch)
        record = {"epoch": epoch, **sel, **{k: v for k, v in engine.state.metrics.items() if k.startswith("val_dice_")}}
        self.history.append({k: v for k, v in record.items() if k != "curve"})
        if not is_rank_zero():  # only rank 0 writes
            return
        if sel["dice"] > self.best_dice:
            self.best_dice = sel["dice"]
            self.best = record
            src = self.mask_nets[sel["network"]]
            if self.deployable is not None:
                self.deployable.mask_net.load_state_dict(getattr(src, "module", src).state_dict())
                src = self.deployable
            atomic_torch_save(self._weights(src), self.save_dir / self.filename)
            for name, module in self.also_save.items():
                atomic_torch_save(self._weights(module), self.save_dir / name)
            stem = Path(self.filename).stem
            tmp = self.save_dir / f".{stem}_selection.json.tmp"
            tmp.write_text(json.dumps(record, indent=2))
            os.replace(tmp, self.save_dir / f"{stem}_selection.json")
            logger.info(
                "new best model: %s at threshold %.2f, validation Dice %.4f (epoch %d) -> %s",
                sel["network"], sel["threshold"], sel["dice"], epoch, self.save_dir / self.filename,
            )

"""Save the network chosen by :class:`~custom_components.engines.DualNetworkEvaluator` as the deployable model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch.nn as nn
from ignite.engine import Engine, Events

from ..networks.deployable import MaskPathwaySegmenter
from ..runtime.distributed import is_rank_zero, unwrap_module
from ..runtime.files import atomic_torch_save, atomic_write_json

__all__ = ["SelectedModelSaver"]

logger = logging.getLogger(__name__)


class SelectedModelSaver:
    """Save the selected network's mask pathway as the deployable model whenever validation improves.

    Attached to a ``DualNetworkEvaluator``; at the end of each validation run, if ``val_dice`` beats the best so
    far, ``filename`` receives the ``state_dict`` of a ``MaskPathwaySegmenter`` wrapping the selected mask
    pathway with the selected threshold folded in (one network, ``torch.load(weights_only=True)``-loadable),
    written atomically, and ``<stem>_selection.json`` records network, threshold, Dice and epoch. Its own
    ``state_dict`` (the best value) belongs in the resumable training state, so a resumed run never
    overwrites a better model with a worse one.

    Args:
        save_dir: folder of the model file.
        deployable: the ``MaskPathwaySegmenter`` template (its configuration; its weights are replaced).
        mask_nets: name -> mask backbone (e.g. ``{"student": student.mask_net, "teacher": teacher.mask_net}``).
        filename: model file name.
        trainer: the trainer, to record the epoch (optional).
    """

    def __init__(
        self,
        save_dir: str,
        deployable: MaskPathwaySegmenter,
        mask_nets: dict[str, nn.Module],
        filename: str = "model.pt",
        trainer: Engine | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.deployable = deployable
        self.mask_nets = mask_nets
        self.filename = filename
        self.trainer = trainer
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

    def __call__(self, engine: Engine) -> None:
        sel = getattr(engine.state, "selection", None)
        if sel is None:
            return
        epoch = int((self.trainer or engine).state.epoch)
        record = {"epoch": epoch, **sel, **{k: v for k, v in engine.state.metrics.items() if k.startswith("val_dice_")}}
        self.history.append(record)
        if not is_rank_zero():  # only rank 0 writes
            return
        if sel["dice"] > self.best_dice:
            self.best_dice = sel["dice"]
            self.best = record
            src = unwrap_module(self.mask_nets[sel["network"]])
            self.deployable.mask_net.load_state_dict(src.state_dict())
            self.deployable.set_threshold(min(max(sel["threshold"], 1e-3), 1 - 1e-3))
            state = {k: v.detach().cpu().clone() for k, v in self.deployable.state_dict().items()}
            atomic_torch_save(state, self.save_dir / self.filename)
            stem = Path(self.filename).stem
            atomic_write_json(record, self.save_dir / f"{stem}_selection.json")
            logger.info(
                "new best model: %s at threshold %.2f, validation Dice %.4f (epoch %d) -> %s",
                sel["network"], sel["threshold"], sel["dice"], epoch, self.save_dir / self.filename,
            )

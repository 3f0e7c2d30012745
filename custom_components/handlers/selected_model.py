"""Save the network chosen by :class:`~custom_components.engines.DualNetworkEvaluator` as the deployable model."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from ..bundle_tools.settings import record_threshold
from ..networks.deployable import MaskPathwaySegmenter
from ..runtime.distributed import is_rank_zero, unwrap_module
from ..runtime.files import atomic_torch_save, atomic_write_json

__all__ = ["SELECTION_MODES", "SelectedModelSaver", "selection_mode"]

#: ``best``: the network / epoch / threshold that validation scores best; ``last``: no selection, the last epoch's
#: first network at threshold 0.5 (no validation set, or one too small to select on: ``make_folds``)
SELECTION_MODES = ("best", "last")

logger = logging.getLogger(__name__)


def selection_mode(datalist: str | Path, val_key: str = "validation") -> str:
    """How a training run on ``datalist`` chooses its model: ``"last"`` when the datalist says
    ``"selection": "last"`` (``make_folds``: a validation carve-out under 3 cases) or has no ``val_key`` cases,
    else ``"best"`` (the bundles' ``selection`` id).

    A datalist that cannot be read (missing, malformed, not a JSON object) gives ``"best"``: the bundles'
    ``validate_datalist`` in ``initialize`` then reports that problem with its own message, naming the file.

    Raises:
        DatalistError: a ``selection`` value other than ``best`` / ``last``.
    """
    from ..data.datalist import DatalistError

    try:
        data = json.loads(Path(datalist).read_text())
    except (OSError, ValueError):
        return "best"
    if not isinstance(data, dict):
        return "best"
    mode = data.get("selection", "best")
    if mode not in SELECTION_MODES:
        raise DatalistError(f"{datalist}: 'selection' is {mode!r}; use one of {list(SELECTION_MODES)}.")
    return "last" if mode == "last" or not data.get(val_key) else "best"


class SelectedModelSaver:
    """Save the selected network as the deployable model whenever validation improves (or, with
    ``selection="last"``, the last epoch's network when training ends).

    Attached to a ``DualNetworkEvaluator``; at the end of each validation run, if ``val_dice`` beats the best so
    far, ``filename`` receives a ``state_dict`` (one network, ``torch.load(weights_only=True)``-loadable, written
    atomically): with ``deployable``, that of the ``MaskPathwaySegmenter`` wrapping the selected mask pathway; without
    it, the selected network's own. ``<stem>_selection.json`` records network, threshold, Dice, epoch and the
    validation curve of the threshold sweep: the threshold is *not* part of the model, the evaluate / inference
    configs apply it to the raw probabilities in post-processing
    (:func:`~custom_components.engines.selected_threshold`). ``also_save`` files (e.g. the whole teacher, for
    phase 3) are written at the same moment, so they come from the selected epoch. Its own ``state_dict`` (the best
    value) belongs in the resumable training state, so a resumed run never overwrites a better model with a worse
    one; on resume an unreadable model file makes it forget the best value, so the next validation rewrites it.

    ``selection="last"`` (no validation set, or one under 3 cases): nothing is selected on validation; attached to
    the *trainer* (the bundles' ``run`` list does it and disables the ``ValidationHandler``), it saves
    ``last_network`` (default: the first of ``mask_nets``) when training completes, at threshold 0.5, and
    ``<stem>_selection.json`` says ``"selection": "last"`` with the reason.

    Args:
        save_dir: folder of the model file.
        deployable: the ``MaskPathwaySegmenter`` template (its configuration; its weights are replaced), or ``None``
            to save the selected network of ``mask_nets`` as it is (the supervised baseline).
        mask_nets: name -> network whose weights are saved when selected (e.g. ``{"student": student.mask_net,
            "teacher": teacher.mask_net}``; with ``deployable``, mask backbones).
        filename: model file name.
        trainer: the trainer, to record the epoch (optional).
        also_save: file name -> module, saved (``state_dict``) together with every new best model.
        warnings: run-level warnings written first in the ``warnings`` of every ``<stem>_selection.json`` (the
            experiment runner shows them in its report), e.g. the phase-1 gate's fall-back to a fresh teacher.
        selection: ``"best"`` (on validation) or ``"last"`` (the last checkpoint; see above).
        last_network: the network of ``mask_nets`` saved under ``selection="last"`` (default: the first).

    Raises:
        ValueError: an unknown ``selection`` or a ``last_network`` not in ``mask_nets``.
    """

    def __init__(
        self,
        save_dir: str,
        deployable: MaskPathwaySegmenter | None,
        mask_nets: dict[str, nn.Module],
        filename: str = "model.pt",
        trainer: Engine | None = None,
        also_save: dict[str, nn.Module] | None = None,
        warnings: Sequence[str] | None = None,
        selection: str = "best",
        last_network: str | None = None,
    ) -> None:
        if selection not in SELECTION_MODES:
            raise ValueError(f"selection must be one of {list(SELECTION_MODES)}, got {selection!r}.")
        if last_network is not None and last_network not in mask_nets:
            raise ValueError(f"last_network {last_network!r} is not one of mask_nets {list(mask_nets)}.")
        self.selection = selection
        self.last_network = last_network or next(iter(mask_nets))
        self.save_dir = Path(save_dir)
        self.deployable = deployable
        self.mask_nets = mask_nets
        self.filename = filename
        self.trainer = trainer
        self.also_save = dict(also_save or {})
        self.warnings = [str(w) for w in warnings or [] if w]
        self.best_dice = -1.0
        self.best: dict = {}
        self.history: list[dict] = []

    def attach(self, engine: Engine) -> None:
        """Attach to the evaluator (``selection="best"``) or to the trainer (``selection="last"``).

        Args:
            engine: the ``DualNetworkEvaluator``, or the trainer under ``selection="last"``.
        """
        engine.add_event_handler(Events.COMPLETED, self.save_last if self.selection == "last" else self)

    def save_last(self, engine: Engine) -> None:
        """``selection="last"``: save ``last_network`` of the finished training as the model (threshold 0.5).

        Args:
            engine: the trainer.
        """
        epoch = int(engine.state.epoch)
        record = {"selection": "last", "network": self.last_network, "threshold": 0.5, "dice": None, "epoch": epoch,
                  "reason": "no validation set to select on (none, or fewer than 3 cases): the last checkpoint is "
                            "the model, at threshold 0.5"}
        if self.warnings:
            record["warnings"] = list(self.warnings)
        self.best, self.history = record, [*self.history, record]
        if not is_rank_zero():
            return
        self._save(self.mask_nets[self.last_network], record)
        logger.info("no selection (selection: last): %s of the last epoch (%d) at threshold 0.50 -> %s",
                    self.last_network, epoch, self.save_dir / self.filename)

    def _save(self, src: nn.Module, record: dict) -> None:
        """Write the model (wrapped as the deployable when there is one), ``also_save`` and the selection file."""
        if self.deployable is not None:
            self.deployable.mask_net.load_state_dict(unwrap_module(src).state_dict())
            src = self.deployable
        atomic_torch_save(self._weights(src), self.save_dir / self.filename)
        for name, module in self.also_save.items():
            atomic_torch_save(self._weights(module), self.save_dir / name)
        atomic_write_json(record, self.save_dir / f"{Path(self.filename).stem}_selection.json")
        record_threshold(self.save_dir, record["threshold"])  # metadata.json, embedded in exported models

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
        return {k: v.detach().cpu().clone() for k, v in unwrap_module(module).state_dict().items()}

    def __call__(self, engine: Engine) -> None:
        sel = getattr(engine.state, "selection", None)
        if sel is None:
            return
        epoch = int((self.trainer or engine).state.epoch)
        record = {"epoch": epoch, **sel, **{k: v for k, v in engine.state.metrics.items() if k.startswith("val_dice_")}}
        if self.warnings:
            record["warnings"] = [*self.warnings, *sel.get("warnings", [])]
        self.history.append({k: v for k, v in record.items() if k != "curve"})
        if not is_rank_zero():  # only rank 0 writes
            return
        if sel["dice"] > self.best_dice:
            self.best_dice = sel["dice"]
            self.best = record
            self._save(self.mask_nets[sel["network"]], record)
            logger.info(
                "new best model: %s at threshold %.2f, validation Dice %.4f (epoch %d) -> %s",
                sel["network"], sel["threshold"], sel["dice"], epoch, self.save_dir / self.filename,
            )
            for w in sel.get("warnings", []):  # degenerate result of the saved model (DualNetworkEvaluator)
                logger.warning("%s", w)

"""Crash-safe, resumable training state: :class:`ResumableCheckpoint`.

It keeps the *full* training state (networks, optimizers, schedulers, the trainer's epoch/iteration, RNG states
and any object with ``state_dict``/``load_state_dict`` such as :class:`~custom_components.handlers.BestModelSaver`)
in one file, written atomically (:func:`~custom_components.runtime.files.atomic_torch_save`), with the previous
copy kept as ``<name>.prev``. At ``STARTED`` it restores that state, so re-running the same command continues
where the run stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

from ..runtime.distributed import is_rank_zero, strip_module_prefix, unwrap_module
from ..runtime.files import atomic_torch_save
from ..runtime.rng import capture_rng_state, restore_rng_state

__all__ = ["ResumableCheckpoint"]

logger = logging.getLogger(__name__)

_FORMAT_KEY = "_resumable_checkpoint_format"
_FORMAT_VERSION = 1


class ResumableCheckpoint:
    """Save the full training state atomically every few epochs and restore it when the trainer starts.

    Attach it to the trainer **after** the validation handler, so the state it saves includes the validation of the
    epoch that just finished (e.g. the best metric held by a :class:`BestModelSaver` in ``save_dict``).

    Saving (rank 0 only): ``{name: obj.state_dict() for name, obj in save_dict}`` plus the RNG states, written to
    ``save_dir/filename`` through :func:`atomic_torch_save`; the previous file becomes ``<filename>.prev``.
    Networks wrapped in ``DataParallel``/``DistributedDataParallel`` are saved unwrapped (no ``module.`` prefix).

    Loading (every rank, at ``STARTED``): the newest readable file wins. A file that cannot be read (truncated,
    corrupt, not a resumable checkpoint) is reported with its path through ``logging`` and ``<filename>.prev`` is
    tried instead; if both exist and neither can be read, a ``RuntimeError`` naming both is raised rather than
    silently starting from scratch. The trainer keeps the ``max_epochs`` of the *current* run, so resuming
    a 1-epoch run with ``max_epochs=2`` trains exactly one more epoch.

    Args:
        save_dir: folder holding the checkpoint (created when first written).
        save_dict: name -> object with ``state_dict()`` and ``load_state_dict()``; typically ``network``,
            ``optimizer``, ``lr_scheduler``, ``trainer`` and ``best_model`` (a :class:`BestModelSaver`).
        filename: checkpoint file name inside ``save_dir``.
        save_interval_epochs: save every this many epochs (the final epoch is always saved).
        load_on_start: restore the state at ``Events.STARTED`` when a checkpoint exists.
        save_rng: also save and restore the Python / NumPy / torch random states.
        strict: passed to ``load_state_dict`` of ``torch.nn.Module`` objects.
        engine_key: if not ``None``, the engine this handler is attached to is added to ``save_dict`` under this
            name (so a bundle config need not reference the trainer from inside its own handler list, which
            would be a circular reference).

    Raises:
        ValueError: for an empty ``save_dict``, a reserved or duplicated key, ``save_interval_epochs < 1`` or a
            ``filename`` that is not a plain name.
        TypeError: when an object of ``save_dict`` has no ``state_dict()`` / ``load_state_dict()``.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "train_state.pt",
        save_interval_epochs: int = 1,
        load_on_start: bool = True,
        save_rng: bool = True,
        strict: bool = True,
        engine_key: str | None = None,
    ) -> None:
        if not save_dict and engine_key is None:
            raise ValueError("ResumableCheckpoint: save_dict is empty; name at least one object to save.")
        for name, obj in save_dict.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(
                    f"ResumableCheckpoint: save_dict['{name}'] ({type(obj).__name__}) has no "
                    "state_dict()/load_state_dict()."
                )
            if name in ("rng", _FORMAT_KEY):
                raise ValueError(f"ResumableCheckpoint: save_dict key '{name}' is reserved.")
        if engine_key is not None and engine_key in save_dict:
            raise ValueError(f"ResumableCheckpoint: engine_key '{engine_key}' is already a key of save_dict.")
        if int(save_interval_epochs) < 1:
            raise ValueError(f"ResumableCheckpoint: save_interval_epochs must be >= 1, got {save_interval_epochs}.")
        if not filename or os.sep in filename:
            raise ValueError(f"ResumableCheckpoint: filename must be a plain file name, got '{filename}'.")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.filename = filename
        self.save_interval_epochs = int(save_interval_epochs)
        self.load_on_start = load_on_start
        self.save_rng = save_rng
        self.strict = strict
        self.engine_key = engine_key
        self.loaded_from: Path | None = None
        self._last_saved_iteration: int | None = None

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.save_dir / self.filename

    @property
    def prev_path(self) -> Path:
        """The previous checkpoint, kept as a fallback."""
        return self.save_dir / (self.filename + ".prev")

    def attach(self, engine: Any) -> None:
        """Register the load (``STARTED``) and save (``EPOCH_COMPLETED``, ``COMPLETED``) events on the trainer.

        Args:
            engine: the trainer (an Ignite ``Engine``).
        """
        if self.engine_key is not None:
            self.save_dict[self.engine_key] = engine
        if self.load_on_start:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval_epochs), self.save)
        engine.add_event_handler(Events.COMPLETED, self._save_if_unsaved)

    # ------------------------------------------------------------------ saving
    def state_dict(self, engine: Any | None = None) -> dict[str, Any]:
        """The checkpoint content.

        Args:
            engine: unused; present so the method can serve as an event handler.
        """
        content: dict[str, Any] = {_FORMAT_KEY: _FORMAT_VERSION}
        for name, obj in self.save_dict.items():
            content[name] = unwrap_module(obj).state_dict()
        if self.save_rng:
            content["rng"] = capture_rng_state()
        return content

    def save(self, engine: Any) -> None:
        """Write the checkpoint (rank 0 only); skipped when a :class:`NaNGuard` flagged a broken state.

        Args:
            engine: the trainer.
        """
        if getattr(engine.state, "nonfinite_loss", None):
            logger.warning(f"ResumableCheckpoint: not saving {self.path}: {engine.state.nonfinite_loss}")
            return
        self._last_saved_iteration = engine.state.iteration
        if not is_rank_zero():
            return
        atomic_torch_save(self.state_dict(), self.path, keep_previous=True)
        logger.info(f"ResumableCheckpoint: saved epoch {engine.state.epoch} to {self.path}")

    def _save_if_unsaved(self, engine: Any) -> None:
        if self._last_saved_iteration != engine.state.iteration and engine.state.iteration > 0:
            self.save(engine)

    # ----------------------------------------------------------------- loading
    def _read(self, path: Path) -> dict[str, Any]:
        content = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(content, dict) or content.get(_FORMAT_KEY) != _FORMAT_VERSION:
            raise ValueError("not a ResumableCheckpoint file (format key missing)")
        missing = [k for k in self.save_dict if k not in content]
        if missing:
            raise KeyError(f"entries {missing} missing (it holds {sorted(k for k in content if k != _FORMAT_KEY)})")
        return content

    def read_latest(self) -> tuple[dict[str, Any], Path] | None:
        """Read the newest readable checkpoint: ``filename``, else ``filename.prev``.

        Returns:
            ``(content, path)``, or ``None`` when neither file exists.

        Raises:
            RuntimeError: when a file exists but no candidate can be read.
        """
        errors: list[str] = []
        for candidate in (self.path, self.prev_path):
            if not candidate.exists():
                if candidate == self.path and self.prev_path.exists():
                    logger.warning(
                        f"ResumableCheckpoint: {self.path} is missing (interrupted save?), trying {self.prev_path}."
                    )
                continue
            try:
                return self._read(candidate), candidate
            except Exception as e:  # a truncated zip raises RuntimeError, a wrong pickle UnpicklingError, ...
                msg = f"cannot read checkpoint {candidate}: {type(e).__name__}: {e}"
                errors.append(msg)
                logger.error(f"ResumableCheckpoint: {msg}")
                if candidate == self.path:
                    logger.warning(f"ResumableCheckpoint: falling back to the previous checkpoint {self.prev_path}.")
        if errors:
            raise RuntimeError(
                "ResumableCheckpoint: no readable checkpoint in "
                f"{self.save_dir}: " + "; ".join(errors) + ". Delete the files to start from scratch."
            )
        return None

    def load_state_dict(self, content: Mapping[str, Any]) -> None:
        """Restore every object of ``save_dict`` (and the RNG states) from checkpoint content.

        Args:
            content: what :meth:`state_dict` produced.

        Raises:
            RuntimeError: when an object cannot be restored, naming it and the checkpoint file.
        """
        for name, obj in self.save_dict.items():
            target = unwrap_module(obj)
            try:
                if isinstance(target, torch.nn.Module):
                    target.load_state_dict(strip_module_prefix(content[name]), strict=self.strict)
                else:
                    target.load_state_dict(content[name])
            except Exception as e:
                raise RuntimeError(
                    f"ResumableCheckpoint: cannot restore '{name}' from {self.loaded_from or self.path}: "
                    f"{str(e).rstrip('.')}. "
                    "Did the configuration change since the checkpoint was written?"
                ) from e
        if self.save_rng and "rng" in content:
            restore_rng_state(content["rng"])

    def load(self, engine: Any) -> None:
        """Restore the newest readable checkpoint into ``save_dict`` and continue at the next epoch.

        Args:
            engine: the trainer; its current ``max_epochs`` is kept.
        """
        found = self.read_latest()
        if found is None:
            logger.info(f"ResumableCheckpoint: no checkpoint at {self.path}, starting from scratch.")
            return
        content, self.loaded_from = found
        max_epochs = engine.state.max_epochs
        self.load_state_dict(content)
        if max_epochs is not None:
            engine.state.max_epochs = max_epochs
        self._last_saved_iteration = engine.state.iteration
        logger.info(
            f"ResumableCheckpoint: resumed from {self.loaded_from} at epoch {engine.state.epoch} "
            f"(iteration {engine.state.iteration}); training until epoch {engine.state.max_epochs}."
        )
        if max_epochs is not None and engine.state.epoch >= max_epochs:
            logger.info(f"ResumableCheckpoint: epoch {engine.state.epoch} >= max_epochs {max_epochs}: nothing to do.")

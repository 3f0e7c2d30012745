"""Crash-safe, resumable training state: :class:`ResumableCheckpoint`, built on Ignite's ``Checkpoint``.

It keeps the *full* training state (networks, optimizers, schedulers, the trainer's epoch/iteration, RNG states
and any object with ``state_dict``/``load_state_dict`` such as :class:`~custom_components.handlers.SelectedModelSaver`)
in one file, written by Ignite's ``Checkpoint`` through ``DiskSaver(atomic=True)`` (temporary file, then
``os.replace``), with the previous copy kept as ``<name>.prev``, and restored with ``Checkpoint.load_objects``. At
``STARTED`` it restores that state, so re-running the same command continues where the run stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Events
from ignite.handlers import Checkpoint, DiskSaver

from ..errors import FileWriteError
from ..runtime.distributed import strip_module_prefix, unwrap_module
from ..runtime.rng import capture_rng_state, restore_rng_state

__all__ = ["ResumableCheckpoint"]

logger = logging.getLogger(__name__)

_FORMAT_KEY = "_resumable_checkpoint_format"
_FORMAT_VERSION = 1


class _State:
    """A ``state_dict`` / ``load_state_dict`` pair made of two functions (the RNG states, the format tag)."""

    def __init__(self, get: Any, put: Any) -> None:
        self.state_dict, self.load_state_dict = get, put


class _RotatingDiskSaver(DiskSaver):
    """``DiskSaver(atomic=True)`` that keeps the file it replaces as ``<name>.prev`` and names the folder on failure.

    The new content is written and ``fsync``-ed to a temporary file first; only then is the old file moved to
    ``.prev`` and the temporary file moved over it, so a failed write (full disk, unwritable folder) leaves the old
    file untouched. The folder is created on the first write, not at construction.
    """

    def __init__(self, dirname: str | os.PathLike) -> None:
        super().__init__(dirname, atomic=True, create_dir=False, require_empty=False)

    @staticmethod
    def _check_and_setup(dirname: Path, create_dir: bool, require_empty: bool) -> None:
        """Nothing at construction: the folder is created when the first checkpoint is written."""

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        path = self.dirname / filename
        try:
            if idist.get_rank() == self.save_on_rank:
                self.dirname.mkdir(parents=True, exist_ok=True)
            super().__call__(checkpoint, filename, metadata)
        except OSError as e:
            raise FileWriteError("checkpoint", path, e) from e

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        def save_then_rotate(obj: Any, f: Any, **kwargs: Any) -> None:
            func(obj, f, **kwargs)
            f.flush()
            os.fsync(f.fileno())
            if path.exists():  # written completely: the old file becomes .prev, then DiskSaver moves ours in
                os.replace(path, path.with_name(path.name + ".prev"))

        super()._save_func(checkpoint, path, save_then_rotate)

    def remove(self, filename: str) -> None:
        """Keep the file Ignite would delete: the next write moves it to ``.prev`` once the new one is complete."""


class ResumableCheckpoint:
    """Save the full training state atomically every few epochs and restore it when the trainer starts.

    Attach it to the trainer **after** the validation handler, so the state it saves includes the validation of the
    epoch that just finished (e.g. the best metric held by a :class:`SelectedModelSaver` in ``save_dict``).

    Saving (rank 0 only): Ignite's ``Checkpoint`` writes ``{name: obj.state_dict() for name, obj in save_dict}``
    plus the RNG states to ``save_dir/filename`` (atomically); the previous file becomes ``<filename>.prev``.
    Networks wrapped in ``DataParallel``/``DistributedDataParallel`` are saved unwrapped (no ``module.`` prefix).
    A folder that cannot be written stops the run with :class:`~custom_components.errors.FileWriteError` naming
    the folder.

    Loading (every rank, at ``STARTED``): the newest readable file wins. A file that cannot be read (truncated,
    corrupt, not a resumable checkpoint) is reported with its path through ``logging`` and ``<filename>.prev`` is
    tried instead; if both exist and neither can be read, a ``RuntimeError`` naming both is raised rather than
    silently starting from scratch. The trainer keeps the ``max_epochs`` of the *current* run, so resuming
    a 1-epoch run with ``max_epochs=2`` trains exactly one more epoch.

    Args:
        save_dir: folder holding the checkpoint (created when first written).
        save_dict: name -> object with ``state_dict()`` and ``load_state_dict()``; typically ``network``,
            ``optimizer``, ``lr_scheduler``, ``trainer`` and ``best_model`` (a :class:`SelectedModelSaver`).
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
        self._checkpoint: Checkpoint | None = None

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
        # at the start, what Ignite's Checkpoint believes is on disk is set from the files (load) or forgotten
        engine.add_event_handler(Events.STARTED, self.load if self.load_on_start else self.checkpoint.reset)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval_epochs), self.save)
        engine.add_event_handler(Events.COMPLETED, self._save_if_unsaved)

    def _save_if_unsaved(self, engine: Any) -> None:
        if engine.state.iteration > 0:
            self.save(engine)  # skipped when the last epoch's save wrote this iteration

    # ------------------------------------------------------------------ saving
    def _to_save(self) -> dict[str, Any]:
        objects = {_FORMAT_KEY: _State(lambda: _FORMAT_VERSION, lambda _: None)}
        objects.update({name: unwrap_module(obj) for name, obj in self.save_dict.items()})
        if self.save_rng:
            objects["rng"] = _State(capture_rng_state, restore_rng_state)
        return objects

    @property
    def checkpoint(self) -> Checkpoint:
        """Ignite's ``Checkpoint`` writing the file (one file, ``n_saved=1``, priority = the trainer's iteration)."""
        if self._checkpoint is None:
            pattern = self.filename.replace("{", "{{").replace("}", "}}")
            self._checkpoint = Checkpoint(
                self._to_save(), _RotatingDiskSaver(self.save_dir), filename_pattern=pattern, n_saved=1
            )
        return self._checkpoint

    def state_dict(self, engine: Any | None = None) -> dict[str, Any]:
        """The checkpoint content.

        Args:
            engine: unused; present so the method can serve as an event handler.
        """
        return {name: obj.state_dict() for name, obj in self._to_save().items()}

    def save(self, engine: Any) -> None:
        """Write the checkpoint (rank 0 only) unless this iteration is saved already; skipped when a
        :class:`NaNGuard` flagged a broken state.

        Args:
            engine: the trainer.

        Raises:
            FileWriteError: when the folder cannot be written (the previous file is unchanged).
        """
        if getattr(engine.state, "nonfinite_loss", None):
            logger.warning(f"ResumableCheckpoint: not saving {self.path}: {engine.state.nonfinite_loss}")
            return
        saved = self.checkpoint.state_dict()["_saved"]
        if saved and saved[-1][0] >= engine.state.iteration:
            return  # this iteration is on disk already (end of run right after a periodic save, or a resumed run)
        self.checkpoint(engine)
        logger.info(f"ResumableCheckpoint: saved epoch {engine.state.epoch} to {self.path}")

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
        for name, obj in self._to_save().items():
            if name == _FORMAT_KEY or (name == "rng" and "rng" not in content):
                continue
            state = content[name]
            if isinstance(obj, torch.nn.Module):
                state = strip_module_prefix(state)
            try:
                Checkpoint.load_objects({name: obj}, {name: state}, strict=self.strict)
            except Exception as e:
                raise RuntimeError(
                    f"ResumableCheckpoint: cannot restore '{name}' from {self.loaded_from or self.path}: "
                    f"{str(e).rstrip('.')}. "
                    "Did the configuration change since the checkpoint was written?"
                ) from e

    def load(self, engine: Any) -> None:
        """Restore the newest readable checkpoint into ``save_dict`` and continue at the next epoch.

        Args:
            engine: the trainer; its current ``max_epochs`` is kept.
        """
        self.checkpoint.reset()
        found = self.read_latest()
        if found is None:
            logger.info(f"ResumableCheckpoint: no checkpoint at {self.path}, starting from scratch.")
            return
        content, self.loaded_from = found
        max_epochs = engine.state.max_epochs
        self.load_state_dict(content)
        if max_epochs is not None:
            engine.state.max_epochs = max_epochs
        # this iteration is on disk: Ignite's Checkpoint saves again only at a later iteration
        self.checkpoint.load_state_dict({"_saved": [(engine.state.iteration, self.filename)]})
        logger.info(
            f"ResumableCheckpoint: resumed from {self.loaded_from} at epoch {engine.state.epoch} "
            f"(iteration {engine.state.iteration}); training until epoch {engine.state.max_epochs}."
        )
        if max_epochs is not None and engine.state.epoch >= max_epochs:
            logger.info(f"ResumableCheckpoint: epoch {engine.state.epoch} >= max_epochs {max_epochs}: nothing to do.")

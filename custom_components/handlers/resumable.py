"""Crash-safe checkpoint handlers shared by every bundle.

Three Ignite handlers:

- :class:`ResumableCheckpoint` keeps the *full* training state (networks, optimizers, schedulers, the trainer's
  epoch/iteration, RNG states and any object with ``state_dict``/``load_state_dict`` such as
  :class:`BestModelSaver`) in one file, written atomically, with the previous copy kept as ``<name>.prev``.
  At ``STARTED`` it restores that state, so re-running the same command continues where the run stopped.
- :class:`BestModelSaver` writes ``model.pt`` (one network's plain ``state_dict``) whenever a validation metric
  improves; its best value is part of the resumable state, so a resumed run never replaces a better
  ``model.pt`` with a worse one.
- :class:`NaNGuard` stops training at the first non-finite loss term, naming the iteration and every bad term.

All files are written through :func:`atomic_torch_save`: a temporary file in the target folder, ``fsync``,
then ``os.replace``, so a crash (or ``kill -9``) during a write never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Events

__all__ = [
    "NonFiniteLossError",
    "ResumableCheckpoint",
    "BestModelSaver",
    "NaNGuard",
    "atomic_torch_save",
    "capture_rng_state",
    "restore_rng_state",
    "unwrap_module",
]

logger = logging.getLogger(__name__)

_FORMAT_KEY = "_resumable_checkpoint_format"
_FORMAT_VERSION = 1


class NonFiniteLossError(FloatingPointError):
    """Raised by :class:`NaNGuard` when a loss term is NaN or infinite."""


def _is_rank_zero() -> bool:
    """Whether this process is the one that writes files (always true outside ``torch.distributed``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return True


def unwrap_module(obj: Any) -> Any:
    """Return ``obj.module`` for ``DataParallel`` / ``DistributedDataParallel`` wrappers, else ``obj``.

    Args:
        obj: a network, possibly wrapped for data parallelism, or any other object.
    """
    if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        return obj.module
    return obj


def _strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a leading ``module.`` from every key when *all* keys carry it (a state dict saved from a DDP wrapper)."""
    keys = list(state_dict.keys())
    if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry to disk (POSIX); silently skipped where directories cannot be opened."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike, keep_previous: bool = False) -> Path:
    """Write ``obj`` with ``torch.save`` so that ``path`` is either the old complete file or the new complete file.

    The data goes to a temporary file in the same folder, is flushed and ``fsync``-ed, then moved over ``path``
    with ``os.replace`` (atomic on POSIX and Windows). If anything fails, the temporary file is removed and the
    existing ``path`` is left untouched.

    Args:
        obj: anything ``torch.save`` accepts.
        path: destination file; its folder is created if missing.
        keep_previous: if true and ``path`` exists, it is first moved to ``<path>.prev``.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name(path.name + ".prev"))
        os.replace(tmp_name, path)
        os.chmod(path, 0o644)  # mkstemp creates 0600 files; checkpoints are shared with collaborators
    except OSError as e:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise OSError(e.errno, f"cannot write checkpoint {path} ({e.strerror or e}); the previous file is unchanged", str(path)) from e
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and, when present, CUDA) random states, as ``weights_only``-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (
            str(np_state[0]),
            torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned.

    Args:
        state: the mapping returned by :func:`capture_rng_state`.
    """
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


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
        if not _is_rank_zero():
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
        """
        for name, obj in self.save_dict.items():
            target = unwrap_module(obj)
            try:
                if isinstance(target, torch.nn.Module):
                    target.load_state_dict(_strip_module_prefix(content[name]), strict=self.strict)
                else:
                    target.load_state_dict(content[name])
            except Exception as e:
                raise RuntimeError(
                    f"ResumableCheckpoint: cannot restore '{name}' from {self.loaded_from or self.path}: {str(e).rstrip('.')}. "
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


class BestModelSaver:
    """Write one network's plain ``state_dict`` when a validation metric improves.

    Attach it to the **evaluator** (validation engine): at its ``EPOCH_COMPLETED`` it reads
    ``engine.state.metrics[metric_name]`` and, if better than every value seen so far (including values restored
    from a resumable checkpoint through :meth:`load_state_dict`), writes ``save_dir/filename`` atomically and a
    small JSON summary (metric, value, epoch) beside it. Only rank 0 writes.

    Args:
        save_dir: folder for ``model.pt``.
        network: the network whose weights are saved (DDP wrappers are removed, so keys carry no ``module.``).
        filename: weights file name.
        metric_name: key of ``engine.state.metrics`` to compare.
        mode: ``"max"`` (higher is better, e.g. Dice) or ``"min"``.
        epoch_engine: engine whose ``state.epoch`` is recorded (the trainer); default: the attached engine.
        summary_filename: JSON summary file name, or ``None`` to skip it.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        filename: str = "model.pt",
        metric_name: str = "val_mean_dice",
        mode: str = "max",
        epoch_engine: Any | None = None,
        summary_filename: str | None = "model_best.json",
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"BestModelSaver: mode must be 'max' or 'min', got '{mode}'.")
        if not isinstance(unwrap_module(network), torch.nn.Module):
            raise TypeError(f"BestModelSaver: network must be a torch.nn.Module, got {type(network).__name__}.")
        self.save_dir = Path(save_dir)
        self.network = network
        self.filename = filename
        self.metric_name = metric_name
        self.mode = mode
        self.epoch_engine = epoch_engine
        self.summary_filename = summary_filename
        self.best_value: float | None = None
        self.best_epoch: int = -1

    @property
    def path(self) -> Path:
        """The weights file."""
        return self.save_dir / self.filename

    def attach(self, engine: Any) -> None:
        """Register on the evaluator's ``EPOCH_COMPLETED``.

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def is_better(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (a NaN never does).

        Args:
            value: the new metric value.
        """
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def __call__(self, engine: Any) -> None:
        """Compare the metric and save on improvement.

        Args:
            engine: the evaluator.
        """
        if self.metric_name not in engine.state.metrics:
            raise KeyError(
                f"BestModelSaver: metric '{self.metric_name}' not in engine.state.metrics "
                f"(available: {sorted(engine.state.metrics)})."
            )
        value = float(engine.state.metrics[self.metric_name])
        if not self.is_better(value):
            return
        epoch = int((self.epoch_engine or engine).state.epoch)
        self.best_value, self.best_epoch = value, epoch
        if not _is_rank_zero():
            return
        weights = {k: v.detach().cpu() for k, v in unwrap_module(self.network).state_dict().items()}
        atomic_torch_save(weights, self.path)
        if self.summary_filename:
            summary = {"metric": self.metric_name, "mode": self.mode, "value": value, "epoch": epoch,
                       "file": self.filename}
            tmp = self.save_dir / f".{self.summary_filename}.tmp"
            tmp.write_text(json.dumps(summary, indent=2))
            os.replace(tmp, self.save_dir / self.summary_filename)
        logger.info(f"BestModelSaver: {self.metric_name}={value:.4f} at epoch {epoch} is the best; saved {self.path}")

    def state_dict(self) -> dict[str, Any]:
        """The best value and its epoch (so a resumed run keeps comparing against them)."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "metric_name": self.metric_name,
                "mode": self.mode}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the best value.

        Args:
            state: what :meth:`state_dict` returned.
        """
        if state.get("metric_name", self.metric_name) != self.metric_name or state.get("mode", self.mode) != self.mode:
            raise ValueError(
                f"BestModelSaver: checkpoint tracks {state.get('metric_name')} ({state.get('mode')}), "
                f"this run tracks {self.metric_name} ({self.mode})."
            )
        self.best_value = None if state["best_value"] is None else float(state["best_value"])
        self.best_epoch = int(state["best_epoch"])
        if self.best_value is not None and self.path.exists():
            try:
                torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable model file is handled the same way
                logger.warning(
                    "cannot read the best model %s (%s: %s); forgetting the best value so the next validation "
                    "rewrites it", self.path, type(e).__name__, e,
                )
                self.best_value, self.best_epoch = None, -1


class NaNGuard:
    """Stop training at the first iteration whose loss terms are not all finite.

    Loss terms are read from ``engine.state.output``: a tensor or number is the term ``loss``; a mapping (or a
    list of mappings, as MONAI's decollated outputs) contributes every key in ``loss_keys``, or by default
    ``loss`` and every key starting with ``loss_``. The message names the epoch, the iteration and each
    non-finite term with its value. It is stored in ``engine.state.nonfinite_loss`` (so
    :class:`ResumableCheckpoint` refuses to save the broken state) and, with ``action="raise"`` (default), raised as
    :class:`NonFiniteLossError` so the process exits with an error; ``action="terminate"`` logs it and
    calls ``engine.terminate()`` instead.

    Args:
        loss_keys: names of the loss terms to check; ``None`` checks ``loss`` and ``loss_*``.
        action: ``"raise"`` or ``"terminate"``.
        output_transform: maps ``engine.state.output`` to what is inspected (identity by default).
    """

    def __init__(
        self,
        loss_keys: Sequence[str] | None = None,
        action: str = "raise",
        output_transform: Callable[[Any], Any] = lambda x: x,
    ) -> None:
        if action not in ("raise", "terminate"):
            raise ValueError(f"NaNGuard: action must be 'raise' or 'terminate', got '{action}'.")
        self.loss_keys = None if loss_keys is None else list(loss_keys)
        self.action = action
        self.output_transform = output_transform

    def attach(self, engine: Any) -> None:
        """Register on ``ITERATION_COMPLETED``.

        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _is_loss_key(self, key: Any) -> bool:
        if self.loss_keys is not None:
            return key in self.loss_keys
        return isinstance(key, str) and (key == "loss" or key.startswith("loss_"))

    def _terms(self, output: Any) -> dict[str, Any]:
        if isinstance(output, (torch.Tensor, float, int)):
            return {"loss": output}
        if isinstance(output, Mapping):
            return {k: v for k, v in output.items() if self._is_loss_key(k)}
        if isinstance(output, (list, tuple)):
            terms: dict[str, Any] = {}
            for i, item in enumerate(output):
                for k, v in self._terms(item).items():
                    terms[k if len(output) == 1 else f"{k}[{i}]"] = v
            return terms
        return {}

    @staticmethod
    def _finite(value: Any) -> bool:
        if isinstance(value, torch.Tensor):
            return bool(torch.isfinite(value.detach()).all())
        try:
            return bool(np.all(np.isfinite(np.asarray(value, dtype=float))))
        except (TypeError, ValueError):
            return True

    @staticmethod
    def _fmt(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            return f"{value.item()}" if value.numel() == 1 else f"tensor(shape={tuple(value.shape)}, non-finite)"
        return str(value)

    def __call__(self, engine: Any) -> None:
        """Check the loss terms of the iteration that just finished.

        Args:
            engine: the trainer.
        """
        bad = {k: v for k, v in self._terms(self.output_transform(engine.state.output)).items() if not self._finite(v)}
        if not bad:
            return
        terms = ", ".join(f"{k}={self._fmt(v)}" for k, v in bad.items())
        message = (
            f"Non-finite loss at epoch {engine.state.epoch}, iteration {engine.state.iteration}: {terms}. "
            "Training stopped; no checkpoint of this state was written."
        )
        engine.state.nonfinite_loss = message
        logger.error(message)
        if self.action == "raise":
            raise NonFiniteLossError(message)
        engine.terminate()

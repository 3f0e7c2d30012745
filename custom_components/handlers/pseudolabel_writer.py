"""Phase 3 handler: collect one record per pseudo-labelled image and write the ranked ``pseudolabels.json``.

The records come from the evaluator's decollated output: the image file (``image.meta["filename_or_obj"]``), the
pseudo-label and uncertainty files (``meta["saved_to"]``, set by ``SaveImaged(savepath_in_metadict=True)``) and the
per-image score (a float written by ``ConfidenceScored``). ``pseudolabels.json`` is a decathlon-style datalist
(``monai.data.load_decathlon_datalist(path, data_list_key="pseudolabels")`` reads it), ranked from the least to the
most confident entry, paths relative to its own folder.

Resumable: each record is appended (and ``fsync``-ed) to ``.pseudolabels.partial.jsonl`` in the output folder as
soon as its files are written; a rerun after a kill skips the images recorded there (:func:`pending_entries`) and
writes ``pseudolabels.json`` at the end from every record, then removes the partial file. ``--overwrite True``
first removes an earlier run's files, so the folder never mixes two runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.utils import min_version, optional_import

from ..errors import UserError
from ..runtime.files import atomic_write_json

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["PSEUDOLABELS_FILE", "PARTIAL_FILE", "OutputExistsError", "PseudoLabelWriter", "check_output_dir",
           "existing_pseudolabels", "pending_entries"]

#: name of the ranked datalist written into the output folder
PSEUDOLABELS_FILE = "pseudolabels.json"
#: records of the images done so far (one JSON object a line; the first line holds the run's settings)
PARTIAL_FILE = ".pseudolabels.partial.jsonl"

logger = logging.getLogger(__name__)


class OutputExistsError(UserError, FileExistsError):
    """The output folder holds a finished pseudo-labelling run (``pseudolabels.json``)."""


def _read_partial(output_dir: str | os.PathLike) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The settings line and the records of ``PARTIAL_FILE`` (a line cut by a kill is ignored)."""
    path = Path(output_dir) / PARTIAL_FILE
    if not path.is_file():
        return None, []
    header, records = None, []
    for line in path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "settings" in obj and header is None:
            header = obj["settings"]
        elif isinstance(obj, dict) and "image" in obj:
            records.append(obj)
    return header, records


def _done_images(output_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Absolute image path -> record, for the records whose pseudo-label (and uncertainty) files exist."""
    out = Path(output_dir).resolve()
    done = {}
    for r in _read_partial(output_dir)[1]:
        files = [r.get("pseudo_label"), r.get("uncertainty")]
        if all(f is None or (out / f).is_file() for f in files):
            done[os.path.normpath(out / r["image"])] = r
    return done


def pending_entries(entries: Sequence[dict[str, Any]], output_dir: str | os.PathLike,
                    overwrite: bool = False) -> list[dict[str, Any]]:
    """The entries still to pseudo-label: those not recorded in ``PARTIAL_FILE`` by an interrupted run.

    When every entry is recorded (a kill between the last image and ``pseudolabels.json``), the last one is kept,
    so the run ends and writes the file.

    Args:
        entries: the datalist entries (``image`` paths absolute, as ``load_decathlon_datalist`` returns them).
        output_dir: the output folder.
        overwrite: start over (every entry).
    """
    if overwrite:
        return list(entries)
    done = _done_images(output_dir)
    todo = [e for e in entries if os.path.normpath(os.path.abspath(e["image"])) not in done]
    if done:
        logger.info(f"pseudo-labelling resumed in {output_dir}: {len(entries) - len(todo)} of {len(entries)} images "
                    "done earlier are skipped.")
    return todo or list(entries)[-1:]


def existing_pseudolabels(output_dir: str | os.PathLike,
                          postfixes: Sequence[str] = ("pseudo", "uncertainty")) -> list[Path]:
    """Files in ``output_dir`` that belong to an earlier pseudo-labelling run.

    Args:
        output_dir: the output folder.
        postfixes: the file-name postfixes of the pseudo-label and uncertainty files (``<name>_<postfix>.<ext>``).
    """
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [out / PSEUDOLABELS_FILE] if (out / PSEUDOLABELS_FILE).exists() else []
    for p in sorted(out.iterdir()):
        stem = p.name.split(".")[0]
        if p.is_file() and any(stem.endswith("_" + pf) for pf in postfixes if pf):
            found.append(p)
    return found


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool = False,
                     postfixes: Sequence[str] = ("pseudo", "uncertainty")) -> str:
    """Refuse an output folder holding a finished run (``pseudolabels.json``) unless ``overwrite``; with
    ``overwrite`` remove the earlier run's files first; an interrupted run (no ``pseudolabels.json``) is resumed.

    Args:
        output_dir: the output folder.
        overwrite: replace an earlier run's files (they are deleted before anything new is written).
        postfixes: the pseudo-label and uncertainty file-name postfixes.

    Returns:
        the folder, as a string.

    Raises:
        OutputExistsError: a ``FileExistsError`` naming the folder and an example file.
    """
    found = existing_pseudolabels(output_dir, postfixes)
    partial = Path(output_dir) / PARTIAL_FILE
    if overwrite:
        for f in ([partial] if partial.exists() else []) + found:
            f.unlink()
        if found:
            logger.info(f"--overwrite: removed {len(found)} file(s) of an earlier run from {output_dir}.")
    elif (Path(output_dir) / PSEUDOLABELS_FILE).exists():
        raise OutputExistsError(
            f"output folder '{output_dir}' already holds pseudo-labels ({len(found)} file(s), e.g. '{found[0].name}'); "
            "refusing to overwrite them. Choose another --output_dir, or pass --overwrite True to replace them."
        )
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    return str(output_dir)


def _meta_path(value: Any, what: str) -> str:
    meta = getattr(value, "meta", None)
    if not isinstance(meta, dict):
        raise ValueError(f"PseudoLabelWriter: '{what}' has no meta data (got {type(value).__name__}).")
    path = meta.get("saved_to") if what != "image" else meta.get("filename_or_obj")
    if not path:
        hint = "filename_or_obj" if what == "image" else "saved_to (use SaveImaged(..., savepath_in_metadict=True))"
        raise ValueError(f"PseudoLabelWriter: '{what}' meta data has no {hint}.")
    return str(path)


class PseudoLabelWriter:
    """Ignite handler writing ``<output_dir>/pseudolabels.json`` when the evaluator completes.

    Each entry: ``image``, ``pseudo_label``, ``uncertainty`` (paths relative to ``output_dir``), ``score``
    (rounded to 6 digits) and ``rank`` (0 = least confident). The file also records ``score_mode``,
    ``num_classes`` and ``spatial_dims`` when given. Entries are sorted by ascending score (ties by image path).

    Args:
        output_dir: folder of the output (the file goes there).
        image_key: the image key of the evaluator output.
        pred_key: the pseudo-label key (saved with ``savepath_in_metadict=True``).
        uncertainty_key: the uncertainty key (saved likewise); ``None``: not recorded.
        score_key: the per-image score key.
        list_key: the datalist key of the ranked list.
        extra: top-level fields copied into the file (``score_mode``, ``rounds``, ``teacher_ckpt``, ...).
        filename: the file name.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        image_key: str = "image",
        pred_key: str = "pred",
        uncertainty_key: str | None = "uncertainty",
        score_key: str = "confidence",
        list_key: str = "pseudolabels",
        extra: dict | None = None,
        filename: str = PSEUDOLABELS_FILE,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.image_key = image_key
        self.pred_key = pred_key
        self.uncertainty_key = uncertainty_key
        self.score_key = score_key
        self.list_key = list_key
        self.extra = dict(extra or {})
        self.filename = filename
        self.records: list[dict[str, Any]] = []
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Register on ``engine`` (start: reset, iteration: collect, completed: write).

        Args:
            engine: the evaluator.
        """
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        """Start from the records of an interrupted run (``PARTIAL_FILE``), refusing other settings."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        header, records = _read_partial(self.output_dir)
        settings = json.loads(json.dumps(self.extra, default=str))
        if header is not None and header != settings:
            diff = [f"{k}: was {header.get(k)!r}, now {settings.get(k)!r}" for k in sorted(set(header) | set(settings))
                    if header.get(k) != settings.get(k)]
            raise UserError(f"{self.output_dir / PARTIAL_FILE}: an interrupted run with other settings ("
                            f"{'; '.join(diff)}); pass --overwrite True to start over, or choose another --output_dir.")
        self._partial = self.output_dir / PARTIAL_FILE
        if header is None:
            self._append({"settings": settings})
        self.records = list({r["image"]: r for r in records}.values())

    def _append(self, obj: dict[str, Any]) -> None:
        with open(self._partial, "a") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _rel(self, path: str) -> str:
        return os.path.relpath(os.path.abspath(path), self.output_dir.resolve())

    def _collect(self, engine: Engine) -> None:
        outputs = engine.state.output
        if isinstance(outputs, dict):
            outputs = [outputs]
        for out in outputs:
            if self.score_key not in out:
                raise KeyError(f"PseudoLabelWriter: the output has no '{self.score_key}' (add ConfidenceScored to "
                               "postprocessing).")
            rec = {
                "image": self._rel(_meta_path(out[self.image_key], "image")),
                "pseudo_label": self._rel(_meta_path(out[self.pred_key], self.pred_key)),
            }
            if self.uncertainty_key is not None:
                rec["uncertainty"] = self._rel(_meta_path(out[self.uncertainty_key], self.uncertainty_key))
            rec["score"] = round(float(out[self.score_key]), 6)
            self.records = [r for r in self.records if r["image"] != rec["image"]] + [rec]
            self._append(rec)

    def ranked(self) -> list[dict[str, Any]]:
        """The collected records, least confident first, each with its ``rank``."""
        ranked = sorted(self.records, key=lambda r: (r["score"], r["image"]))
        return [{**r, "rank": i} for i, r in enumerate(ranked)]

    def _write(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        doc = {**self.extra, "ranking": "ascending score (least confident first)", self.list_key: self.ranked()}
        path = self.output_dir / self.filename
        atomic_write_json(doc, path)
        self._partial.unlink(missing_ok=True)
        self.logger.info(f"wrote {len(self.records)} pseudo-label entries to {path}")

"""Phase 3 handler: collect one record per pseudo-labelled image and write the ranked ``pseudolabels.json``.

The records come from the evaluator's decollated output: the image file (``image.meta["filename_or_obj"]``), the
pseudo-label and uncertainty files (``meta["saved_to"]``, set by ``SaveImaged(savepath_in_metadict=True)``) and the
per-image score (a float written by ``ConfidenceScored``). ``pseudolabels.json`` is a decathlon-style datalist
(``monai.data.load_decathlon_datalist(path, data_list_key="pseudolabels")`` reads it), ranked from the least to the
most confident entry, paths relative to its own folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.utils import min_version, optional_import

from ..runtime.files import atomic_write_json

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["PSEUDOLABELS_FILE", "PseudoLabelWriter", "check_output_dir", "existing_pseudolabels"]

#: name of the ranked datalist written into the output folder
PSEUDOLABELS_FILE = "pseudolabels.json"


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
    """Refuse an output folder that already holds pseudo-labels, unless ``overwrite``; create it otherwise.

    Args:
        output_dir: the output folder.
        overwrite: allow writing over an earlier run's files.
        postfixes: the pseudo-label and uncertainty file-name postfixes.

    Returns:
        the folder, as a string.

    Raises:
        FileExistsError: naming the folder and an example file.
    """
    found = existing_pseudolabels(output_dir, postfixes)
    if found and not overwrite:
        raise FileExistsError(
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
        self.records = []

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
            self.records.append(rec)

    def ranked(self) -> list[dict[str, Any]]:
        """The collected records, least confident first, each with its ``rank``."""
        ranked = sorted(self.records, key=lambda r: (r["score"], r["image"]))
        return [{**r, "rank": i} for i, r in enumerate(ranked)]

    def _write(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        doc = {**self.extra, "ranking": "ascending score (least confident first)", self.list_key: self.ranked()}
        path = self.output_dir / self.filename
        atomic_write_json(doc, path)
        self.logger.info(f"wrote {len(self.records)} pseudo-label entries to {path}")

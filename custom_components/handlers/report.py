"""``SegmentationReport``: per-case metrics of a MONAI evaluator run under a named protocol, written as reports."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import IgniteInfo, min_version, optional_import

from custom_components.metrics import (
    EvaluationProtocol,
    compute_case_metrics,
    file_stem,
    format_table,
    get_protocol,
    resolve_class_names,
    summarize,
    write_reports,
)
from custom_components.runtime.distributed import is_rank_zero

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["SegmentationReport", "to_label_map"]

_SPACING_KEYS = ("pixdim", "spacing", "original_pixdim")


def to_label_map(x: Any, what: str = "pred") -> np.ndarray:
    """Channel-first array ``(C, *spatial)`` -> hard label map ``(*spatial)``.

    ``C == 1``: the single channel holds class indices; ``C > 1``: argmax over channels (one-hot or probabilities).

    Args:
        x: numpy array or tensor, channel first (as MONAI's decollated items are).
        what: name used in error messages.

    Raises:
        ValueError: when ``x`` is not channel-first 2D or 3D.
    """
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"handlers/report.py: {what} must be channel first with 2 or 3 spatial axes, got shape {arr.shape}."
        )
    return arr[0] if arr.shape[0] == 1 else np.argmax(arr, axis=0)


class SegmentationReport:
    """Compute per-case Dice/Jaccard/HD95/ASD during an evaluator run and write ``metrics.csv``/``metrics.json``.

    Attach to a MONAI evaluator whose ``postprocessing`` produces, per decollated item, a hard prediction (or
    one-hot / probabilities, turned into labels by argmax) and the label, both channel first and in the
    geometry the protocol expects (native geometry for ``clean`` and ``la_uamt``: invert the preprocessing first).
    Rows are collected from ``STARTED`` on; at ``COMPLETED`` they are gathered over distributed ranks, and rank 0
    writes the reports into ``output_dir`` and prints the summary table. The rows and the summary are also kept
    in ``self.rows`` / ``self.summary`` and stored in ``engine.state.metrics["segmentation_report"]``.

    Args:
        output_dir: folder for ``metrics.csv`` and ``metrics.json``.
        protocol: protocol name or ``EvaluationProtocol`` (``clean``, ``paper2d``, ``la_uamt``).
        num_classes: number of classes including background.
        class_names: class names (list or index -> name mapping), default ``class1, class2, ...``.
        pred_key: key of the prediction in each decollated output item.
        label_key: key of the label in each decollated output item.
        spacing_from_meta: take the voxel spacing from the label's (else the prediction's) MetaTensor affine
            when its metadata comes from a format that stores spacing (NIfTI, NRRD, ...).
        filename_key: key of the item whose ``filename_or_obj`` metadata names the case (its file stem).
        largest_cc: override the protocol's largest-connected-component post-processing (``None``: keep).
        print_table: print the summary table at ``COMPLETED``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        protocol: str | EvaluationProtocol = "clean",
        *,
        num_classes: int,
        class_names: Sequence[str] | Mapping[Any, str] | None = None,
        pred_key: str = "pred",
        label_key: str = "label",
        spacing_from_meta: bool = True,
        filename_key: str = "image",
        largest_cc: bool | None = None,
        print_table: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.protocol = get_protocol(protocol) if largest_cc is None else get_protocol(protocol, largest_cc=largest_cc)
        self.class_names = resolve_class_names(num_classes, class_names)
        self.num_classes = num_classes
        self.pred_key = pred_key
        self.label_key = label_key
        self.spacing_from_meta = spacing_from_meta
        self.filename_key = filename_key
        self.print_table = print_table
        self.rows: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Register the handler's callbacks on ``engine``.

        Args:
            engine: the Ignite/MONAI engine (usually a ``SupervisedEvaluator``).
        """
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the rows of a previous run.

        Args:
            engine: the engine (unused).
        """
        self.rows = []
        self.summary = {}

    def _spacing(self, item: Mapping[str, Any]) -> list[float] | None:
        if not self.spacing_from_meta:
            return None
        for key in (self.label_key, self.pred_key):
            t = item.get(key)
            if isinstance(t, MetaTensor) and any(k in t.meta for k in _SPACING_KEYS):
                return [float(s) for s in t.pixdim]
        return None

    def _case_id(self, item: Mapping[str, Any]) -> str:
        for key in (self.filename_key, self.label_key, self.pred_key):
            t = item.get(key)
            name = t.meta.get("filename_or_obj") if isinstance(t, MetaTensor) else None
            if name:
                return file_stem(name)
        return f"case_{len(self.rows):04d}"

    def iteration_completed(self, engine: Engine) -> None:
        """Score every decollated item of ``engine.state.output``.

        Args:
            engine: the engine whose output holds the decollated items.

        Raises:
            KeyError: when an item lacks the prediction or label key.
        """
        output = engine.state.output
        items = [output] if isinstance(output, Mapping) else list(output)
        for item in items:
            if not isinstance(item, Mapping) or self.pred_key not in item or self.label_key not in item:
                keys = sorted(item) if isinstance(item, Mapping) else type(item).__name__
                raise KeyError(
                    f"handlers/report.py: each output item needs keys {self.pred_key!r} and {self.label_key!r} "
                    f"(set decollate=True in the evaluator), got {keys}."
                )
            pred = to_label_map(item[self.pred_key], self.pred_key)
            label = to_label_map(item[self.label_key], self.label_key)
            self.rows.append(
                compute_case_metrics(
                    pred,
                    label,
                    self.num_classes,
                    self.protocol,
                    spacing=self._spacing(item),
                    case_id=self._case_id(item),
                    class_names=self.class_names,
                )
            )

    def completed(self, engine: Engine) -> None:
        """Gather rows over ranks, summarise, write the reports (rank 0) and print the table.

        Args:
            engine: the engine that finished.
        """
        rows = self.rows
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        self.rows = rows
        self.summary = summarize(rows, self.num_classes, self.protocol, self.class_names)
        engine.state.metrics["segmentation_report"] = self.summary
        if is_rank_zero():
            csv_path, _ = write_reports(rows, self.summary, self.output_dir, self.protocol)
            self.logger.info(f"segmentation report ({self.protocol.name}) written to {csv_path.parent}")
            if self.print_table:
                print(format_table(self.summary))

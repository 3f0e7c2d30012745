"""Writers for evaluation results: ``metrics.csv`` (one row per case) and ``metrics.json``, and a text table."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from custom_components.metrics.protocols import EvaluationProtocol, get_protocol

__all__ = ["write_reports", "format_table", "file_stem", "CSV_NAME", "JSON_NAME"]

CSV_NAME = "metrics.csv"
JSON_NAME = "metrics.json"
_DOUBLE_EXTENSIONS = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd", ".h5", ".npy", ".npz")


def file_stem(path: str | Path) -> str:
    """File name without folder and extension, aware of double extensions (``a/case_1.nii.gz`` -> ``case_1``).

    Args:
        path: a file path.
    """
    name = Path(str(path)).name
    for ext in _DOUBLE_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return None if math.isnan(x) else x
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return _jsonable(x.item())
    return x


def write_reports(
    per_case_rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    out_dir: str | Path,
    protocol: str | EvaluationProtocol,
) -> tuple[Path, Path]:
    """Write ``metrics.csv`` (one row per case) and ``metrics.json`` (protocol, per-case rows, summary).

    NaN values are written as ``nan`` in the CSV and ``null`` in the JSON. Every row and the summary must
    carry the same protocol name as ``protocol``.

    Args:
        per_case_rows: rows from ``compute_case_metrics``.
        summary: the result of ``summarize`` for these rows.
        out_dir: folder to write into (created if needed).
        protocol: protocol name or object the rows were computed with.

    Returns:
        the paths of ``metrics.csv`` and ``metrics.json``.

    Raises:
        ValueError: when a row or the summary carries another protocol than ``protocol``.
    """
    proto = get_protocol(protocol)
    names = {str(r.get("protocol")) for r in per_case_rows} | {str(summary.get("protocol"))}
    if names != {proto.name}:
        raise ValueError(
            f"metrics/reports.py: rows/summary carry protocol(s) {sorted(names)} but write_reports was given "
            f"{proto.name!r}."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for r in per_case_rows:
        fields += [k for k in r if k not in fields]
    csv_path, json_path = out / CSV_NAME, out / JSON_NAME
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        for r in per_case_rows:
            writer.writerow(dict(r))
    payload = {
        "protocol": proto.name,
        "protocol_definition": proto.to_dict(),
        "per_case": [dict(r) for r in per_case_rows],
        "summary": dict(summary),
    }
    with open(json_path, "w") as f:
        json.dump(_jsonable(payload), f, indent=2)
    return csv_path, json_path


def _fmt(stat: Mapping[str, Any], scale: float) -> str:
    mean, std = stat.get("mean"), stat.get("std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean * scale:.2f} ± {std * scale:.2f}"


def format_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of a summary: one line per class, Dice/Jaccard in %, distances in the summary's unit.

    Args:
        summary: the result of ``summarize``.
    """
    unit = summary.get("distance_unit") or "voxel"
    head = ["class", "Dice (%)", "Jaccard (%)", f"HD95 ({unit})", f"ASD ({unit})", "n"]
    lines = [head]
    for cls, stats in summary.get("metrics", {}).items():
        lines.append(
            [
                str(cls),
                _fmt(stats["dice"], 100.0),
                _fmt(stats["jaccard"], 100.0),
                _fmt(stats["hd95"], 1.0),
                _fmt(stats["asd"], 1.0),
                str(stats["dice"].get("n", "")),
            ]
        )
    for cls, pooled in (summary.get("pooled") or {}).items():
        d, j = pooled.get("dice"), pooled.get("jaccard")
        lines.append(
            [
                f"{cls} (pooled)",
                "n/a" if d is None or math.isnan(d) else f"{100 * d:.2f}",
                "n/a" if j is None or math.isnan(j) else f"{100 * j:.2f}",
                "",
                "",
                str(summary.get("num_cases", "")),
            ]
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    text = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    title = f"protocol: {summary.get('protocol')}  cases: {summary.get('num_cases')}"
    return "\n".join([title] + text)

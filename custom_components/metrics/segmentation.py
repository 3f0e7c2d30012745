"""Per-case Dice, Jaccard, HD95 and ASD of hard label maps, and their summaries, under a named protocol.

Surfaces and surface distances come from MONAI (``monai.metrics.utils.get_edge_surface_distance``): the
surface of a binary mask is the mask minus its binary erosion with a connectivity-1 structuring element
(voxels on the image border count as surface), and distances are exact Euclidean distances between surface
voxel centres, scaled by the spacing when the protocol measures in mm. This is also medpy's definition, so
the ``la_uamt`` protocol reproduces ``medpy.metric.binary.hd95`` / ``asd`` exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance
from monai.transforms import KeepLargestConnectedComponent

from custom_components.metrics.dice import dice_from_counts
from custom_components.metrics.protocols import EMPTY_CASES_DOC, EvaluationProtocol, get_protocol

__all__ = [
    "METRICS",
    "resolve_class_names",
    "largest_connected_component",
    "surface_distances",
    "compute_case_metrics",
    "summarize",
]

METRICS: tuple[str, ...] = ("dice", "jaccard", "hd95", "asd")


def _to_numpy(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"metrics/segmentation.py: {what} must be a numeric label map, got dtype {arr.dtype}.")
    return arr


def resolve_class_names(num_classes: int, class_names: Sequence[str] | Mapping[Any, str] | None = None) -> list[str]:
    """Names of all ``num_classes`` classes (index 0 = background), used in output column names.

    Args:
        num_classes: number of classes ``K`` including background (>= 2).
        class_names: ``K`` names (a list, or a mapping index -> name as in a datalist's ``labels`` key);
            ``None`` gives ``background, class1, class2, ...``.

    Raises:
        ValueError: for ``num_classes < 2`` or class names that do not match the classes.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"metrics/segmentation.py: num_classes must be an int >= 2, got {num_classes!r}.")
    if class_names is None:
        return ["background"] + [f"class{c}" for c in range(1, num_classes)]
    if isinstance(class_names, Mapping):
        try:
            by_index = {int(k): str(v) for k, v in class_names.items()}
        except (TypeError, ValueError) as e:
            raise ValueError(f"metrics/segmentation.py: class_names keys must be class indices: {e}.") from e
        if sorted(by_index) != list(range(num_classes)):
            raise ValueError(
                f"metrics/segmentation.py: class_names must name classes 0..{num_classes - 1}, got keys "
                f"{sorted(by_index)}."
            )
        names = [by_index[c] for c in range(num_classes)]
    else:
        names = [str(n) for n in class_names]
        if len(names) != num_classes:
            raise ValueError(
                f"metrics/segmentation.py: class_names has {len(names)} names but num_classes is {num_classes}."
            )
    if len(set(names)) != len(names) or any(not n for n in names) or "mean" in names[1:]:
        raise ValueError(
            f"metrics/segmentation.py: class_names must be unique, non-empty and not 'mean' (reserved for the "
            f"class average), got {names}."
        )
    return names


def largest_connected_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest connected component of a binary mask: MONAI's ``KeepLargestConnectedComponent`` with full
    connectivity (as skimage's default). Of several equally large components, the one MONAI ranks first is kept.

    Args:
        mask: binary array (2D or 3D); an empty mask is returned unchanged.
    """
    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        return mask
    keep = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False, connectivity=mask.ndim)
    return np.asarray(keep(mask[None].astype(np.uint8))[0]).astype(bool)


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``(pred -> ref, ref -> pred)`` of two non-empty binary masks.

    Args:
        pred: binary prediction mask (2D or 3D).
        ref: binary reference mask of the same shape.
        spacing: voxel spacing per axis, or ``None`` for voxel units.

    Raises:
        ValueError: when either mask is empty.
    """
    p = torch.as_tensor(np.asarray(pred, dtype=bool))
    r = torch.as_tensor(np.asarray(ref, dtype=bool))
    if not bool(p.any()) or not bool(r.any()):
        raise ValueError("metrics/segmentation.py: surface_distances needs two non-empty masks.")
    with warnings.catch_warnings():  # MONAI passes a deprecated argument to itself (always_return_as_numpy)
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        _, (d_pr, d_rp), _ = get_edge_surface_distance(
            p, r, distance_metric="euclidean", spacing=None if spacing is None else list(spacing), symmetric=True
        )
    return np.asarray(d_pr, dtype=np.float64), np.asarray(d_rp, dtype=np.float64)


def _resize_nearest(arr: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    if tuple(arr.shape) == tuple(size):
        return arr
    t = torch.as_tensor(arr.astype(np.float32))[None, None]
    out = torch.nn.functional.interpolate(t, size=size, mode="nearest-exact")
    return out[0, 0].numpy().astype(arr.dtype)


def _check_pair(
    pred: Any, label: Any, num_classes: int, resize: tuple[int, ...] | None, protocol: str, case_id: str
) -> tuple[np.ndarray, np.ndarray]:
    p = _to_numpy(pred, "pred")
    y = _to_numpy(label, "label")
    if resize is not None:
        for a in (p, y):
            if a.ndim != len(resize):
                raise ValueError(
                    f"metrics/segmentation.py: protocol {protocol!r} resizes to {resize} but the case "
                    f"{case_id!r} has shape {a.shape}."
                )
        p, y = _resize_nearest(p, resize), _resize_nearest(y, resize)
    if p.shape != y.shape:
        raise ValueError(
            f"metrics/segmentation.py: pred and label must have the same shape, got {p.shape} and {y.shape}."
        )
    if p.ndim not in (2, 3):
        raise ValueError(
            f"metrics/segmentation.py: expected 2D or 3D label maps without channel dimension, got shape {p.shape}."
        )
    for what, a in (("pred", p), ("label", y)):
        if a.size and (np.any(a != np.round(a)) or a.min() < 0 or a.max() >= num_classes):
            raise ValueError(
                f"metrics/segmentation.py: {what} must hold class indices in 0..{num_classes - 1}, found values "
                f"in [{a.min()}, {a.max()}] (a 0/255 mask must be converted to 0/1 first)."
            )
    return p.astype(np.int64), y.astype(np.int64)


def _format_spacing(spacing: Sequence[float] | None) -> str:
    return "" if spacing is None else "x".join(f"{float(s):g}" for s in spacing)


def compute_case_metrics(
    pred: Any,
    label: Any,
    num_classes: int,
    protocol: str | EvaluationProtocol = "clean",
    spacing: Sequence[float] | None = None,
    case_id: str = "case",
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
) -> dict[str, Any]:
    """Dice, Jaccard, HD95 and ASD of every foreground class of one case, as one output row.

    Row keys: ``case``, ``protocol``, ``distance_unit`` (``mm`` or ``voxel``), ``spacing`` (``"0.6x0.6x0.6"``
    or ``""``), then for every foreground class name ``n``: ``dice_n``, ``jaccard_n``, ``hd95_n``, ``asd_n``,
    the voxel counts ``inter_n``, ``pred_n``, ``ref_n`` (used for pooled Dice), and ``flags`` (``;``-joined
    ``n:empty_pred``, ``n:empty_ref``, ``n:empty_both``). With more than one foreground class, ``<metric>_mean``
    holds the NaN-ignoring mean over foreground classes.

    Args:
        pred: predicted hard label map (numpy or torch, shape ``(H, W)`` or ``(H, W, D)``, values 0..K-1).
        label: reference label map of the same shape (for protocols that resize, both are resized to the
            protocol's size with nearest-exact first, so the shapes may differ).
        num_classes: number of classes ``K`` including background.
        protocol: protocol name or object (see ``custom_components.metrics.protocols``).
        spacing: voxel spacing per spatial axis (used only by protocols measuring in mm).
        case_id: identifier written in the ``case`` column.
        class_names: ``K`` class names (list or index -> name mapping); default ``class1, class2, ...``.

    Raises:
        ValueError: for prediction / label maps of the wrong shape or values, or a bad ``spacing``.
    """
    proto = get_protocol(protocol)
    names = resolve_class_names(num_classes, class_names)
    p, y = _check_pair(pred, label, num_classes, proto.resize, proto.name, str(case_id))
    if spacing is not None:
        spacing = [float(s) for s in np.asarray(spacing, dtype=float).ravel()]
        if len(spacing) != p.ndim or min(spacing) <= 0:
            raise ValueError(
                f"metrics/segmentation.py: spacing must have {p.ndim} positive values for shape {p.shape}, "
                f"got {spacing}."
            )
    unit = proto.distance_unit(spacing)
    dist_spacing = spacing if unit == "mm" else None
    scale = np.asarray(dist_spacing if dist_spacing is not None else [1.0] * p.ndim)
    diagonal = float(np.sqrt(np.sum((np.asarray(p.shape) * scale) ** 2)))
    empty_value = diagonal if proto.empty_distance == "max" else float("nan")

    row: dict[str, Any] = {
        "case": str(case_id),
        "protocol": proto.name,
        "distance_unit": unit,
        "spacing": _format_spacing(spacing),
    }
    flags: list[str] = []
    for c in range(1, num_classes):
        n = names[c]
        pm, rm = p == c, y == c
        if proto.largest_cc:
            pm = largest_connected_component(pm)
        inter, n_pred, n_ref = int(np.sum(pm & rm)), int(pm.sum()), int(rm.sum())
        union = n_pred + n_ref - inter
        dice = dice_from_counts(inter, n_pred, n_ref, empty=float("nan"))  # empty_both: NaN, see EMPTY_CASES_DOC
        if n_pred == 0 and n_ref == 0:
            jac = hd95 = asd = float("nan")
            flags.append(f"{n}:empty_both")
        elif n_pred == 0 or n_ref == 0:
            jac = 0.0
            hd95 = asd = empty_value
            flags.append(f"{n}:empty_pred" if n_pred == 0 else f"{n}:empty_ref")
        else:
            jac = inter / union
            d_pr, d_rp = surface_distances(pm, rm, dist_spacing)
            if proto.hd95 == "pooled":
                hd95 = float(np.percentile(np.concatenate([d_pr, d_rp]), 95))
            else:
                hd95 = float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))
            both = np.concatenate([d_pr, d_rp])
            asd = float(np.mean(d_pr)) if proto.asd == "pred_to_ref" else float(np.mean(both))
        row.update({f"dice_{n}": dice, f"jaccard_{n}": jac, f"hd95_{n}": hd95, f"asd_{n}": asd})
        row.update({f"inter_{n}": inter, f"pred_{n}": n_pred, f"ref_{n}": n_ref})
    if num_classes > 2:
        for m in METRICS:
            vals = np.asarray([row[f"{m}_{names[c]}"] for c in range(1, num_classes)], dtype=float)
            row[f"{m}_mean"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    row["flags"] = ";".join(flags)
    return row


def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def summarize(
    rows: Sequence[Mapping[str, Any]],
    num_classes: int,
    protocol: str | EvaluationProtocol = "clean",
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
) -> dict[str, Any]:
    """Mean and std (population, NaN cases left out, ``n`` = cases counted) per metric per foreground class.

    Returns ``{"protocol", "num_cases", "distance_unit", "metrics": {class: {metric: {mean, std, n}}},
    "pooled": {class: {dice, jaccard}} (only for protocols with pooled=True), "empty_cases", "flagged_cases"}``.
    With more than one foreground class, ``metrics["mean"]`` summarises the per-case class means.

    Args:
        rows: per-case rows from ``compute_case_metrics`` (all under the same protocol).
        num_classes: number of classes ``K`` including background.
        protocol: protocol name or object the rows were computed with.
        class_names: the class names given to ``compute_case_metrics``.

    Raises:
        ValueError: when rows were computed under another protocol or lack the columns of the classes.
    """
    proto = get_protocol(protocol)
    names = resolve_class_names(num_classes, class_names)
    wrong = sorted({str(r.get("protocol")) for r in rows} - {proto.name})
    if wrong:
        raise ValueError(
            f"metrics/segmentation.py: rows were computed under protocol(s) {wrong}, not {proto.name!r}."
        )
    groups = names[1:] + (["mean"] if num_classes > 2 else [])
    metrics: dict[str, dict[str, Any]] = {}
    for g in groups:
        missing = [f"{m}_{g}" for m in METRICS if rows and f"{m}_{g}" not in rows[0]]
        if missing:
            raise ValueError(
                f"metrics/segmentation.py: rows lack the columns {missing}; check num_classes/class_names."
            )
        metrics[g] = {m: _stats([r[f"{m}_{g}"] for r in rows]) for m in METRICS}
    units = sorted({str(r.get("distance_unit")) for r in rows})
    summary: dict[str, Any] = {
        "protocol": proto.name,
        "num_cases": len(rows),
        "distance_unit": units[0] if len(units) == 1 else ("mixed: " + ",".join(units) if units else ""),
        "metrics": metrics,
    }
    if proto.pooled:
        pooled: dict[str, dict[str, float]] = {}
        for n in names[1:]:
            inter = sum(int(r[f"inter_{n}"]) for r in rows)
            n_pred, n_ref = sum(int(r[f"pred_{n}"]) for r in rows), sum(int(r[f"ref_{n}"]) for r in rows)
            size = n_pred + n_ref
            pooled[n] = {
                "dice": dice_from_counts(inter, n_pred, n_ref, empty=float("nan")),
                "jaccard": inter / (size - inter) if size else float("nan"),
            }
        summary["pooled"] = pooled
    summary["empty_cases"] = EMPTY_CASES_DOC
    summary["flagged_cases"] = {str(r["case"]): r["flags"] for r in rows if r.get("flags")}
    return summary


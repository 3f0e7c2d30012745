"""Figures: qualitative panels (image + coloured overlays), Dice vs labelled ratio, training curves.

All functions use matplotlib's Agg backend, write a PNG of exactly ``figsize * dpi`` pixels (no tight bounding
box) and return its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

__all__ = ["qualitative_panel", "plot_dice_vs_ratio", "plot_curves", "select_slice", "orthogonal_slices"]

_CLASS_COLORS = plt.get_cmap("tab10").colors


def _save_figure(fig: Any, out_png: str | Path, dpi: int) -> Path:
    """Write ``fig`` to ``out_png`` (parent folders created), close it and return the path."""
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _squeeze_label(x: Any, where: str) -> np.ndarray:
    a = _np(x)
    if a.ndim in (3, 4) and a.shape[0] == 1:
        a = a[0]
    if a.ndim not in (2, 3):
        raise ValueError(
            f"visualize.py: {where} must be a 2D or 3D map (optionally with one leading channel), got {a.shape}."
        )
    return a


def _image_channels_last(img: Any, spatial: tuple[int, ...], where: str) -> np.ndarray:
    a = _np(img).astype(np.float32)
    if a.shape == spatial:
        a = a[..., None]
    elif a.ndim == len(spatial) + 1 and a.shape[1:] == spatial:
        a = np.moveaxis(a, 0, -1)
    elif not (a.ndim == len(spatial) + 1 and a.shape[:-1] == spatial):
        raise ValueError(
            f"visualize.py: {where} has shape {a.shape}, which does not match the overlays' shape {spatial}."
        )
    if a.shape[-1] not in (1, 3):
        a = a[..., :1]  # several modalities: show the first
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def select_slice(maps: Sequence[np.ndarray], mode: str = "max_foreground") -> int:
    """Index of the axial (last-axis) slice to show for 3D maps.

    Args:
        maps: 3D label maps of the same shape, in order of preference; the first with foreground decides.
        mode: ``"max_foreground"`` (slice with most foreground, middle if none) or ``"middle"``.

    Raises:
        ValueError: for an unknown slice ``mode``.
    """
    if mode not in ("max_foreground", "middle"):
        raise ValueError(f"visualize.py: slice mode must be 'max_foreground' or 'middle', got {mode!r}.")
    depth = maps[0].shape[-1]
    if mode == "max_foreground":
        for m in maps:
            if m.dtype.kind in "iub" and (m > 0).any():
                return int(np.argmax((m > 0).reshape(-1, depth).sum(0)))
    return depth // 2


def orthogonal_slices(volume: Any, center: Sequence[int]) -> list[np.ndarray]:
    """The three orthogonal slices of a volume through ``center``: ``[v[:, :, z], v[:, y, :], v[x, :, :]]``.

    Args:
        volume: ``(H, W, D)`` or channel-first ``(C, H, W, D)`` array (the channel axis is kept first).
        center: the voxel ``(x, y, z)`` the slices go through.

    Raises:
        ValueError: for a volume that is not 3D or a centre outside it.
    """
    v = _np(volume)
    spatial = v.shape[-3:]
    if v.ndim not in (3, 4) or len(center) != 3 or any(not 0 <= int(c) < s for c, s in zip(center, spatial)):
        raise ValueError(f"visualize.py: orthogonal_slices needs a 3D volume and a centre inside it, got shape "
                         f"{v.shape} and centre {tuple(center)}.")
    x, y, z = (int(c) for c in center)
    return [v[..., :, :, z], v[..., :, y, :], v[..., x, :, :]]


def _is_label_map(a: np.ndarray) -> bool:
    return a.dtype.kind in "iub" or bool(np.all(a == np.round(a)))


def qualitative_panel(
    images: Sequence[Any],
    columns: Mapping[str, Sequence[Any]],
    out_png: str | Path,
    titles: Sequence[str] | None = None,
    mode: str = "contour",
    slice_mode: str = "max_foreground",
    slice_reference: str | None = None,
    alpha: float = 0.45,
    cell_size: float = 2.5,
    dpi: int = 100,
) -> Path:
    """One row per case: the image, then one column per overlay (pseudo-label, prediction, target, ...).

    Label maps (integer values) are drawn per class in tab10 colours as contours or alpha masks; float maps
    with non-integer values (uncertainty, probabilities) as a heat map over the image. 3D cases show one axial
    (last-axis) slice, the same for every column of a row.

    Args:
        images: one image per case: 2D ``(H, W)``, ``(C, H, W)``, ``(H, W, C)`` or 3D ``(H, W, D)``,
            ``(C, H, W, D)``; shown in grey (1 channel) or RGB (3 channels), min-max scaled.
        columns: overlay name -> one map per case (same spatial shape as the image, optional leading channel 1).
        out_png: output file.
        titles: one title per row (e.g. case ids), written on the image column.
        mode: ``"contour"`` or ``"mask"`` (alpha-blended filled classes).
        slice_mode: 3D slice choice: ``"max_foreground"`` or ``"middle"``.
        slice_reference: overlay column that decides the 3D slice (default ``"target"`` if present, else the first).
        alpha: opacity of masks and heat maps.
        cell_size: size of one panel cell in inches.
        dpi: resolution; the PNG is ``(1 + len(columns)) * cell_size * dpi`` by ``len(images) * cell_size * dpi``.

    Returns:
        the path of the written PNG.

    Raises:
        ValueError: for no images, an unknown ``mode``, or columns, titles and slice reference that do not match
            the images.
    """
    n = len(images)
    if n == 0:
        raise ValueError("visualize.py: qualitative_panel needs at least one image.")
    if mode not in ("contour", "mask"):
        raise ValueError(f"visualize.py: mode must be 'contour' or 'mask', got {mode!r}.")
    for name, maps in columns.items():
        if len(maps) != n:
            raise ValueError(f"visualize.py: column {name!r} has {len(maps)} maps for {n} images.")
    if titles is not None and len(titles) != n:
        raise ValueError(f"visualize.py: {len(titles)} titles for {n} images.")
    names = list(columns)
    ref_name = slice_reference or ("target" if "target" in columns else (names[0] if names else None))
    if ref_name is not None and ref_name not in columns:
        raise ValueError(f"visualize.py: slice_reference {ref_name!r} is not one of the columns {names}.")

    ncols = 1 + len(names)
    fig, axes = plt.subplots(n, ncols, figsize=(ncols * cell_size, n * cell_size), dpi=dpi, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93 if n == 1 else 0.96, wspace=0.03, hspace=0.12)
    for r in range(n):
        maps = {k: _squeeze_label(columns[k][r], f"column {k!r}, row {r}") for k in names}
        spatial = next(iter(maps.values())).shape if maps else None
        if spatial is None:
            a = _np(images[r])
            spatial = a.shape if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] not in (1, 3)) else a.shape[:-1]
        for k, m in maps.items():
            if m.shape != spatial:
                raise ValueError(f"visualize.py: column {k!r}, row {r} has shape {m.shape}, expected {spatial}.")
        img = _image_channels_last(images[r], tuple(spatial), f"image {r}")
        if len(spatial) == 3:
            order = ([maps[ref_name]] if ref_name else []) + list(maps.values())
            z = select_slice(order, slice_mode) if order else spatial[-1] // 2
            img = img[:, :, z]
            maps = {k: m[..., z] for k, m in maps.items()}
        shown = img[..., 0] if img.shape[-1] == 1 else img
        for c in range(ncols):
            ax = axes[r, c]
            ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                if r == 0:
                    ax.set_title("image", fontsize=9)
                if titles is not None:
                    ax.set_ylabel(str(titles[r]), fontsize=8)
                continue
            name = names[c - 1]
            m = maps[name]
            if r == 0:
                ax.set_title(name, fontsize=9)
            if not _is_label_map(m):
                ax.imshow(m.astype(np.float32), cmap="magma", alpha=alpha, interpolation="nearest")
                continue
            m = m.astype(np.int64)
            for k in range(1, int(m.max()) + 1 if m.size else 1):
                color = _CLASS_COLORS[(k - 1) % len(_CLASS_COLORS)]
                if not (m == k).any():
                    continue
                if mode == "contour":
                    ax.contour((m == k).astype(float), levels=[0.5], colors=[color], linewidths=1.0)
                else:
                    ax.imshow(np.ma.masked_where(m != k, m), cmap=ListedColormap([color]), alpha=alpha,
                              interpolation="nearest")
    return _save_figure(fig, out_png, dpi)


def _mean_std(v: Any) -> tuple[float, float]:
    if isinstance(v, Mapping):
        return float(v["mean"]), float(v.get("std", 0.0) or 0.0)
    a = np.atleast_1d(np.asarray(v, dtype=float))
    a = a[~np.isnan(a)]
    return (float(a.mean()), float(a.std())) if a.size else (float("nan"), float("nan"))


def plot_dice_vs_ratio(
    results: Mapping[str, Mapping[float, Any]] | Sequence[Mapping[str, Any]],
    out_png: str | Path,
    upper_bound: float | Mapping[str, float] | None = None,
    metric: str = "dice",
    xlabel: str = "labelled ratio (%)",
    ylabel: str = "Dice (%)",
    title: str | None = None,
    log_x: bool = True,
    figsize: tuple[float, float] = (6.0, 4.0),
    dpi: int = 100,
) -> Path:
    """Dice mean ± std against the labelled ratio, one line per method, optional fully supervised line(s).

    Args:
        results: either ``{method: {ratio: values}}`` where values is a list of per-seed scores, one score, or
            ``{"mean", "std"}``; or a list of rows ``{"method", "ratio", metric}`` (one per run, seeds pooled).
        out_png: output file.
        upper_bound: a score drawn as a dashed horizontal line (``"fully supervised"``), or name -> score.
        metric: the row key holding the score when ``results`` is a list of rows.
        xlabel: x axis label.
        ylabel: y axis label.
        title: figure title.
        log_x: logarithmic ratio axis (ratios such as 1, 2, 5, 10, 20).
        figsize: figure size in inches.
        dpi: resolution; the PNG is ``figsize * dpi`` pixels.

    Returns:
        the path of the written PNG.

    Raises:
        ValueError: for no method or a results row without the needed keys.
    """
    if not isinstance(results, Mapping):
        grouped: dict[str, dict[float, list[float]]] = {}
        for i, row in enumerate(results):
            missing = [k for k in ("method", "ratio", metric) if k not in row]
            if missing:
                raise ValueError(f"visualize.py: results row {i} lacks {missing}.")
            grouped.setdefault(str(row["method"]), {}).setdefault(float(row["ratio"]), []).append(float(row[metric]))
        results = grouped
    if not results:
        raise ValueError("visualize.py: plot_dice_vs_ratio needs at least one method.")
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    for method, by_ratio in results.items():
        ratios = sorted(float(r) for r in by_ratio)
        lookup = {float(k): v for k, v in by_ratio.items()}
        stats = np.asarray([_mean_std(lookup[r]) for r in ratios])
        ax.errorbar(ratios, stats[:, 0], yerr=stats[:, 1], marker="o", capsize=3, label=str(method))
    bounds = {"fully supervised": upper_bound} if isinstance(upper_bound, (int, float)) else dict(upper_bound or {})
    for i, (name, value) in enumerate(bounds.items()):
        ax.axhline(float(value), linestyle="--", color=f"C{(len(results) + i) % 10}", label=str(name))
    if log_x:
        ax.set_xscale("log")
        ticks = sorted({float(r) for by in results.values() for r in by})
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, out_png, dpi)


def plot_dice_vs_time(
    points: Sequence[Mapping[str, Any]],
    out_png: str | Path,
    title: str | None = None,
    figsize: tuple[float, float] = (8.0, 4.5),
    dpi: int = 100,
) -> Path:
    """Test Dice against training wall time, one point per method and labelled ratio (x on a log scale).

    Args:
        points: rows ``{"method", "ratio", "time_s", "dice", "dice_std"}`` (Dice in %; ``dice_std``, the error bar,
            may be 0); one colour per method, one marker per ratio.
        out_png: output file.
        title: figure title.
        figsize: figure size in inches.
        dpi: resolution.

    Returns:
        the path of the written PNG.

    Raises:
        ValueError: without a point, or for a point with a non-positive time.
    """
    if not points:
        raise ValueError("visualize.py: plot_dice_vs_time needs at least one point.")
    bad = [p for p in points if not float(p["time_s"]) > 0]
    if bad:
        raise ValueError(f"visualize.py: plot_dice_vs_time needs positive times, got {bad[0]}.")
    methods = list(dict.fromkeys(str(p["method"]) for p in points))
    ratios = sorted({float(p["ratio"]) for p in points})
    markers = "os^DvP*X"
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    for p in points:
        m, r = str(p["method"]), float(p["ratio"])
        ax.errorbar(float(p["time_s"]), float(p["dice"]), yerr=float(p.get("dice_std") or 0.0), capsize=3,
                    color=f"C{methods.index(m) % 10}", marker=markers[ratios.index(r) % len(markers)], linestyle="")
    for i, m in enumerate(methods):
        ax.plot([], [], color=f"C{i % 10}", marker="o", linestyle="", label=m)
    for j, r in enumerate(ratios):
        ax.plot([], [], color="black", marker=markers[j % len(markers)], linestyle="", label=f"{100 * r:g} % labelled")
    ax.set_xscale("log")
    ax.set_xlabel("training wall time per run (s, log scale)")
    ax.set_ylabel("test Dice (%)")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return _save_figure(fig, out_png, dpi)


def plot_curves(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
    out_png: str | Path,
    keys: Sequence[str] | None = None,
    title: str | None = None,
    log_y: bool = False,
    xlabel: str = "epoch",
    figsize: tuple[float, float] = (6.0, 4.0),
    dpi: int = 100,
) -> Path:
    """Loss (or any metric) curves over epochs, one line per series.

    Args:
        history: ``{name: [value per epoch]}`` or a list of per-epoch dicts ``[{"loss": .., "loss_cps": ..}, ...]``
            (a key missing in an epoch leaves a gap).
        out_png: output file.
        keys: series to draw (default all, in order of appearance).
        title: figure title.
        log_y: logarithmic y axis.
        xlabel: x axis label.
        figsize: figure size in inches.
        dpi: resolution; the PNG is ``figsize * dpi`` pixels.

    Returns:
        the path of the written PNG.

    Raises:
        ValueError: for no non-empty series or keys missing from the history.
    """
    if isinstance(history, Mapping):
        series = {str(k): [float(v) for v in vals] for k, vals in history.items()}
    else:
        names: list[str] = []
        for epoch in history:
            names += [str(k) for k in epoch if str(k) not in names]
        series = {k: [float(e[k]) if k in e else float("nan") for e in history] for k in names}
    if keys is not None:
        unknown = [k for k in keys if k not in series]
        if unknown:
            raise ValueError(f"visualize.py: keys {unknown} are not in the history {sorted(series)}.")
        series = {k: series[k] for k in keys}
    if not series or not any(len(v) for v in series.values()):
        raise ValueError("visualize.py: plot_curves needs at least one non-empty series.")
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    for name, vals in series.items():
        ax.plot(np.arange(1, len(vals) + 1), vals, label=name)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, out_png, dpi)

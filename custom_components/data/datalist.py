"""Loading and validation of decathlon-style datalists (``labeled`` / ``unlabeled`` / ``validation`` / ``test``).

``validate_datalist`` reads every image and label with MONAI's ``LoadImage`` (``PILReader`` for PNG/BMP/TIFF/JPEG,
``NibabelReader`` for NIfTI, ``ITKReader`` for NRRD/MHA) and raises ``DatalistError`` naming the offending file.

Command line::

    python -m custom_components.data.datalist /work/data/ph2/splits/datalist_r0.1_s0.json --num-classes 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from custom_components.errors import UserError

__all__ = [
    "DatalistError", "load_datalist", "validate_datalist", "folder_entries", "validate_inference_input", "LIST_KEYS",
    "reader_for", "main", "affine_mismatch", "count_nonfinite",
]

LIST_KEYS = ("labeled", "unlabeled", "validation", "test", "cases")
_SPLIT_KEYS = ("labeled", "unlabeled", "validation", "test")
_LABELLED_KEYS = ("labeled", "validation", "test", "cases")


class DatalistError(UserError, ValueError):
    """A datalist or one of the files it lists is invalid; the message names the file and the problem."""


#: extensions read through ITK (3D formats other than NIfTI)
ITK_EXTENSIONS = (".nrrd", ".nhdr", ".mha", ".mhd")


def reader_for(path: str | os.PathLike) -> Any:
    """MONAI image reader for a file, chosen by extension.

    Args:
        path: image or label file.

    Returns:
        a ``PILReader`` (PNG/BMP/TIFF/JPEG), ``NibabelReader`` (NIfTI) or ``ITKReader`` (other formats) instance.
    """
    from monai.data import ITKReader, NibabelReader, PILReader

    name = str(path).lower()
    if name.endswith((".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")):
        return PILReader()
    if name.endswith((".nii", ".nii.gz")):
        return NibabelReader()
    if name.endswith(ITK_EXTENSIONS):
        return ITKReader()
    raise DatalistError(
        f"{path}: unsupported file extension; expected one of PNG/BMP/TIFF/JPEG (2D), NIfTI (.nii, .nii.gz) or "
        f"{', '.join(ITK_EXTENSIONS)}."
    )


def load_datalist(path: str | os.PathLike, resolve: bool = True) -> dict[str, Any]:
    """Read a datalist JSON.

    Args:
        path: datalist file.
        resolve: make the ``image`` / ``label`` paths of every list (``labeled``, ``unlabeled``, ``validation``,
            ``test``, ``cases``) absolute, relative to the datalist's folder (as ``load_decathlon_datalist`` does).

    Returns:
        the datalist dict (metadata keys untouched).

    Raises:
        DatalistError: the file is missing, is not valid JSON, is not an object, or a list entry is malformed.
    """
    p = Path(path)
    if not p.is_file():
        raise DatalistError(f"{p}: datalist file not found.")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatalistError(f"{p}: malformed JSON ({e}).") from e
    if not isinstance(data, dict):
        raise DatalistError(f"{p}: malformed datalist, top level must be an object, got {type(data).__name__}.")
    base = p.parent.resolve()
    for key in LIST_KEYS:
        if key not in data:
            continue
        if not isinstance(data[key], list):
            raise DatalistError(f"{p}: malformed datalist, '{key}' must be a list.")
        for i, e in enumerate(data[key]):
            if not isinstance(e, dict) or not isinstance(e.get("image"), str):
                raise DatalistError(f"{p}: malformed entry {key}[{i}]: needs an 'image' path string, got {e!r}.")
            if resolve:
                for k in ("image", "label"):
                    if isinstance(e.get(k), str):
                        e[k] = os.path.normpath(os.path.join(base, e[k]))
    return data


def _load(file: str, where: str) -> tuple[np.ndarray, dict]:
    from monai.transforms import LoadImage

    if not os.path.isfile(file):
        raise DatalistError(f"{file}: missing file ({where}).")
    reader = reader_for(file)
    try:
        img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(file)
    except Exception as e:  # any reader failure: unreadable or truncated
        raise DatalistError(f"{file}: unreadable or truncated file ({where}): {type(e).__name__}: {e}") from e
    return np.asarray(img), dict(getattr(img, "meta", {}))


def count_nonfinite(array: Any) -> int:
    """Number of NaN / infinite values of an array (0 for integer arrays).

    Args:
        array: numpy array or tensor.
    """
    a = np.asarray(array)
    return 0 if not np.issubdtype(a.dtype, np.floating) else int(a.size - np.count_nonzero(np.isfinite(a)))


def _fmt(values: Any) -> tuple[float, ...]:
    return tuple(round(float(v), 4) for v in np.asarray(values).reshape(-1))


def affine_mismatch(a: Any, b: Any, ndim: int) -> str | None:
    """How two voxel-to-world affines differ (spacing, direction or origin), or None when they match.

    Tolerances: spacing relative 1e-3 (absolute 1e-4), direction cosines 1e-3, origin 1e-3 mm plus 1 % of the
    smallest voxel.

    Args:
        a: first ``(ndim+1, ndim+1)`` (or larger) affine, e.g. the image's.
        b: second affine, e.g. the mask's.
        ndim: spatial dimensions.
    """
    a, b = np.asarray(a, float)[: ndim + 1, : ndim + 1], np.asarray(b, float)[: ndim + 1, : ndim + 1]
    sa, sb = np.linalg.norm(a[:ndim, :ndim], axis=0), np.linalg.norm(b[:ndim, :ndim], axis=0)
    if not np.allclose(sa, sb, rtol=1e-3, atol=1e-4):
        return f"spacing mismatch, label {_fmt(sb)} vs image {_fmt(sa)}"
    da, db = a[:ndim, :ndim] / np.maximum(sa, 1e-12), b[:ndim, :ndim] / np.maximum(sb, 1e-12)
    if not np.allclose(da, db, atol=1e-3):
        return (f"direction mismatch (axes flipped, swapped or rotated), label direction {_fmt(db)} vs image "
                f"{_fmt(da)}")
    tol = 1e-3 + 0.01 * float(min(sa.min(), sb.min()))
    if not np.allclose(a[:ndim, ndim], b[:ndim, ndim], atol=tol):
        return f"origin mismatch, label origin {_fmt(b[:ndim, ndim])} vs image {_fmt(a[:ndim, ndim])} (mm)"
    return None


def _check_image(
    file: str, where: str, spatial_dims: int | None, in_channels: int | None, meta: dict | None = None,
    trained: bool = False,
) -> tuple[np.ndarray, dict]:
    """Load one image and check its spatial dimensions and channel count (``DatalistError`` naming the file).

    ``meta`` (the datalist's top-level keys) turns a mismatch with the datalist's recorded ``spatial_dims`` /
    ``in_channels`` into a hint naming the bundle override to pass. ``trained``: the images go to a trained
    network, whose input channels are fixed, so a mismatch asks to convert the image.
    """
    img, img_meta = _load(file, where)
    bad = count_nonfinite(img)
    if bad:
        raise DatalistError(f"{file}: {bad} non-finite voxel(s) (NaN or Inf) ({where}); fix the image, or prepare it "
                            "with scripts/prepare_folder.py --replace-nonfinite.")
    c, sp = img.shape[0], tuple(img.shape[1:])
    recorded = meta or {}
    if spatial_dims is not None and len(sp) != spatial_dims:
        hint = ""
        if recorded.get("spatial_dims") == len(sp):
            hint = f" The datalist records spatial_dims={len(sp)}: " + (
                "stack configs/profile_3d.json after the bundle's config." if len(sp) == 3
                else "run the 2D config without configs/profile_3d.json.")
        raise DatalistError(
            f"{file}: {len(sp)}D image where {spatial_dims}D is expected (shape {tuple(img.shape)}, {where}).{hint}"
        )
    if in_channels is not None and c != in_channels:
        if trained:
            kind = {1: "greyscale", 3: "RGB"}.get(in_channels, f"{in_channels}-channel")
            raise DatalistError(
                f"{file}: wrong channel count, {c} channel(s) where {in_channels} expected ({where}); the trained "
                f"network takes {kind} images: convert this image to {in_channels} channel(s) (e.g. PIL "
                f"Image.convert('{'L' if in_channels == 1 else 'RGB'}')); --in_channels must stay {in_channels}, "
                "the checkpoint's.")
        if recorded.get("in_channels") is not None and int(recorded["in_channels"]) == c:
            hint = f"the datalist records in_channels={c}: pass --in_channels {c} to the bundle"
        else:
            hint = f"pass --in_channels {c} if these images are the right ones"
        raise DatalistError(f"{file}: wrong channel count, {c} channel(s) where {in_channels} expected ({where}); "
                            f"{hint}.")
    return img, img_meta


def folder_entries(input_dir: str | os.PathLike, image_ext: str) -> list[dict[str, str]]:
    """Inference entries ``{"image": path}`` for the files ``*<image_ext>`` of a folder, sorted by name.

    Args:
        input_dir: folder of images.
        image_ext: file extension, e.g. ``.png`` or ``.nii.gz``.

    Raises:
        DatalistError: the folder does not exist, or holds no ``*<image_ext>`` file (naming the other supported
            files it holds and the ``image_ext`` override).
    """
    d = Path(input_dir)
    if not d.is_dir():
        raise DatalistError(f"{d}: input_dir does not exist or is not a folder.")
    files = sorted(str(f) for f in d.iterdir() if f.is_file() and f.name.lower().endswith(image_ext.lower()))
    if not files:
        others = sorted({"".join(f.suffixes[-2:]) if f.name.lower().endswith(".nii.gz") else f.suffix
                         for f in d.iterdir() if f.is_file() and f.suffix})
        hint = f"; it holds {', '.join(others)} files: pass --image_ext {others[0]}" if others else ""
        raise DatalistError(f"{d}: input_dir holds no '*{image_ext}' image file (image_ext='{image_ext}'){hint}.")
    for f in files:
        reader_for(f)  # unsupported extension -> DatalistError naming the file
    return [{"image": f} for f in files]


def validate_inference_input(
    input_dir: str | os.PathLike | None,
    image_ext: str,
    datalist: str | os.PathLike,
    infer_key: str,
    spatial_dims: int | None,
    in_channels: int | None,
) -> None:
    """Check what an ``inference.json`` will read before anything is written (``DatalistError`` naming the file).

    With ``input_dir``: the folder holds ``*<image_ext>`` files and every one loads with ``spatial_dims`` axes and
    ``in_channels`` channels. Without: ``validate_datalist(datalist, require_keys=[infer_key])``.

    Args:
        input_dir: folder of images, or None / "" to read ``datalist``.
        image_ext: extension of the folder's images.
        datalist: datalist file.
        infer_key: list of the datalist to read.
        spatial_dims: expected spatial dimensions.
        in_channels: expected image channels.
    """
    if not input_dir:
        if not Path(datalist).is_file():
            folder = Path(datalist).parent
            raise DatalistError(f"{datalist}: datalist file not found. To predict on a folder of images, pass "
                                f"--input_dir {folder} --output_dir OUT instead of --dataset_dir.")
        validate_datalist(datalist, num_classes=None, spatial_dims=spatial_dims, in_channels=in_channels,
                          require_keys=[infer_key], allow_empty_classes=True, trained=True)  # labels unused here
        return
    for e in folder_entries(input_dir, image_ext):
        _check_image(e["image"], f"input_dir {input_dir}", spatial_dims, in_channels, trained=True)


def _spacing(meta: dict, ndim: int) -> np.ndarray | None:
    """Voxel spacing from a MetaTensor's ``pixdim`` (NIfTI/ITK); ``None`` for 2D formats that carry none."""
    pixdim = meta.get("pixdim")
    if pixdim is None or ndim < 3:
        return None
    return np.asarray(pixdim, dtype=float).reshape(-1)[1 : 1 + ndim]


def validate_datalist(
    path: str | os.PathLike,
    num_classes: int | None,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    check_files: bool = True,
    require_keys: Sequence[str] = ("labeled",),
    allow_empty_classes: bool = False,
    trained: bool = False,
) -> dict[str, Any]:
    """Validate a datalist and, optionally, every file it lists.

    Checks: JSON well-formed; each key of ``require_keys`` present and non-empty (an empty labelled set is an
    error); labelled lists have ``label`` entries and ``unlabeled`` has none; no image appears twice (in one list
    or in two splits); with ``check_files``: every file exists and loads, images have ``in_channels`` channels and
    ``spatial_dims`` spatial axes and only finite values, labels have one channel, the image's spatial shape and
    (3D) its affine (spacing, direction, origin), values in ``[0, num_classes)`` (a stray value is named with its
    pixel count), and every foreground class has at least one voxel over all labels read.

    Args:
        path: datalist file.
        num_classes: number of classes (labels must lie in ``[0, num_classes)``); None takes the datalist's
            ``num_classes`` key (value checks are skipped when neither exists).
        spatial_dims: expected number of spatial axes (2 or 3); None accepts either (or the datalist's key).
        in_channels: expected image channels; None takes the datalist's ``in_channels`` key if any.
        check_files: load every image and label (otherwise only the JSON structure is checked).
        require_keys: list keys that must be present and non-empty.
        allow_empty_classes: a foreground class without any voxel over all labels read (e.g. every mask empty) is
            a warning (``stats["warnings"]``) instead of an error.
        trained: the images go to a trained network (inference): a wrong channel count asks to convert the image.

    Returns:
        statistics: ``counts`` per list, ``image_shapes`` (min and max spatial shape), ``channels``,
        ``class_fractions`` (voxel fraction per class over all labels read), ``num_files``.

    Raises:
        DatalistError: with a message naming the offending file (the datalist or an image/label) and the problem.
    """
    p = Path(path)
    data = load_datalist(p, resolve=True)
    num_classes = num_classes if num_classes is not None else data.get("num_classes")
    spatial_dims = spatial_dims if spatial_dims is not None else data.get("spatial_dims")
    in_channels = in_channels if in_channels is not None else data.get("in_channels")
    for key in require_keys:
        if key not in data and key in _SPLIT_KEYS and "cases" in data:
            raise DatalistError(
                f"{p}: this is a prepared dataset datalist (all cases under 'cases'), not a split: run "
                f"'python scripts/make_split.py {p} --ratio 1.0' and pass the file it writes (under "
                f"{p.parent / 'splits'}) as the datalist."
            )
        if key not in data:
            raise DatalistError(f"{p}: required list '{key}' is missing.")
        if not data[key]:
            what = "empty labelled set" if key == "labeled" else f"empty list '{key}'"
            raise DatalistError(f"{p}: {what} ('{key}' has no entries).")
    lists = {k: data[k] for k in LIST_KEYS if k in data}
    if not lists:
        raise DatalistError(f"{p}: no list found (expected one of {list(LIST_KEYS)}).")
    if any(k in lists for k in ("labeled", "validation", "test")):
        lists.pop("cases", None)  # a split datalist: 'cases' (if kept) legitimately repeats the split entries

    seen: dict[str, str] = {}
    for key, entries in lists.items():
        for i, e in enumerate(entries):
            where = f"{key}[{i}]"
            if key in _LABELLED_KEYS and not isinstance(e.get("label"), str):
                raise DatalistError(f"{e['image']}: entry {where} of {p} has no 'label'.")
            if key == "unlabeled" and "label" in e:
                raise DatalistError(f"{e['image']}: unlabelled entry {where} of {p} has a 'label' key.")
            img = os.path.normpath(e["image"])
            if img in seen:
                raise DatalistError(f"{e['image']}: the same image appears twice in {p}: {seen[img]} and {where}.")
            seen[img] = where

    stats: dict[str, Any] = {"counts": {k: len(v) for k, v in lists.items()}, "num_files": 0}
    if not check_files:
        return stats
    shapes: list[tuple[int, ...]] = []
    channels: set[int] = set()
    class_counts = np.zeros(max(int(num_classes or 0), 1), np.int64)
    labelled_files = 0
    for key, entries in lists.items():
        for i, e in enumerate(entries):
            where = f"{p}, {key}[{i}]"
            img, img_meta = _check_image(e["image"], where, spatial_dims, in_channels, data, trained=trained)
            stats["num_files"] += 1
            c, sp = img.shape[0], tuple(img.shape[1:])
            channels.add(c)
            shapes.append(sp)
            if "label" not in e:
                continue
            lab, lab_meta = _load(e["label"], where)
            stats["num_files"] += 1
            if lab.shape[0] != 1:
                raise DatalistError(f"{e['label']}: label must have one channel, got {lab.shape[0]} ({where}).")
            if tuple(lab.shape[1:]) != sp:
                raise DatalistError(
                    f"{e['label']}: image/label shape mismatch, label {tuple(lab.shape[1:])} vs image {sp} "
                    f"({e['image']}, {where})."
                )
            if count_nonfinite(lab):
                raise DatalistError(f"{e['label']}: {count_nonfinite(lab)} non-finite value(s) (NaN or Inf) in the "
                                    f"label ({where}).")
            diff = None
            if len(sp) >= 3 and img_meta.get("affine") is not None and lab_meta.get("affine") is not None:
                diff = affine_mismatch(img_meta["affine"], lab_meta["affine"], len(sp))
            elif (sp_img := _spacing(img_meta, len(sp))) is not None and (sp_lab := _spacing(lab_meta, len(sp))) \
                    is not None and not np.allclose(sp_img, sp_lab, rtol=1e-3, atol=1e-4):
                diff = f"spacing mismatch, label {_fmt(sp_lab)} vs image {_fmt(sp_img)}"
            if diff:
                raise DatalistError(f"{e['label']}: image/label {diff} ({e['image']}, {where}); the label would be "
                                    "paired voxel by voxel with another part of the image.")
            if num_classes is not None:
                vals = np.unique(lab)
                bad = vals[(vals < 0) | (vals >= num_classes) | (vals != np.round(vals))]
                if bad.size:
                    found = ", ".join(f"{int(v) if v == int(v) else float(v)} ({int((lab == v).sum())} pixel(s))"
                                      for v in bad[:5])
                    raise DatalistError(
                        f"{e['label']}: label values {found} outside [0, {num_classes}) ({where}); the declared "
                        f"label set is 0..{num_classes - 1} (num_classes)."
                    )
                labelled_files += 1
                class_counts += np.bincount(lab.astype(np.int64).ravel(), minlength=num_classes)[:num_classes]
    if shapes:
        arr = np.array([s for s in shapes if len(s) == len(shapes[0])])
        stats["image_shapes"] = {"min": arr.min(0).tolist(), "max": arr.max(0).tolist()}
    stats["channels"] = sorted(channels)
    if num_classes is not None and labelled_files:
        empty = [c for c in range(1, int(num_classes)) if class_counts[c] == 0]
        if empty:
            what = ("every label is empty (background only)" if len(empty) == num_classes - 1
                    else f"class(es) {empty} of 0..{num_classes - 1} have no voxel")
            msg = (f"{p}: {what} over the {labelled_files} labelled file(s) it lists; check the masks or "
                   "num_classes (--num-classes).")
            if not allow_empty_classes:
                raise DatalistError(msg + " Pass allow_empty_classes (--allow-empty-classes) to accept this.")
            warnings.warn(msg, stacklevel=2)
            stats["warnings"] = [msg]
    if num_classes is not None and class_counts.sum():
        stats["class_fractions"] = (class_counts / class_counts.sum()).round(4).tolist()
    return stats


def _format(stats: dict[str, Any]) -> str:
    lines = ["counts: " + ", ".join(f"{k} {v}" for k, v in stats["counts"].items())]
    if "image_shapes" in stats:
        lines.append(f"spatial shape: min {stats['image_shapes']['min']}, max {stats['image_shapes']['max']}")
    if "channels" in stats:
        lines.append(f"channels: {stats['channels']}")
    if "class_fractions" in stats:
        lines.append("class fractions: " + ", ".join(f"{c}: {f:.4f}" for c, f in enumerate(stats["class_fractions"])))
    lines.append(f"files read: {stats['num_files']}")
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m custom_components.data.datalist DATALIST --num-classes K``: validate and print statistics.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0 when valid, 1 when a ``DatalistError`` was raised (its message is printed to stderr).
    """
    ap = argparse.ArgumentParser(description="Validate a datalist and print statistics.")
    ap.add_argument("datalist")
    ap.add_argument("--num-classes", type=int, default=None, help="default: the datalist's num_classes key")
    ap.add_argument("--spatial-dims", type=int, default=None, choices=(2, 3))
    ap.add_argument("--in-channels", type=int, default=None)
    ap.add_argument("--no-files", action="store_true", help="check the JSON structure only")
    ap.add_argument("--allow-empty-classes", action="store_true",
                    help="a class without any voxel over all labels (or all-empty labels) is a warning, not an error")
    ap.add_argument("--require", nargs="*", default=None,
                    help="lists that must be non-empty (default: labeled, or cases for a dataset datalist)")
    a = ap.parse_args(None if argv is None else list(argv))
    require = a.require
    if require is None:
        try:
            raw = json.loads(Path(a.datalist).read_text())
            require = (["labeled"] if not (isinstance(raw, dict) and "cases" in raw and "labeled" not in raw)
                       else ["cases"])
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            require = ["labeled"]
    try:
        stats = validate_datalist(a.datalist, a.num_classes, a.spatial_dims, a.in_channels, not a.no_files, require,
                                  allow_empty_classes=a.allow_empty_classes)
    except DatalistError as e:
        print(f"INVALID: {e}", file=sys.stderr)
        return 1
    print(f"OK: {a.datalist}")
    print(_format(stats))
    for w in stats.get("warnings", []):
        print(f"WARNING: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

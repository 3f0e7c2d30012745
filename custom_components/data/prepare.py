"""Shared helpers of the dataset preparation scripts (``scripts/prepare_*.py``).

Readers for the raw formats (BMP incl. 1-bit, PNG, TIFF, JPEG via Pillow; NIfTI via nibabel; NRRD/MHA via
SimpleITK; HDF5 via h5py), writers for the project's on-disk format (2D PNG + uint8 class-index PNG, 3D NIfTI
float32 + uint8 NIfTI), resizing, statistics and the dataset ``datalist.json``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from custom_components.errors import UserError

__all__ = [
    "PreparationError",
    "IMAGE_2D_EXTS",
    "VOLUME_EXTS",
    "strip_ext",
    "require_dir",
    "read_image_2d",
    "read_mask_2d",
    "read_volume",
    "resize_image_2d",
    "resize_pair_2d",
    "save_png",
    "save_png_pair",
    "save_nifti_image",
    "save_nifti_pair",
    "check_same_shape",
    "dataset_stats",
    "format_stats",
    "write_dataset_datalist",
    "parse_label_map",
    "prepare_folder",
    "finite_or_error",
    "clear_output",
]

IMAGE_2D_EXTS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".gif")
VOLUME_EXTS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


class PreparationError(UserError, ValueError):
    """A raw dataset is incomplete or inconsistent; the message names the file or folder and the problem."""


def strip_ext(name: str) -> str:
    """File name without its (possibly double) extension.

    Args:
        name: file name or path.
    """
    base = Path(name).name
    for ext in VOLUME_EXTS + IMAGE_2D_EXTS + (".h5",):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return Path(base).stem


def require_dir(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, raising ``PreparationError`` when it is not an existing folder.

    Args:
        path: folder.
        what: description used in the message.
    """
    p = Path(path)
    if not p.is_dir():
        raise PreparationError(f"{p}: missing folder ({what}).")
    return p


def finite_or_error(array: np.ndarray, path: Any, replaced: list | None = None) -> np.ndarray:
    """``array`` when every value is finite; otherwise a ``PreparationError`` naming the file and the count, or,
    when ``replaced`` is a list, the array with NaN / Inf set to its smallest finite value (0 if none) and
    ``(path, count)`` appended to ``replaced``.

    Args:
        array: image or volume.
        path: its file (for the message).
        replaced: collects the replacements; None makes non-finite values an error.
    """
    if not np.issubdtype(array.dtype, np.floating):
        return array
    ok = np.isfinite(array)
    bad = int(array.size - np.count_nonzero(ok))
    if not bad:
        return array
    if replaced is None:
        raise PreparationError(f"{path}: {bad} non-finite voxel(s) (NaN or Inf); fix the file, or pass "
                               "--replace-nonfinite to set them to the image's smallest finite value.")
    fill = float(array[ok].min()) if ok.any() else 0.0
    replaced.append((str(path), bad))
    return np.where(ok, array, fill).astype(array.dtype)


def read_image_2d(path: str | Path, replaced: list | None = None) -> np.ndarray:
    """Read a 2D image as uint8 ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB; alpha dropped, palettes expanded).

    Args:
        path: PNG/BMP/TIFF/JPEG file.
        replaced: see :func:`finite_or_error` (float TIFFs with NaN / Inf).
    """
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise PreparationError(f"{p}: missing file.")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("1", "L", "I;16", "I", "F"):
                arr = np.asarray(im.convert("L") if im.mode == "1" else im)
                arr = finite_or_error(arr, p, replaced)
                if arr.dtype != np.uint8:
                    lo, hi = float(arr.min()), float(arr.max())
                    arr = ((arr - lo) / max(hi - lo, 1e-8) * 255).round().astype(np.uint8)
                return arr
            return np.asarray(im.convert("RGB"))
    except PreparationError:
        raise
    except Exception as e:
        raise PreparationError(f"{p}: unreadable image file ({type(e).__name__}: {e}).") from e


def read_mask_2d(path: str | Path) -> np.ndarray:
    """Read a 2D mask as an integer ``(H, W)`` array of its stored values (1-bit -> 0/1; RGB -> max over channels).

    Args:
        path: PNG/BMP/TIFF/JPEG file (1-bit, 8-bit, 16-bit, palette or RGB).
    """
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise PreparationError(f"{p}: missing file.")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode == "1":
                return np.asarray(im).astype(np.int64)
            if im.mode == "P":
                return np.asarray(im).astype(np.int64)  # palette index = class/instance id
            arr = np.asarray(im)
    except Exception as e:
        raise PreparationError(f"{p}: unreadable mask file ({type(e).__name__}: {e}).") from e
    if arr.ndim == 3:
        arr = arr[..., :3].max(-1)
    return arr.astype(np.int64)


def read_volume(path: str | Path, with_affine: bool = False) -> tuple[Any, ...]:
    """Read a volume as ``(x, y, z)`` array (NIfTI voxel order) plus its spacing (and its RAS affine).

    Args:
        path: NIfTI (nibabel) or NRRD/MHA/MHD (SimpleITK) file.
        with_affine: also return the 4x4 voxel-to-world affine (RAS, as nibabel; ITK's LPS converted).
    """
    p = Path(path)
    if not p.is_file():
        raise PreparationError(f"{p}: missing file.")
    try:
        if p.name.lower().endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(p))
            out = np.asarray(img.dataobj), tuple(float(z) for z in img.header.get_zooms()[:3])
            return (*out, np.asarray(img.affine, float)) if with_affine else out
        import SimpleITK as sitk

        img = sitk.ReadImage(str(p))
        arr = sitk.GetArrayFromImage(img)  # (z, y, x)
        out = np.transpose(arr, tuple(range(arr.ndim))[::-1]), tuple(float(s) for s in img.GetSpacing())
        if not with_affine:
            return out
        n = img.GetDimension()
        lps_to_ras = np.diag([-1.0, -1.0] + [1.0] * (n - 2))
        aff = np.eye(n + 1)
        aff[:n, :n] = lps_to_ras @ np.asarray(img.GetDirection(), float).reshape(n, n) @ np.diag(img.GetSpacing())
        aff[:n, n] = lps_to_ras @ np.asarray(img.GetOrigin(), float)
        return (*out, aff)
    except Exception as e:
        raise PreparationError(f"{p}: unreadable volume file ({type(e).__name__}: {e}).") from e


def check_same_shape(img_shape: Sequence[int], lab_shape: Sequence[int], img_path: Any, lab_path: Any) -> None:
    """Raise ``PreparationError`` naming both files when the spatial shapes differ.

    Args:
        img_shape: image spatial shape.
        lab_shape: mask spatial shape.
        img_path: image file (for the message).
        lab_path: mask file (for the message).
    """
    if tuple(img_shape) != tuple(lab_shape):
        raise PreparationError(
            f"{lab_path}: mask/image size mismatch, mask {tuple(lab_shape)} vs image {tuple(img_shape)} ({img_path})."
        )


def resize_image_2d(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a 2D image: area when shrinking, bilinear when enlarging.

    Args:
        image: uint8 ``(H, W)`` or ``(H, W, 3)``.
        size: output ``(H, W)``.
    """
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    shrink = h * w < image.shape[0] * image.shape[1]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((w, h), resample))


def resize_pair_2d(
    image: np.ndarray, label: np.ndarray, size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resize a 2D image (area when shrinking, bilinear when enlarging) and its label (nearest).

    Args:
        image: uint8 ``(H, W)`` or ``(H, W, 3)``.
        label: uint8 ``(H, W)`` class indices.
        size: output ``(H, W)``.
    """
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    lab = np.asarray(Image.fromarray(label.astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST))
    return resize_image_2d(image, size), lab


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG (parent folders created).

    Args:
        array: image or class-index label (values < 256).
        path: output file.
    """
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array.astype(np.uint8))).save(path)


def save_png_pair(image: np.ndarray, label: np.ndarray, img_path: Path, lab_path: Path) -> None:
    """Write a 2D image (uint8 grey/RGB) and its uint8 class-index label as PNG.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8.
        label: ``(H, W)`` class indices (< 256).
        img_path: output image file.
        lab_path: output label file.
    """
    save_png(image, img_path)
    save_png(label, lab_path)


def save_nifti_image(image: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    """Write a 3D image as float32 NIfTI with a diagonal affine of ``spacing`` (parent folders created).

    Args:
        image: ``(x, y, z)`` array.
        spacing: voxel spacing (mm), 3 values.
        path: output file (``.nii.gz``).
    """
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    ni = nib.Nifti1Image(np.asarray(image, np.float32), np.diag([float(s) for s in spacing] + [1.0]))
    ni.header.set_zooms(tuple(float(s) for s in spacing))
    nib.save(ni, str(path))


def save_nifti_pair(
    image: np.ndarray, label: np.ndarray, spacing: Sequence[float], img_path: Path, lab_path: Path
) -> None:
    """Write a 3D image (float32) and label (uint8) as NIfTI with a diagonal affine of ``spacing``.

    Args:
        image: ``(x, y, z)`` array.
        label: ``(x, y, z)`` class indices.
        spacing: voxel spacing (mm), 3 values.
        img_path: output image file (``.nii.gz``).
        lab_path: output label file (``.nii.gz``).
    """
    import nibabel as nib

    save_nifti_image(image, spacing, img_path)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([float(s) for s in spacing] + [1.0])
    nl = nib.Nifti1Image(np.asarray(label, np.uint8), affine)
    nl.set_data_dtype(np.uint8)
    nib.save(nl, str(lab_path))


def dataset_stats(
    shapes: Sequence[Sequence[int]], class_counts: Sequence[Sequence[int]] | np.ndarray, num_classes: int
) -> dict[str, Any]:
    """Summary statistics of a prepared dataset.

    Args:
        shapes: spatial shape of every case.
        class_counts: per case, the voxel count of every class.
        num_classes: number of classes.

    Returns:
        ``count``, ``shape_min``, ``shape_max``, ``most_common_shape``, ``class_fractions`` (pooled),
        ``foreground_fraction_per_case`` (mean, min, max of the non-background fraction).
    """
    cc = np.asarray(class_counts, np.float64).reshape(len(shapes), num_classes)
    arr = np.asarray(shapes)
    fg = 1.0 - cc[:, 0] / np.maximum(cc.sum(1), 1)
    return {
        "count": len(shapes),
        "shape_min": arr.min(0).tolist(),
        "shape_max": arr.max(0).tolist(),
        "most_common_shape": list(Counter(tuple(s) for s in shapes).most_common(1)[0][0]),
        "class_fractions": (cc.sum(0) / max(cc.sum(), 1)).round(4).tolist(),
        "foreground_fraction_per_case": {"mean": round(float(fg.mean()), 4), "min": round(float(fg.min()), 4),
                                         "max": round(float(fg.max()), 4)},
    }


def format_stats(name: str, stats: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """Human-readable statistics block printed by the preparation scripts.

    Args:
        name: dataset name.
        stats: output of ``dataset_stats``.
        extra: further ``key: value`` lines.
    """
    lines = [
        f"dataset {name}: {stats['count']} cases",
        f"  spatial shape: min {stats['shape_min']}, max {stats['shape_max']}, most common "
        f"{stats['most_common_shape']}",
        "  class fractions (pooled): " + ", ".join(f"{i}: {f:.4f}" for i, f in enumerate(stats["class_fractions"])),
        "  foreground fraction per case: mean {mean:.4f}, min {min:.4f}, max {max:.4f}".format(
            **stats["foreground_fraction_per_case"]),
    ]
    for k, v in (extra or {}).items():
        lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def write_dataset_datalist(
    out_dir: Path,
    cases: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any],
    unlabeled: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``<out_dir>/datalist.json``: metadata keys, all labelled cases under ``"cases"`` and, when there are
    images without a mask, those under ``"unlabeled"`` (``make_split`` puts that pool into every split whole).

    Args:
        out_dir: dataset folder.
        cases: entries ``{"id", "image", "label"}`` with paths relative to ``out_dir``.
        unlabeled: entries ``{"id", "image"}`` (no ``label`` key) of images without a mask.
        meta: metadata (``name``, ``spatial_dims``, ``num_classes``, ``in_channels``, ``labels``, ``source``,
            ``official_test``, ``official_train``, ``stats``, ...).

    Returns:
        the datalist path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = dict(meta)
    data["cases"] = [dict(c) for c in cases]
    if unlabeled:
        data["unlabeled"] = [dict(c) for c in unlabeled]
    path = out_dir / "datalist.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def parse_label_map(text: str) -> dict[int, int]:
    """Parse ``"0:0,255:1"`` into ``{0: 0, 255: 1}``.

    Args:
        text: comma-separated ``raw:class`` pairs.
    """
    try:
        pairs = [t.split(":") for t in text.split(",") if t.strip()]
        return {int(float(k)): int(v) for k, v in pairs}
    except ValueError as e:
        raise PreparationError(f"--label-map '{text}': expected comma-separated 'raw:class' pairs.") from e


def _supported_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(IMAGE_2D_EXTS + VOLUME_EXTS)]


def _case_id(path: Path, id_regex: re.Pattern | None) -> str:
    """The case id of an image: its stem, or what ``id_regex`` captures from it (group ``id``, else 1, else all)."""
    stem = strip_ext(path.name)
    if id_regex is None:
        return stem
    m = id_regex.search(stem)
    if m is None:
        raise PreparationError(f"{path}: the image name does not match --id-regex '{id_regex.pattern}'.")
    if "id" in id_regex.groupindex:
        return m.group("id")
    return m.group(1) if id_regex.groups else m.group(0)


def _read_image(path: Path, grey: bool, spacing: Sequence[float] | None,
                replaced: list | None = None) -> tuple[np.ndarray, Any, int, Any]:
    """Read an image (2D or 3D by extension); return the array, its spacing (3D), its spatial dimensions and its
    affine (3D; None in 2D). Non-finite voxels: see :func:`finite_or_error`."""
    if path.name.lower().endswith(VOLUME_EXTS):
        img, sp, aff = read_volume(path, with_affine=True)
        return finite_or_error(img, path, replaced), (tuple(spacing) if spacing else sp), 3, aff
    img = read_image_2d(path, replaced)
    if grey and img.ndim == 3:
        img = np.round(img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    return img, None, 2, None


#: what a preparation writes into its output folder (removed first by ``overwrite``)
PREPARED_ENTRIES = ("imagesTr", "labelsTr", "datalist.json", "splits")


def clear_output(out: Path, overwrite: bool) -> list[str]:
    """Make ``out`` ready for a new dataset: an empty or missing folder is fine; a non-empty one is an error
    unless ``overwrite``, which removes the entries a preparation writes (``imagesTr/``, ``labelsTr/``,
    ``datalist.json`` and the ``splits/`` made from it) and leaves anything else.

    Args:
        out: the output dataset folder.
        overwrite: remove an earlier dataset in ``out``.

    Returns:
        the names removed.
    """
    import shutil

    if not out.is_dir() or not any(out.iterdir()):
        return []
    held = sorted(p.name for p in out.iterdir())
    if not overwrite:
        raise PreparationError(
            f"{out}: output folder is not empty (holds {', '.join(held[:5])}{', ...' if len(held) > 5 else ''}); "
            "pass --overwrite to replace the dataset in it (its imagesTr/, labelsTr/, splits/ and datalist.json "
            "are removed first), or choose another --out.")
    removed = []
    for name in PREPARED_ENTRIES:
        q = out / name
        if q.is_dir() and not q.is_symlink():
            shutil.rmtree(q)
        elif q.exists() or q.is_symlink():
            q.unlink()
        else:
            continue
        removed.append(name)
    return removed


def _label_set_errors(records: Sequence[tuple], num_classes: int, declared: bool, allow_empty: bool,
                      warnings_out: list[str]) -> None:
    """Raise ``PreparationError`` for mask values outside ``[0, num_classes)`` (naming the file, the value and its
    pixel count) and for foreground classes without any voxel over all masks (an error unless ``allow_empty``, then
    a warning appended to ``warnings_out``)."""
    counts = np.zeros(num_classes, np.int64)
    top: dict[int, tuple[Path, int]] = {}  # value -> (first file holding it, pixel count there)
    for rec in records:
        lab, lab_p = rec[2], rec[4]
        vals, n = np.unique(lab, return_counts=True)
        for v, c in zip(vals.tolist(), n.tolist()):
            if v >= num_classes:
                raise PreparationError(
                    f"{lab_p}: mask value {v} ({c} pixel(s)) outside the declared label set 0..{num_classes - 1} "
                    "(--num-classes); fix the mask or map the value with --label-map.")
            counts[v] += c
            top.setdefault(v, (lab_p, c))
    empty = [k for k in range(1, num_classes) if counts[k] == 0]
    if not empty:
        return
    if len(empty) == num_classes - 1:
        msg = f"every mask is empty (background only) over the {len(records)} labelled case(s)"
    else:
        msg = f"class(es) {empty} of 0..{num_classes - 1} have no voxel in any of the {len(records)} mask(s)"
        hv = num_classes - 1
        if not declared and hv in top:
            f, c = top[hv]
            msg += (f"; the label set reaches {hv} because of {f} (value {hv} in {c} pixel(s)): a stray value? "
                    "Fix that mask, map it with --label-map, or declare the classes with --num-classes")
    if not allow_empty:
        raise PreparationError(msg + "; pass --allow-empty-classes to prepare it anyway.")
    warnings_out.append(msg)


def prepare_folder(
    images: str | Path,
    masks: str | Path,
    out: str | Path,
    unlabeled_images: Sequence[str | Path] = (),
    mask_pattern: str = "{id}",
    id_regex: str | None = None,
    no_mask_as_unlabeled: bool = False,
    binarize: bool = False,
    label_map: Mapping[int, int] | None = None,
    name: str = "folder",
    grey: bool = False,
    resize: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    num_classes: int | None = None,
    replace_nonfinite: bool = False,
    allow_empty_classes: bool = False,
    overwrite: bool = False,
) -> tuple[Path, dict[str, Any]]:
    r"""Convert folders of images, masks and (optionally) images without masks into the project's format.

    The mask of an image is the file of ``masks`` whose name without extension is ``mask_pattern`` with ``{id}``
    replaced by the image's case id (any supported extension, GIF included); the case id is the image's name
    without extension, or what ``id_regex`` captures from it (named group ``id``, else group 1), e.g.
    ``21_training.tif`` + ``--id-regex '^(\d+)_'`` + ``--mask-pattern '{id}_manual1'`` -> ``21_manual1.gif``.
    Everything is read and checked before the first file is written, so a failed run leaves ``out`` as it was:
    non-finite image voxels, a 3D mask whose affine (spacing, direction, origin) differs from its image's, mask
    values outside the label set, classes without any voxel over all masks, and a non-empty ``out`` without
    ``overwrite`` are errors naming the file and the problem.

    Args:
        images: folder of labelled images.
        masks: folder of their masks.
        out: output dataset folder (``imagesTr/``, ``labelsTr/``, ``datalist.json``).
        unlabeled_images: folders of images without masks (recorded under ``"unlabeled"``), 2D or 3D like ``images``.
        mask_pattern: mask file name without extension, ``{id}`` standing for the case id.
        id_regex: regular expression extracting the case id from an image name (without extension).
        no_mask_as_unlabeled: an image of ``images`` without a mask becomes unlabelled (otherwise an error).
        binarize: mask value > 0 -> 1.
        label_map: raw mask value -> class index (unmapped values are an error).
        name: dataset name stored in the datalist.
        grey: 2D: convert images to one grey channel.
        resize: 2D: output ``(H, W)``.
        spacing: 3D: voxel spacing overriding the headers (the image and mask affines are then not compared).
        num_classes: the declared label set ``0..num_classes-1`` (default: from ``label_map``, ``binarize`` or the
            largest mask value); a mask value outside it is an error naming the file, the value and its pixel count.
        replace_nonfinite: set NaN / Inf voxels of the images to the image's smallest finite value (reported in
            ``stats["nonfinite_replaced"]``) instead of stopping with an error naming the file.
        allow_empty_classes: a foreground class without any voxel over all masks (e.g. every mask empty) is a
            warning (``stats["warnings"]``, also written into the datalist) instead of an error.
        overwrite: ``out`` may hold an earlier dataset: its ``imagesTr/``, ``labelsTr/``, ``splits/`` and
            ``datalist.json`` are removed (after every input was read and checked) before writing.

    Returns:
        the datalist path and the dataset statistics (``dataset_stats`` of the labelled cases, plus
        ``nonfinite_replaced``, ``removed`` and ``warnings`` when any).

    Raises:
        PreparationError: naming the file or folder and the problem.
    """
    if binarize and label_map:
        raise PreparationError("--binarize and --label-map are exclusive.")
    if "{id}" not in mask_pattern:
        raise PreparationError(f"--mask-pattern '{mask_pattern}' must contain '{{id}}' (the case id).")
    img_dir, mask_dir = require_dir(images, "images"), require_dir(masks, "masks")
    unl_dirs = [require_dir(d, "unlabelled images") for d in unlabeled_images]
    regex = None
    if id_regex:
        try:
            regex = re.compile(id_regex)
        except re.error as e:
            raise PreparationError(f"--id-regex '{id_regex}': invalid regular expression ({e}).") from e
    mask_files: dict[str, Path] = {}
    for p in _supported_files(mask_dir):
        stem = strip_ext(p.name)
        if stem in mask_files:
            raise PreparationError(f"{p}: two masks named '{stem}' (also {mask_files[stem]}); remove one of them.")
        mask_files[stem] = p
    labelled = _supported_files(img_dir)
    if not labelled:
        raise PreparationError(f"{img_dir}: no image file (PNG/BMP/TIFF/JPEG/GIF/NIfTI/NRRD) found.")
    seen: dict[str, Path] = {}
    pairs, unl_paths = [], []
    for img_p in labelled:
        cid = _case_id(img_p, regex)
        if cid in seen:
            raise PreparationError(f"{img_p}: duplicate case id '{cid}' (also {seen[cid]}); rename one of them.")
        seen[cid] = img_p
        mask_stem = mask_pattern.replace("{id}", cid)
        if mask_stem in mask_files:
            pairs.append((cid, img_p, mask_files[mask_stem]))
        elif no_mask_as_unlabeled:
            unl_paths.append((cid, img_p))
        else:
            raise PreparationError(
                f"{img_p}: no mask '{mask_stem}.*' in {mask_dir} (set --mask-pattern / --id-regex, or pass "
                "--no-mask-as-unlabeled to use images without a mask as unlabelled)."
            )
    if not pairs:
        raise PreparationError(f"{img_dir}: no image has a mask '{mask_pattern}.*' in {mask_dir}.")
    for d in unl_dirs:
        files = _supported_files(d)
        if not files:
            raise PreparationError(f"{d}: no image file (PNG/BMP/TIFF/JPEG/GIF/NIfTI/NRRD) found (--unlabeled-images).")
        for img_p in files:
            cid = _case_id(img_p, regex)
            if cid in seen:
                raise PreparationError(f"{img_p}: duplicate case id '{cid}' (also {seen[cid]}); rename one of them.")
            seen[cid] = img_p
            unl_paths.append((cid, img_p))

    from custom_components.data.datalist import affine_mismatch

    replaced: list | None = [] if replace_nonfinite else None
    records, dims = [], set()
    for cid, img_p, lab_p in pairs:
        img, sp, nd, img_aff = _read_image(img_p, grey, spacing, replaced)
        dims.add(nd)
        if nd == 3:
            lab, _, lab_aff = read_volume(lab_p, with_affine=True)
            check_same_shape(img.shape[:3], lab.shape, img_p, lab_p)
            diff = None if spacing else affine_mismatch(img_aff, lab_aff, 3)
            if diff:
                raise PreparationError(
                    f"{lab_p}: image/mask {diff.replace('label', 'mask')} ({img_p}); the mask would be paired voxel "
                    "by voxel with another part of the image. Resample the mask onto the image, or pass --spacing "
                    "to ignore both headers (voxels paired as stored)."
                )
        else:
            lab = read_mask_2d(lab_p)
            check_same_shape(img.shape[:2], lab.shape, img_p, lab_p)
        if np.issubdtype(lab.dtype, np.floating) and not np.isfinite(lab).all():
            raise PreparationError(f"{lab_p}: {int((~np.isfinite(lab)).sum())} non-finite value(s) (NaN or Inf) "
                                   "in the mask.")
        if label_map is not None:
            bad = sorted(set(np.unique(lab).tolist()) - set(label_map))
            if bad:
                raise PreparationError(f"{lab_p}: mask values {bad[:5]} missing from --label-map.")
            keys = np.array(sorted(label_map))
            lab = np.array([label_map[k] for k in keys])[np.searchsorted(keys, lab)]
        elif binarize:
            lab = (lab > 0).astype(np.int64)
        else:
            vals = np.unique(lab)
            if vals.min() < 0 or vals.max() > 254 or not np.all(vals == np.round(vals)):
                raise PreparationError(f"{lab_p}: mask values {vals[:5].tolist()} are not class indices; "
                                       "use --binarize or --label-map.")
        records.append((cid, img, lab.astype(np.uint8), sp, lab_p, img_p))
    unl_records = []
    for cid, img_p in unl_paths:
        img, sp, nd, _ = _read_image(img_p, grey, spacing, replaced)
        dims.add(nd)
        unl_records.append((cid, img, sp, img_p))
    if len(dims) > 1:
        raise PreparationError(f"{img_dir}" + "".join(f" + {d}" for d in unl_dirs) + ": mixes 2D and 3D images.")
    nd = dims.pop()
    channels: dict[int, Path] = {}
    for rec in records + unl_records:
        img, img_p = rec[1], rec[-1]
        channels.setdefault(1 if img.ndim == nd else int(img.shape[-1]), img_p)
    if len(channels) > 1:  # checked before anything is written, so a prepared dataset in --out stays intact
        examples = ", ".join(f"{c}: {p}" for c, p in sorted(channels.items()))
        raise PreparationError(f"{img_dir}: images have different channel counts ({examples}); try --grey.")
    if num_classes is None:
        num_classes = (max(label_map.values()) + 1) if label_map else (
            2 if binarize else max(max(int(r[2].max()) for r in records) + 1, 2))
        declared = bool(label_map)
    else:
        num_classes, declared = int(num_classes), True
    warnings_out: list[str] = []
    _label_set_errors(records, num_classes, declared, allow_empty_classes, warnings_out)

    out = Path(out)
    removed = clear_output(out, overwrite)
    ext = ".png" if nd == 2 else ".nii.gz"
    cases, unl_cases, shapes, counts = [], [], [], []
    for cid, img, lab, sp, _, _ in records:
        img_f, lab_f = out / "imagesTr" / f"{cid}{ext}", out / "labelsTr" / f"{cid}{ext}"
        if nd == 2:
            if resize:
                img, lab = resize_pair_2d(img, lab, resize)
            save_png_pair(img, lab, img_f, lab_f)
        else:
            save_nifti_pair(img, lab, sp, img_f, lab_f)
        cases.append({"id": cid, "image": f"imagesTr/{cid}{ext}", "label": f"labelsTr/{cid}{ext}"})
        shapes.append(lab.shape)
        counts.append(np.bincount(lab.ravel(), minlength=num_classes)[:num_classes])
    for cid, img, sp, _ in unl_records:
        img_f = out / "imagesTr" / f"{cid}{ext}"
        if nd == 2:
            save_png(resize_image_2d(img, resize) if resize else img, img_f)
        else:
            save_nifti_image(img, sp, img_f)
        unl_cases.append({"id": cid, "image": f"imagesTr/{cid}{ext}"})
    stats = dataset_stats(shapes, counts, num_classes)
    if replaced:
        stats["nonfinite_replaced"] = {f: n for f, n in replaced}
    if removed:
        stats["removed"] = removed
    if warnings_out:
        stats["warnings"] = warnings_out
    sources = " + ".join(str(d) for d in [img_dir, mask_dir, *unl_dirs])
    meta = {
        "name": name, "spatial_dims": nd, "num_classes": num_classes, "in_channels": next(iter(channels)),
        "labels": {str(i): ("background" if i == 0 else f"class{i}") for i in range(num_classes)},
        "source": f"folders {sources}; prepared by scripts/prepare_folder.py",
        "stats": {k: v for k, v in stats.items() if k != "removed"},
    }
    if warnings_out:
        meta["warnings"] = warnings_out
    if unl_cases:
        meta["num_unlabeled"] = len(unl_cases)
    return write_dataset_datalist(out, cases, meta, unl_cases), stats

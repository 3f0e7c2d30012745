"""Built-in synthetic segmentation data (2D PNG or 3D NIfTI; binary or multi-class).

The generator is dimension-agnostic: every structure is built in N-D with numpy/scipy, so the 2D and the 3D
datasets share one code path. It is meant to be the default data of every bundle: small, fast to make, and
hard enough that a segmentation network trained on a few labels does clearly worse than one trained on all.

What a case contains (see ``docs/data.md``):

- background: per-case base colour, low-frequency texture, a smooth multiplicative bias field, Gaussian noise;
- foreground "lesions" (class 1): 1-3 irregular blobs (ellipsoids deformed by a smooth random field, so the
  outline is lobulated), a sharp edge, a darker rim and a speckled (high-frequency) interior texture;
- distractors (background): regular ellipsoids with the **same** contrast and colour distribution as the
  lesions but a soft (blurred) edge and a smooth interior, and thin dark curvilinear "hairs" (2D lines,
  3D tubes). Intensity thresholding therefore cannot separate lesions from distractors: shape, edge
  sharpness and texture must be learned;
- multi-class (``num_classes > 2``): class 2 is a core nested inside each class-1 blob (brighter, smooth);
  classes 3.. are separate elongated structures with a striped texture (one shape family per class).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["make_synthetic_dataset", "make_synthetic_folders", "synth_case", "SyntheticCase"]

SyntheticCase = tuple[np.ndarray, np.ndarray]


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-6)


def _grid(shape: Sequence[int]) -> np.ndarray:
    """Coordinates normalised to [0, 1], shape (ndim, *shape)."""
    return np.stack(np.meshgrid(*[np.linspace(0.0, 1.0, s, dtype=np.float32) for s in shape], indexing="ij"))


def _random_rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """Uniformly random rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.astype(np.float32)


def _ellipsoid_distance(
    grid: np.ndarray, center: np.ndarray, radii: np.ndarray, rot: np.ndarray
) -> np.ndarray:
    """Normalised ellipsoid distance (1 on the surface) of every grid point."""
    d = grid - center.reshape((-1,) + (1,) * (grid.ndim - 1))
    d = np.tensordot(rot.T, d, axes=1)
    return np.sqrt(sum((d[i] / radii[i]) ** 2 for i in range(grid.shape[0])))


def _segment_distance(grid: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance of every grid point to the segment p0-p1 (normalised coordinates)."""
    shp = (-1,) + (1,) * (grid.ndim - 1)
    v = (p1 - p0).reshape(shp)
    w = grid - p0.reshape(shp)
    t = np.clip((w * v).sum(0) / max(float((v * v).sum()), 1e-8), 0.0, 1.0)
    return np.sqrt(((w - t * v) ** 2).sum(0))


def _bias_field(rng: np.random.Generator, grid: np.ndarray, strength: float) -> np.ndarray:
    """Smooth multiplicative field: random quadratic polynomial in the coordinates, range about 1 +- strength."""
    x = grid - 0.5
    f = np.zeros(grid.shape[1:], np.float32)
    for i in range(grid.shape[0]):
        f += rng.uniform(-1, 1) * x[i] + rng.uniform(-1, 1) * x[i] ** 2 * 2
    f = f / (np.abs(f).max() + 1e-6)
    return 1.0 + strength * f


def synth_case(
    rng: np.random.Generator,
    image_size: Sequence[int],
    num_classes: int = 2,
    in_channels: int = 1,
    max_lesions: int = 3,
    max_distractors: int = 4,
    max_hairs: int = 3,
    noise_std: float = 0.04,
    bias_strength: float = 0.3,
    rare_class_prob: float = 1.0,
) -> SyntheticCase:
    """Generate one synthetic case in any dimension.

    Args:
        rng: numpy random generator (the case is a deterministic function of its state).
        image_size: spatial shape, 2 or 3 entries.
        num_classes: number of classes including background (>= 2).
        in_channels: number of image channels (>= 1); channels share structures but get per-structure tints.
        max_lesions: maximum number of class-1 blobs (at least one is always drawn).
        max_distractors: maximum number of background look-alike blobs.
        max_hairs: maximum number of thin dark curvilinear clutter structures.
        noise_std: standard deviation of the additive Gaussian noise (image range about [0, 1]).
        bias_strength: amplitude of the multiplicative bias field.
        rare_class_prob: with ``num_classes > 3``, the probability that the last class appears in a case (then as
            one short, bright rod); 1.0 keeps it in every case as the other rod classes. Makes a small, rare class.

    Returns:
        ``(image, label)``: image float32 of shape ``(in_channels, *image_size)`` in [0, 1]; label uint8 of shape
        ``image_size`` holding class indices 0..num_classes-1.
    """
    shape = tuple(int(s) for s in image_size)
    nd = len(shape)
    grid = _grid(shape)
    size = float(min(shape))
    label = np.zeros(shape, np.uint8)

    # background: base colour + low-frequency texture
    base = rng.uniform(0.45, 0.8) * np.ones(in_channels, np.float32)
    base = base * rng.uniform(0.85, 1.15, in_channels).astype(np.float32)
    bg_tex = _smooth_noise(rng, shape, sigma=size / rng.uniform(6, 12)) * rng.uniform(0.03, 0.08)
    image = base.reshape((-1,) + (1,) * nd) * (1.0 + bg_tex)[None]

    def tint() -> np.ndarray:
        # same distribution for lesions and distractors: colour does not tell them apart
        return rng.uniform(0.8, 1.2, in_channels).astype(np.float32)

    def contrast() -> float:
        return float(rng.uniform(0.2, 0.5))  # relative darkening, shared by lesions and distractors

    # distractors first (lesions are painted over them)
    for _ in range(int(rng.integers(0, max_distractors + 1))):
        r = rng.uniform(0.05, 0.16, nd).astype(np.float32)
        c = rng.uniform(0.15, 0.85, nd).astype(np.float32)
        d = _ellipsoid_distance(grid, c, r, _random_rotation(rng, nd))
        soft = rng.uniform(0.15, 0.35)
        prof = 1.0 / (1.0 + np.exp(np.clip((d - 1.0) / soft * 4.0, -30.0, 30.0)))  # soft edge, smooth interior
        k = contrast() * tint()
        image = image * (1.0 - k.reshape((-1,) + (1,) * nd) * prof[None])

    # lesions (class 1) and nested cores (class 2)
    n_les = int(rng.integers(1, max_lesions + 1))
    for _ in range(n_les):
        r = rng.uniform(0.07, 0.22, nd).astype(np.float32) * (0.6 if n_les > 1 else 1.0) * (1.0 if nd == 2 else 1.4)
        c = rng.uniform(0.2, 0.8, nd).astype(np.float32)
        rot = _random_rotation(rng, nd)
        d = _ellipsoid_distance(grid, c, r, rot)
        deform = _smooth_noise(rng, shape, sigma=size * rng.uniform(0.04, 0.08)) * rng.uniform(0.15, 0.35)
        dd = d + deform
        m = dd < 1.0
        if m.sum() < 4 ** nd:  # too small after deformation: fall back to the plain ellipsoid
            dd = d
            m = dd < 1.0
        speckle = _smooth_noise(rng, shape, sigma=rng.uniform(0.6, 1.0)) * rng.uniform(0.12, 0.25)
        rim = np.clip(1.0 - np.abs(dd - 1.0) / 0.15, 0.0, 1.0) * rng.uniform(0.1, 0.25)
        prof = ndimage.gaussian_filter(m.astype(np.float32), 0.5)
        k = contrast() * tint()
        dark = prof * (1.0 + speckle) + rim * m
        image = image * (1.0 - np.clip(k.reshape((-1,) + (1,) * nd) * dark[None], 0.0, 0.95))
        label[m] = 1
        if num_classes > 2:
            core = dd < rng.uniform(0.35, 0.6)
            if core.sum() >= 2 ** nd:
                kc = rng.uniform(0.25, 0.5)
                cprof = ndimage.gaussian_filter(core.astype(np.float32), 0.7)
                image = image * (1.0 + kc * cprof)[None]
                label[core] = 2

    # further classes: separate elongated striped structures
    for cls in range(3, num_classes):
        rare = cls == num_classes - 1 and rare_class_prob < 1.0
        present = rng.uniform() < rare_class_prob if rare else True  # no draw by default: same data as before
        n_struct = int(rng.integers(1, 3))
        for _ in range((1 if rare else n_struct) if present else 0):
            r = np.full(nd, rng.uniform(0.04, 0.07), np.float32)
            r[0] = rng.uniform(0.12, 0.25) * (0.6 if rare else 1.0)
            c = rng.uniform(0.2, 0.8, nd).astype(np.float32)
            rot = _random_rotation(rng, nd)
            d = _ellipsoid_distance(grid, c, r, rot)
            m = (d < 1.0) & (label == 0)
            freq = rng.uniform(10, 20) * (1.0 + 0.3 * (cls - 3))
            u = np.tensordot(rot[:, 0], grid, axes=1)
            stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * u)
            prof = ndimage.gaussian_filter(m.astype(np.float32), 0.5)
            k = rng.uniform(0.2, 0.45) * tint()
            sign = 1.0 if rare else (-1.0 if cls % 2 else 1.0)  # the rare rod is bright: small but learnable
            image = image * (1.0 + sign * k.reshape((-1,) + (1,) * nd) * (prof * (0.4 + 0.6 * stripes))[None])
            label[m] = cls

    # thin dark clutter ("hairs") crossing everything, labels unchanged
    for _ in range(int(rng.integers(0, max_hairs + 1))):
        p0 = rng.uniform(0.0, 1.0, nd).astype(np.float32)
        p1 = rng.uniform(0.0, 1.0, nd).astype(np.float32)
        width = rng.uniform(0.6, 1.4) / size
        hair = np.exp(-(_segment_distance(grid, p0, p1) / width) ** 2)
        image = image * (1.0 - rng.uniform(0.3, 0.6) * hair)[None]

    image = image * _bias_field(rng, grid, bias_strength)[None]
    image = image + rng.normal(0.0, noise_std * rng.uniform(0.5, 1.5), image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32), label


def _class_names(num_classes: int) -> dict[str, str]:
    names = {"0": "background", "1": "lesion"}
    if num_classes > 2:
        names["2"] = "core"
    for c in range(3, num_classes):
        names[str(c)] = f"structure{c}"
    return names


def _checked_settings(
    spatial_dims: int, num_classes: int, in_channels: int | None, image_size: int | Sequence[int] | None,
    spacing: float | Sequence[float], rare_class_prob: float,
) -> tuple[int, list[int], list[float]]:
    """Validate the shared generator settings; return ``(in_channels, size, spacing)`` with defaults filled in."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if num_classes < 2 or num_classes > 255:
        raise ValueError(f"num_classes must be in [2, 255], got {num_classes}.")
    if not 0.0 <= rare_class_prob <= 1.0:
        raise ValueError(f"rare_class_prob must be in [0, 1], got {rare_class_prob}.")
    if in_channels is None:
        in_channels = 3 if spatial_dims == 2 else 1
    if spatial_dims == 2 and in_channels not in (1, 3):
        raise ValueError(f"2D PNG images support in_channels 1 or 3, got {in_channels}.")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
    if image_size is None:
        image_size = 64 if spatial_dims == 2 else 48
    size = [int(image_size)] * spatial_dims if isinstance(image_size, (int, np.integer)) else list(image_size)
    if len(size) != spatial_dims or min(size) < 8:
        raise ValueError(f"image_size must be an int or {spatial_dims} ints, each >= 8; got {image_size}.")
    sp = [float(spacing)] * spatial_dims if isinstance(spacing, (int, float)) else [float(s) for s in spacing]
    if len(sp) != spatial_dims or min(sp) <= 0:
        raise ValueError(f"spacing must be a positive number or {spatial_dims} positive numbers; got {spacing}.")
    return in_channels, size, sp


def make_synthetic_dataset(
    out_dir: str | Path,
    spatial_dims: int = 2,
    num_cases: int = 120,
    image_size: int | Sequence[int] | None = None,
    num_classes: int = 2,
    in_channels: int | None = None,
    seed: int = 0,
    spacing: float | Sequence[float] = 1.0,
    noise_std: float = 0.04,
    bias_strength: float = 0.3,
    name: str | None = None,
    rare_class_prob: float = 1.0,
) -> Path:
    """Write a synthetic dataset (images, labels and ``datalist.json``) under ``out_dir``.

    2D: ``imagesTr/case_XXXX.png`` (RGB if ``in_channels == 3``, grey if 1) and ``labelsTr/case_XXXX.png``
    (uint8 class index). 3D: ``imagesTr/case_XXXX.nii.gz`` (float32, ``spacing`` in the header; 4D with
    channels last when ``in_channels > 1``) and ``labelsTr/case_XXXX.nii.gz`` (uint8). ``datalist.json``
    holds every case under ``"cases"`` plus ``name``, ``spatial_dims``, ``num_classes``, ``in_channels``,
    ``labels``, ``seed``, ``source`` (and ``spacing`` for 3D). Use ``make_split`` to turn it into
    labelled/unlabelled/validation/test lists.

    Args:
        out_dir: output folder (created).
        spatial_dims: 2 or 3.
        num_cases: number of cases (>= 1).
        image_size: spatial size, an int (isotropic) or a sequence of ``spatial_dims`` ints (each >= 8);
            default 64 (2D) or 48 (3D).
        num_classes: number of classes including background (>= 2).
        in_channels: image channels; default 3 for 2D, 1 for 3D. 2D PNG supports 1 or 3.
        seed: seed; case ``i`` depends only on ``(seed, i)``, so a larger ``num_cases`` extends a smaller one.
        spacing: voxel spacing written in the 3D NIfTI header (an int/float or one value per axis).
        noise_std: standard deviation of the additive image noise.
        bias_strength: amplitude of the multiplicative bias field.
        name: dataset name stored in the datalist (default ``synthetic{spatial_dims}d``).
        rare_class_prob: with ``num_classes > 3``, the probability that the last class (a small structure) appears
            in a case; 1.0 (default) keeps it in every case.

    Returns:
        Path of the written ``datalist.json``.
    """
    if num_cases < 1:
        raise ValueError(f"num_cases must be >= 1, got {num_cases}.")
    in_channels, size, sp = _checked_settings(spatial_dims, num_classes, in_channels, image_size, spacing,
                                              rare_class_prob)

    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    ext = ".png" if spatial_dims == 2 else ".nii.gz"
    cases = []
    for i in range(num_cases):
        rng = np.random.default_rng([int(seed), i])
        img, lab = synth_case(
            rng, size, num_classes=num_classes, in_channels=in_channels, noise_std=noise_std,
            bias_strength=bias_strength, rare_class_prob=rare_class_prob,
        )
        fname = f"case_{i:04d}{ext}"
        if spatial_dims == 2:
            _write_png(out / "imagesTr" / fname, img, out / "labelsTr" / fname, lab)
        else:
            _write_nifti(out / "imagesTr" / fname, img, out / "labelsTr" / fname, lab, sp)
        cases.append({"image": f"imagesTr/{fname}", "label": f"labelsTr/{fname}"})

    meta: dict = {
        "name": name or f"synthetic{spatial_dims}d",
        "spatial_dims": spatial_dims,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "labels": _class_names(num_classes),
        "seed": int(seed),
        "source": "custom_components.data.synthetic.make_synthetic_dataset",
        "image_size": size,
    }
    if rare_class_prob < 1.0 and num_classes > 3:
        meta["rare_class_prob"] = float(rare_class_prob)
    if spatial_dims == 3:
        meta["spacing"] = sp
    meta["cases"] = cases
    path = out / "datalist.json"
    path.write_text(json.dumps(meta, indent=2))
    return path


#: folders written by ``make_synthetic_folders`` (a user's raw data: labelled images, masks, mask-less, new)
RAW_FOLDERS = ("images", "masks", "unlabelled", "new")


def make_synthetic_folders(
    out_dir: str | Path,
    spatial_dims: int = 2,
    num_labelled: int = 6,
    num_unlabelled: int = 20,
    num_new: int = 3,
    image_size: int | Sequence[int] | None = None,
    num_classes: int = 2,
    in_channels: int | None = None,
    seed: int = 0,
    spacing: float | Sequence[float] = 1.0,
    rare_class_prob: float = 1.0,
) -> dict[str, list[Path]]:
    """Write synthetic cases the way a user's own data arrives: plain folders, no datalist.

    ``out_dir/images/case_XXXX`` (labelled images), ``out_dir/masks/case_XXXX`` (their masks, same names, class
    indices 0..K-1), ``out_dir/unlabelled/scan_XXXX`` (images without a mask) and ``out_dir/new/new_XXXX``
    (images to segment after training); ``.png`` in 2D, ``.nii.gz`` in 3D. The cases are those of
    ``make_synthetic_dataset`` with the same settings (labelled first, then unlabelled, then new: case ``i``
    depends only on ``(seed, i)``). ``scripts/prepare_folder.py`` turns the folders into a dataset.

    Args:
        out_dir: output folder (created).
        spatial_dims: 2 or 3.
        num_labelled: images with a mask (>= 1).
        num_unlabelled: images without a mask (>= 0).
        num_new: further images without a mask, for prediction (>= 0).
        image_size, num_classes, in_channels, seed, spacing, rare_class_prob: as in ``make_synthetic_dataset``.

    Returns:
        the written files per folder name (``RAW_FOLDERS``).
    """
    if num_labelled < 1 or num_unlabelled < 0 or num_new < 0:
        raise ValueError(f"need num_labelled >= 1, num_unlabelled >= 0, num_new >= 0; got {num_labelled}, "
                         f"{num_unlabelled}, {num_new}.")
    in_channels, size, sp = _checked_settings(spatial_dims, num_classes, in_channels, image_size, spacing,
                                              rare_class_prob)
    out = Path(out_dir)
    ext = ".png" if spatial_dims == 2 else ".nii.gz"
    write = _write_png if spatial_dims == 2 else (lambda i, im, lp, lb: _write_nifti(i, im, lp, lb, sp))
    plan = [("images", "case", num_labelled), ("unlabelled", "scan", num_unlabelled), ("new", "new", num_new)]
    written: dict[str, list[Path]] = {d: [] for d in RAW_FOLDERS}
    for d in RAW_FOLDERS:
        (out / d).mkdir(parents=True, exist_ok=True)
    i = 0
    for folder, prefix, n in plan:
        for j in range(n):
            img, lab = synth_case(np.random.default_rng([int(seed), i]), size, num_classes=num_classes,
                                  in_channels=in_channels, rare_class_prob=rare_class_prob)
            i += 1
            img_f = out / folder / f"{prefix}_{j:04d}{ext}"
            lab_f = out / "masks" / img_f.name if folder == "images" else None
            write(img_f, img, lab_f, lab)
            written[folder].append(img_f)
            if lab_f is not None:
                written["masks"].append(lab_f)
    return written


def _write_png(img_path: Path, img: np.ndarray, lab_path: Path | None, lab: np.ndarray | None) -> None:
    from PIL import Image

    arr = np.round(img * 255.0).astype(np.uint8)
    # arrays are (C, H, W) with H = rows; PIL wants (H, W[, C])
    pil = Image.fromarray(arr[0]) if arr.shape[0] == 1 else Image.fromarray(np.moveaxis(arr, 0, -1), mode="RGB")
    pil.save(img_path)
    if lab_path is not None:
        Image.fromarray(lab).save(lab_path)


def _write_nifti(
    img_path: Path, img: np.ndarray, lab_path: Path | None, lab: np.ndarray | None, spacing: Sequence[float]
) -> None:
    import nibabel as nib

    affine = np.diag(list(spacing) + [1.0])
    data = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
    nimg = nib.Nifti1Image(data.astype(np.float32), affine)
    nimg.header.set_zooms(tuple(spacing) + ((1.0,) if data.ndim == 4 else ()))
    nib.save(nimg, img_path)
    if lab_path is None:
        return
    nlab = nib.Nifti1Image(lab.astype(np.uint8), affine)
    nlab.set_data_dtype(np.uint8)
    nib.save(nlab, lab_path)

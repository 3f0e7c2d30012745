"""Deterministic labelled / unlabelled / validation / test splits (the datalist of ``docs/ARCHITECTURE.md``).

Rules (all tested):

- deterministic in ``seed``; validation and test never depend on ``labeled_ratio``;
- labelled = a prefix of one seeded ordering of the training pool, so the labelled set of a smaller ratio is a
  subset of that of a larger one; labelled and unlabelled are disjoint; ratio 1.0 leaves ``unlabeled`` empty;
- unlabelled entries carry no ``"label"`` key;
- a real unlabelled pool (the dataset datalist's ``"unlabeled"`` list: images that have no mask) goes into
  ``unlabeled`` of every split whole; only the labelled cases are divided into labelled / validation / test;
- fixed lists win: ``val_ids`` / ``official_test`` ids become validation / test;
- a split without a validation case or without a labelled case is an error (``SplitError``);
- official splits: ``official_test`` ids become the test split; with ``official_train`` the training pool keeps
  that list's order, validation is a seeded sample taken outside the first ``val_protect_fraction`` of the list,
  and labelled = the first N remaining ids (the ``la_uamt`` protocol: 4/8/16 of 80 for ratio 0.05/0.1/0.2).
- few labels (``make_folds``): k-fold cross-validation over the labelled cases; each is tested exactly once, the
  unlabelled pool only ever trains, and a validation carve-out under ``MIN_VALIDATION`` cases is dropped
  (``"selection": "last"``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from custom_components.errors import UserError


class SplitError(UserError, ValueError):
    """A dataset cannot be split as asked; the message names the datalist or list file and the problem."""

__all__ = ["SplitError", "make_split", "make_folds", "make_all_labelled_split", "write_split", "split_filename",
           "fold_filename", "all_labelled_filename", "case_id", "read_id_list", "MIN_VALIDATION", "FEW_LABELS"]

MIN_VALIDATION = 3
"""Fewest validation cases worth selecting a checkpoint on; below, the last checkpoint is kept."""
FEW_LABELS = 20
"""At or below this many labelled cases, cross-validation (``make_folds``) is the honest protocol."""

_META_KEYS = ("name", "spatial_dims", "num_classes", "in_channels", "spacing", "labels", "source", "image_size")
_EXTS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".h5")


def case_id(case: Mapping[str, Any]) -> str:
    """Identifier of a datalist entry: its ``"id"`` key, else the image file name without extension.

    Args:
        case: datalist entry with at least an ``"image"`` key.

    Returns:
        the case identifier.
    """
    if "id" in case:
        return str(case["id"])
    name = os.path.basename(str(case["image"]))
    for ext in _EXTS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def read_id_list(path: str | Path) -> list[str]:
    """Read a split list file (one id per line, blank lines ignored; a path-like line keeps its last folder name
    if it ends with ``mri_norm2.h5``, as in UA-MT's lists).

    Args:
        path: list file.

    Returns:
        ids in file order.
    """
    p = Path(path)
    if not p.is_file():
        raise SplitError(f"{p}: split list file not found.")
    ids = []
    for line in p.read_text().splitlines():
        s = line.strip()
        if not s:
            continue
        if s.endswith(".h5"):
            s = Path(s).parent.name
        ids.append(s)
    return ids


def split_filename(labeled_ratio: float, seed: int, labeled_first_n: int | None = None) -> str:
    """File name of a per-regime datalist: ``datalist_r<ratio>_s<seed>.json`` (ratio as ``%g``: ``r0.1``,
    ``r0.05``, ``r1``), or ``datalist_n<N>_s<seed>.json`` when ``labeled_first_n`` is set.

    Args:
        labeled_ratio: labelled ratio.
        seed: split seed.
        labeled_first_n: explicit labelled count, if any.

    Returns:
        the file name.
    """
    if labeled_first_n is not None:
        return f"datalist_n{int(labeled_first_n)}_s{int(seed)}.json"
    return f"datalist_r{float(labeled_ratio):g}_s{int(seed)}.json"


def fold_filename(num_folds: int, fold: int, seed: int) -> str:
    """File name of one cross-validation fold's datalist: ``datalist_cv<k>_f<i>_s<seed>.json``."""
    return f"datalist_cv{int(num_folds)}_f{int(fold)}_s{int(seed)}.json"


def all_labelled_filename(seed: int) -> str:
    """File name of the delivered model's datalist (every labelled case trains): ``datalist_all_s<seed>.json``."""
    return f"datalist_all_s{int(seed)}.json"


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def _load(datalist_or_cases: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> tuple[dict, list[dict]]:
    if isinstance(datalist_or_cases, (str, Path)):
        p = Path(datalist_or_cases)
        if not p.is_file():
            raise SplitError(f"{p}: datalist not found.")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise SplitError(f"{p}: malformed JSON ({e}).") from e
    elif isinstance(datalist_or_cases, Mapping):
        data = dict(datalist_or_cases)
    else:
        data = {"cases": list(datalist_or_cases)}
    if "cases" in data:
        cases = list(data["cases"])
    else:  # an already split datalist: pool everything that has a label
        cases = [c for k in ("labeled", "validation", "test", "training") for c in data.get(k, []) if "label" in c]
    src = f"{datalist_or_cases}: " if isinstance(datalist_or_cases, (str, Path)) else ""
    if not cases:
        what = (f"no labelled case ({len(data.get('unlabeled', []))} unlabelled images): give some images a mask"
                if data.get("unlabeled") else "no cases")
        raise SplitError(f"{src}make_split: {what} (expected a 'cases' list of entries with 'image' and 'label').")
    for c in cases:
        if "image" not in c or "label" not in c:
            raise SplitError(f"{src}make_split: every case needs 'image' and 'label'; got {dict(c)}.")
    return data, [dict(c) for c in cases]


def _pool(data: Mapping[str, Any]) -> list[dict]:
    """The dataset's real unlabelled pool: its ``"unlabeled"`` entries when it is a dataset datalist (``"cases"``)."""
    if "cases" not in data:
        return []
    return [{k: v for k, v in dict(c).items() if k != "label"} for c in data.get("unlabeled", [])]


def make_split(
    datalist_or_cases: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    labeled_ratio: float,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.3,
    official_test: Sequence[str] | None = None,
    official_train: Sequence[str] | None = None,
    min_labeled: int = 1,
    labeled_first_n: int | None = None,
    use_official: bool = True,
    val_protect_fraction: float = 0.2,
    val_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Split labelled cases into ``labeled`` / ``unlabeled`` / ``validation`` / ``test``.

    Without an official split: one seeded permutation of all cases; the first ``round(test_fraction * n)`` are
    test, the next ``round(val_fraction * n)`` validation, the rest the training pool, whose first
    ``round(labeled_ratio * n_pool)`` (at least ``min_labeled``) are labelled. With ``official_test`` the test
    split is that list and the pool is permuted as above. With ``official_train`` the pool keeps the list's order,
    validation is a seeded sample of ``round(val_fraction * n_train)`` ids outside the first
    ``ceil(val_protect_fraction * n_train)``, and labelled = the first ``round(labeled_ratio * n_train)`` remaining
    ids (the ratio counts against the official training list, as in the literature: 10 % of 80 = 8). With
    ``val_ids`` the validation split is that list. Without fixed lists, a non-zero fraction gives at least one case.
    The dataset's real unlabelled pool (its ``"unlabeled"`` list) is appended to ``unlabeled`` whole.

    Args:
        datalist_or_cases: path of a ``datalist.json`` (with ``"cases"``), the loaded dict, or a list of entries
            (``{"image": ..., "label": ..., optional "id"}``). Paths are kept as they are.
        labeled_ratio: fraction of the training pool that keeps its labels, in (0, 1].
        seed: split seed.
        val_fraction: validation fraction (of all cases, or of the official training list), in [0, 1).
        test_fraction: test fraction of all cases, in [0, 1); ignored when an official test list is used.
        official_test: case ids forming the test split (see ``case_id``).
        official_train: case ids of the official training list, in order.
        min_labeled: minimum number of labelled cases.
        labeled_first_n: labelled count overriding ``labeled_ratio`` (first N of the pool order).
        use_official: when the arguments are None, use ``official_test`` / ``official_train`` stored in the datalist.
        val_protect_fraction: with ``official_train``, leading fraction of the list never used for validation.
        val_ids: case ids forming the validation split (win over ``val_fraction``).

    Returns:
        datalist dict with ``labeled``, ``unlabeled`` (no ``label`` key), ``validation``, ``test`` and metadata
        (``seed``, ``labeled_ratio``, ``split`` parameters, and ``name``, ``spatial_dims``, ``num_classes``, ... copied
        from the source datalist).
    """
    if not 0.0 < float(labeled_ratio) <= 1.0:
        raise SplitError(f"labeled_ratio must be in (0, 1], got {labeled_ratio}.")
    if not 0.0 <= val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise SplitError(
            f"val_fraction and test_fraction must be in [0, 1) with a sum < 1; got {val_fraction}, {test_fraction}."
        )
    if min_labeled < 0:
        raise SplitError(f"min_labeled must be >= 0, got {min_labeled}.")
    data, cases = _load(datalist_or_cases)
    src = f"{datalist_or_cases}: " if isinstance(datalist_or_cases, (str, Path)) else ""
    if use_official:
        official_test = official_test if official_test is not None else data.get("official_test")
        official_train = official_train if official_train is not None else data.get("official_train")

    by_id: dict[str, dict] = {}
    seen_images: set[str] = set()
    for c in cases:
        cid = case_id(c)
        if cid in by_id:
            raise SplitError(f"{src}make_split: duplicate case id '{cid}' ({c['image']}).")
        if str(c["image"]) in seen_images:
            raise SplitError(f"{src}make_split: image {c['image']} listed twice.")
        seen_images.add(str(c["image"]))
        by_id[cid] = c
    ids = sorted(by_id)  # the input order does not matter
    rng = np.random.default_rng(int(seed))

    def _check(lst: Sequence[str], what: str) -> list[str]:
        missing = [i for i in lst if i not in by_id]
        if missing:
            raise SplitError(f"{src}make_split: {len(missing)} id(s) of {what} are not labelled cases of the datalist, "
                             f"e.g. {missing[:3]}.")
        if len(set(lst)) != len(lst):
            raise SplitError(f"{src}make_split: {what} lists an id twice.")
        return list(lst)

    if official_train is not None:
        train = _check(official_train, "official_train")
        test = _check(official_test, "official_test") if official_test is not None else []
        overlap = set(train) & set(test)
        if overlap:
            raise SplitError(f"{src}make_split: ids in both official_train and official_test: {sorted(overlap)[:3]}.")
        n_train = len(train)
        n_val = max(1, _round(val_fraction * n_train)) if val_fraction > 0 else 0
        protect = min(math.ceil(val_protect_fraction * n_train), n_train - n_val)
        cand = train[protect:]
        pick = set(rng.choice(len(cand), size=n_val, replace=False).tolist()) if n_val else set()
        val = [cand[i] for i in sorted(pick)]
        if val_ids is not None:
            val = _check(val_ids, "val_ids (validation list)")
        pool = [i for i in train if i not in set(val)]
        ratio_base = n_train
    else:
        fixed_val = _check(val_ids, "val_ids (validation list)") if val_ids is not None else None
        fixed_test = _check(official_test, "official_test (test list)") if official_test is not None else None
        if fixed_val and fixed_test and set(fixed_val) & set(fixed_test):
            raise SplitError(f"{src}make_split: ids in both the validation and the test list: "
                             f"{sorted(set(fixed_val) & set(fixed_test))[:3]}.")
        taken = set(fixed_val or []) | set(fixed_test or [])
        rest = [i for i in ids if i not in taken]
        perm = [rest[i] for i in rng.permutation(len(rest))]

        def _n(fraction: float) -> int:  # a non-zero fraction of a small dataset still gives one case
            return max(1, _round(fraction * len(ids))) if fraction > 0 else 0

        n_test = 0 if fixed_test is not None else _n(test_fraction)
        test, perm = (fixed_test, perm) if fixed_test is not None else (perm[:n_test], perm[n_test:])
        n_val = 0 if fixed_val is not None else _n(val_fraction)
        val, pool = (fixed_val, perm) if fixed_val is not None else (perm[:n_val], perm[n_val:])
        ratio_base = len(pool)
    if not val:
        raise SplitError(f"{src}make_split: the split has no validation case ({len(ids)} labelled cases); model "
                         "selection needs one: pass --val-fraction > 0 or --val-list.")
    if not pool:
        raise SplitError(f"{src}make_split: no labelled case left for training ({len(ids)} labelled cases, "
                         f"{len(val)} validation, {len(test)} test); lower --val-fraction / --test-fraction or "
                         "label more images.")
    if labeled_first_n is not None:
        if not 1 <= labeled_first_n <= len(pool):
            raise SplitError(f"labeled_first_n must be in [1, {len(pool)}], got {labeled_first_n}.")
        n_lab = int(labeled_first_n)
    elif float(labeled_ratio) >= 1.0:
        n_lab = len(pool)
    else:
        n_lab = min(len(pool), max(int(min_labeled), _round(float(labeled_ratio) * ratio_base)))
    if n_lab < 1:
        raise SplitError(f"{src}make_split: the split has no labelled case (ratio {labeled_ratio} of "
                         f"{ratio_base}); raise --ratio or --min-labeled.")
    real_pool = _pool(data)

    def entry(i: str, labelled: bool = True) -> dict:
        e = dict(by_id[i])
        if not labelled:
            e.pop("label", None)
        return e

    out: dict[str, Any] = {k: data[k] for k in _META_KEYS if k in data}
    out.update(
        {
            "seed": int(seed),
            "labeled_ratio": float(labeled_ratio),
            "split": {
                "val_fraction": val_fraction,
                "test_fraction": None if official_test is not None else test_fraction,
                "official_test": official_test is not None,
                "official_train": official_train is not None,
                "labeled_first_n": labeled_first_n,
                "min_labeled": min_labeled,
                "num_labeled": n_lab,
                "val_list": val_ids is not None,
                "num_unlabeled_pool": len(real_pool),
            },
            "labeled": [entry(i) for i in pool[:n_lab]],
            "unlabeled": [entry(i, labelled=False) for i in pool[n_lab:]] + real_pool,
            "validation": [entry(i) for i in val],
            "test": [entry(i) for i in test],
        }
    )
    return out


def write_split(
    split: Mapping[str, Any], dataset_dir: str | Path, path: str | Path | None = None
) -> Path:
    """Write a split made by ``make_split`` whose relative paths are relative to ``dataset_dir``.

    Relative image/label paths are rewritten relative to the output file's folder, so that
    ``monai.data.load_decathlon_datalist(path, data_list_key=...)`` resolves them.

    Args:
        split: the dict returned by ``make_split``.
        dataset_dir: folder the split's relative paths refer to (the source datalist's folder).
        path: output file; default ``<dataset_dir>/splits/`` + ``split_filename(...)``.

    Returns:
        the written path.
    """
    ddir = Path(dataset_dir)
    if path is None:
        s = split.get("split", {})
        path = ddir / "splits" / split_filename(split["labeled_ratio"], split["seed"], s.get("labeled_first_n"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rel_root = os.path.relpath(ddir.resolve(), path.parent.resolve())
    out = dict(split)
    for key in ("labeled", "unlabeled", "validation", "test"):
        lst = []
        for e in split.get(key, []):
            e = dict(e)
            for k in ("image", "label"):
                if k in e and isinstance(e[k], str) and not os.path.isabs(e[k]):
                    e[k] = os.path.normpath(os.path.join(rel_root, e[k])) if rel_root != "." else e[k]
            lst.append(e)
        out[key] = lst
    path.write_text(json.dumps(out, indent=2))
    return path


def make_folds(
    datalist_or_cases: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    num_folds: int = 5,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> list[dict[str, Any]]:
    """k-fold cross-validation over the labelled cases (the few-label protocol of ``docs/your_data.md``).

    One seeded permutation of the labelled cases is cut into ``k = min(num_folds, n)`` folds of sizes differing by at
    most one (``n < num_folds``: one case per fold). Fold ``i``'s cases are its ``test`` split; the other labelled
    cases train, with the whole unlabelled pool as ``unlabeled``; validation is the first
    ``round(val_fraction * n_train)`` training cases of the seeded order, and when that would be under
    ``MIN_VALIDATION`` cases there is none: ``validation`` is empty and ``"selection": "last"`` (the last checkpoint
    is kept), else ``"selection": "best"``.

    Args:
        datalist_or_cases: as for :func:`make_split` (its ``"unlabeled"`` list is the unlabelled pool).
        num_folds: wanted number of folds (``k``).
        seed: seed of the permutation.
        val_fraction: validation fraction of each training fold's labelled cases, in [0, 1).

    Returns:
        one datalist per fold (keys of :func:`make_split` plus ``fold``, ``num_folds``, ``selection``).

    Raises:
        SplitError: fewer than 2 labelled cases, ``num_folds < 2`` or ``val_fraction`` out of range.
    """
    if num_folds < 2:
        raise SplitError(f"--folds must be >= 2, got {num_folds}.")
    if not 0.0 <= val_fraction < 1.0:
        raise SplitError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    data, cases = _load(datalist_or_cases)
    by_id = {case_id(c): c for c in cases}
    if len(by_id) != len(cases):
        raise SplitError("make_folds: duplicate case ids among the labelled cases.")
    if len(by_id) < 2:
        raise SplitError(f"make_folds: {len(by_id)} labelled case: cross-validation needs at least 2.")
    ids = sorted(by_id)
    perm = [ids[i] for i in np.random.default_rng(int(seed)).permutation(len(ids))]
    k = min(int(num_folds), len(ids))
    folds = [perm[i::k] for i in range(k)]  # sizes differ by at most one
    pool = _pool(data)
    out = []
    for i, test in enumerate(folds):
        train = [c for c in perm if c not in set(test)]
        d = _training_split(data, by_id, train, pool, seed, val_fraction, test)
        d.update({"fold": i, "num_folds": k})
        d["split"]["cross_validation"] = True
        out.append(d)
    return out


def _training_split(data: Mapping[str, Any], by_id: Mapping[str, dict], train: Sequence[str], pool: Sequence[dict],
                    seed: int, val_fraction: float, test: Sequence[str]) -> dict[str, Any]:
    """A datalist training on ``train`` (validation = its first ``round(val_fraction * n)`` ids, none under
    ``MIN_VALIDATION``: ``"selection": "last"``) with the whole unlabelled ``pool``, tested on ``test``."""
    n_val = _round(val_fraction * len(train))
    if n_val < MIN_VALIDATION:
        n_val = 0
    val, lab = list(train[:n_val]), list(train[n_val:])
    d: dict[str, Any] = {key: data[key] for key in _META_KEYS if key in data}
    d.update({
        "seed": int(seed),
        "labeled_ratio": 1.0,
        "selection": "best" if val else "last",
        "split": {"val_fraction": val_fraction, "num_labeled": len(lab), "num_unlabeled_pool": len(pool)},
        "labeled": [dict(by_id[c]) for c in lab],
        "unlabeled": [dict(c) for c in pool],
        "validation": [dict(by_id[c]) for c in val],
        "test": [dict(by_id[c]) for c in test],
    })
    return d


def make_all_labelled_split(
    datalist_or_cases: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    seed: int = 0,
    val_fraction: float = 0.2,
) -> dict[str, Any]:
    """The delivered model's datalist after cross-validation: every labelled case trains, with the whole unlabelled
    pool and the same validation rule as a fold of :func:`make_folds` (the same seeded order; none under
    ``MIN_VALIDATION`` cases: ``"selection": "last"``); ``test`` is empty (the folds measured the method).

    Args:
        datalist_or_cases: as for :func:`make_folds`.
        seed: seed of the order the validation cases are taken from.
        val_fraction: validation fraction of the labelled cases, in [0, 1).

    Raises:
        SplitError: no labelled case, or ``val_fraction`` out of range.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise SplitError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    data, cases = _load(datalist_or_cases)
    by_id = {case_id(c): c for c in cases}
    if not by_id:
        raise SplitError("make_all_labelled_split: no labelled case.")
    ids = sorted(by_id)
    perm = [ids[i] for i in np.random.default_rng(int(seed)).permutation(len(ids))]
    d = _training_split(data, by_id, perm, _pool(data), seed, val_fraction, [])
    d["split"]["all_labelled"] = True
    return d

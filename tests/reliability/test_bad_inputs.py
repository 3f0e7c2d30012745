"""The bad-input matrix: every bundle config and every preparation script fed the inputs users get wrong.

Each case asserts

(a) a clear error: the exception chain (or the script's exception) names the offending file and the problem, and
(b) no output that existed before the run is damaged or deleted (sha256 of the output and checkpoint folders
    before and after; new files are allowed).

Bundles run in-process through ``ConfigWorkflow`` (``initialize`` then ``run`` with ``max_epochs=1``), so the
exception can be inspected; most errors are raised by ``initialize`` before any data is loaded. Scripts run
through their ``main(argv)``. The observed messages are recorded (see ``conftest.py``) and listed in
``docs/reliability.md``. Cases where the code lacks a check are ``xfail(strict=True)`` with the bug named.
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image
from rel_helpers import (
    BUNDLES_DIR,
    TINY_DIFFUSION,
    TINY_SUPERVISED,
    assert_unchanged,
    fresh_deployable,
    fresh_teacher,
    fresh_unet,
    full_message,
    load_weights_only,
    tree_hash,
)
from script_loader import load_script

# ----------------------------------------------------------------------------------------------- bundle targets
#: name -> (bundle, configs, workflow type, datalist key read, reads labels, checkpoint kind)
TARGETS: dict[str, tuple[str, list[str], str, str, bool, str | None]] = {
    "supervised/train": ("supervised", ["train"], "train", "labeled", True, None),
    "supervised/evaluate": ("supervised", ["train", "evaluate"], "eval", "test", True, "unet"),
    "supervised/inference": ("supervised", ["inference"], "inference", "test", False, "unet"),
    "teacher_pretrain/train": ("teacher_pretrain", ["train"], "train", "labeled", True, None),
    "cotrain/train": ("cotrain", ["train"], "train", "labeled", True, "teacher"),
    "cotrain/evaluate": ("cotrain", ["train", "evaluate"], "eval", "test", True, "deployable"),
    "cotrain/inference": ("cotrain", ["inference"], "inference", "test", False, "deployable"),
}
if (BUNDLES_DIR / "pseudolabel" / "configs" / "inference.json").is_file():
    TARGETS["pseudolabel/inference"] = ("pseudolabel", ["inference"], "inference", "unlabeled", False, "teacher")

SPLITS = {"labeled": 2, "unlabeled": 2, "validation": 1, "test": 2}

#: input -> (regex the message must match for the problem, which targets it applies to)
BUNDLE_INPUTS: dict[str, str] = {
    "truncated_image": r"unreadable|truncated|corrupt",
    "wrong_extension": r"unreadable|extension|format|not supported|unsupported",
    "shape_mismatch": r"shape mismatch|size mismatch",
    "spacing_mismatch_3d": r"spacing",
    "3d_image_to_2d_bundle": r"3D image where 2D|spatial dim",
    "2d_image_to_3d_bundle": r"2D image where 3D|spatial dim",
    "wrong_channel_count": r"channel",
    "label_outside_classes": r"outside|out of range",
    "empty_datalist": r"empty|no entries",
    "malformed_datalist": r"malformed",
    "duplicate_cases": r"twice|duplicate",
    "missing_checkpoint": r"does not exist|not found|No such file|missing",
    "mismatched_checkpoint": r"mismatch|does not match",
    "output_dir_is_a_file": r"File exists|Not a directory|not a directory|exists and is not|not writable",
    "ckpt_dir_is_a_file": r"File exists|Not a directory|not a directory|exists and is not|not writable",
}

#: (target, input) -> the bug, for cases where the code lacks a check (strict xfail). Every bundle case found by
#: this matrix has been fixed (extension check, 3D spacing check, weights check in initialize, inference datalist
#: validation, teacher_pretrain file checks); new gaps go here.
BUNDLE_XFAIL: dict[tuple[str, str], str] = {}


def _applies(target: str, case: str) -> bool:
    bundle, configs, wtype, key, labels, ckpt = TARGETS[target]
    if case in ("shape_mismatch", "label_outside_classes", "spacing_mismatch_3d"):
        return labels
    if case in ("missing_checkpoint", "mismatched_checkpoint"):
        return ckpt is not None
    if case == "ckpt_dir_is_a_file":
        return wtype == "train"
    return True


BUNDLE_CASES = [(t, c) for t in TARGETS for c in BUNDLE_INPUTS if _applies(t, c)]


def _param(t: str, c: str) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=BUNDLE_XFAIL[(t, c)])] if (t, c) in BUNDLE_XFAIL else []
    return pytest.param(t, c, id=f"{t}-{c}", marks=marks)


def _write_2d(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")


def _write_3d(path: Path, arr: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), str(path))


def _first(data: Path, key: str) -> tuple[dict, dict]:
    dl = json.loads((data / "datalist.json").read_text())
    return dl, dl[key][0]


def _save_dl(data: Path, dl: dict) -> None:
    (data / "datalist.json").write_text(json.dumps(dl, indent=2))


def _corrupt(case: str, data: Path, key: str, dims: int, required_key: str) -> str:
    """Break the dataset for ``case``; return a regex the error must contain to name the offending file.

    Args:
        case: the input mistake.
        data: dataset folder (changed in place).
        key: datalist key the bundle reads images from (its first entry is broken).
        dims: spatial dims of the dataset.
        required_key: list emptied by ``empty_datalist``.
    """
    dl, entry = _first(data, key)
    img, lab = data / entry["image"], data / entry.get("label", entry["image"])
    if case == "truncated_image":
        raw = img.read_bytes()
        img.write_bytes(raw[: len(raw) // 2])
        return re.escape(img.name)
    if case == "wrong_extension":
        new = img.with_name(img.name.split(".")[0] + ".txt")
        img.rename(new)
        entry["image"] = str(new.relative_to(data))
        _save_dl(data, dl)
        return re.escape(new.name)
    if case == "shape_mismatch":
        if dims == 2:
            _write_2d(lab, np.zeros((12, 16), np.uint8))
        else:
            _write_3d(lab, np.zeros((12, 16, 16), np.uint8))
        return re.escape(lab.name)
    if case == "spacing_mismatch_3d":
        arr = np.asarray(nib.load(str(lab)).dataobj)
        _write_3d(lab, arr, spacing=(2.0, 2.0, 2.0))
        return re.escape(lab.name)
    if case == "wrong_channel_count":
        grey = np.asarray(Image.open(img).convert("L"))
        _write_2d(img, grey)
        return re.escape(img.name)
    if case == "label_outside_classes":
        arr = np.asarray(Image.open(lab)).copy() if dims == 2 else np.asarray(nib.load(str(lab)).dataobj).copy()
        arr.flat[0] = 5
        _write_2d(lab, arr) if dims == 2 else _write_3d(lab, arr)
        return re.escape(lab.name)
    if case == "empty_datalist":
        dl[required_key] = []
        _save_dl(data, dl)
        return r"datalist\.json"
    if case == "malformed_datalist":
        (data / "datalist.json").write_text(json.dumps(dl)[:-40])
        return r"datalist\.json"
    if case == "duplicate_cases":
        dl[key].append(dict(entry))
        _save_dl(data, dl)
        return re.escape(Path(entry["image"]).name)
    if case in ("3d_image_to_2d_bundle", "2d_image_to_3d_bundle"):
        return r"case_\d+\.(png|nii\.gz)"
    raise ValueError(case)


def _overrides(target: str, data: Path, tmp: Path, dims: int, in_channels: int) -> dict[str, Any]:
    bundle, configs, wtype, key, labels, ckpt = TARGETS[target]
    o: dict[str, Any] = dict(TINY_SUPERVISED) if bundle == "supervised" else dict(TINY_DIFFUSION)
    o.update({"dataset_dir": str(data), "output_dir": str(tmp / "out"), "ckpt_dir": str(tmp / "models"),
              "roi_size": [16] * dims, "in_channels": in_channels, "check_datalist_files": True})
    if wtype == "train":
        o.update({"max_epochs": 1, "val_interval": 1, "batch_size": 2})
    if bundle == "cotrain":
        o.update({"rounds": 1, "val_batch_size": 2, "teacher_ckpt": ""})
    if bundle == "pseudolabel":
        o.update({"rounds": 1})
    if ckpt == "teacher":
        o["teacher_ckpt"] = str(tmp / "phase" / "teacher.pt")
    if bundle == "supervised" and wtype != "train":
        o.pop("check_datalist_files") if wtype == "inference" else None
    if dims == 3:
        o.update({"batch_size": 1, "val_batch_size": 1})
        if bundle == "supervised":
            o["num_samples"] = 1
    if wtype != "train":
        for k in ("batch_size", "val_batch_size", "num_samples"):
            o.pop(k, None)
        if wtype == "eval" and bundle == "cotrain":
            o["val_batch_size"] = 1
    return o


def _make_checkpoints(target: str, tmp: Path, dims: int, in_channels: int) -> None:
    kind = TARGETS[target][5]
    if kind == "unet":
        fresh_unet(tmp / "models" / "model.pt", dims, in_channels)
    elif kind == "deployable":
        fresh_deployable(tmp / "models" / "model.pt", dims, in_channels)
    elif kind == "teacher":
        fresh_teacher(tmp / "phase" / "teacher.pt", dims, in_channels)
    if TARGETS[target][2] == "train" and kind != "deployable":  # a previous run's outputs that must survive
        fresh_unet(tmp / "models" / "previous_model.pt", dims, in_channels)
    (tmp / "out").mkdir(parents=True, exist_ok=True)
    (tmp / "out" / "previous_result.csv").write_text("case,dice\ncase_900,0.9\n")


def _run_workflow(target: str, overrides: dict[str, Any], dims: int) -> None:
    bundle, configs, wtype, *_ = TARGETS[target]
    names = configs + (["profile_3d"] if dims == 3 else [])
    files = [str(BUNDLES_DIR / bundle / "configs" / f"{n}.json") for n in names]
    wf = ConfigWorkflow(config_file=files, workflow_type=wtype, **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()


@pytest.mark.parametrize("target,case", [_param(t, c) for t, c in BUNDLE_CASES])
def test_bundle_bad_input(target: str, case: str, tiny_dataset_2d, tiny_dataset_3d, tmp_path: Path,
                          record_message) -> None:
    key = TARGETS[target][3]
    bundle_dims = 3 if case in ("2d_image_to_3d_bundle", "spacing_mismatch_3d") else 2
    if case == "3d_image_to_2d_bundle":
        data, in_channels = tiny_dataset_3d(num_cases=7, size=16, splits=SPLITS), 1
    elif case == "2d_image_to_3d_bundle":
        data, in_channels = tiny_dataset_2d(num_cases=7, size=16, in_channels=1, splits=SPLITS), 1
    elif bundle_dims == 3:
        data, in_channels = tiny_dataset_3d(num_cases=7, size=16, splits=SPLITS), 1
    else:
        data, in_channels = tiny_dataset_2d(num_cases=7, size=16, splits=SPLITS), 3
    _make_checkpoints(target, tmp_path, bundle_dims, in_channels)
    overrides = _overrides(target, data, tmp_path, bundle_dims, in_channels)
    if case == "missing_checkpoint":
        ck = tmp_path / "models" / "model.pt" if TARGETS[target][5] != "teacher" else tmp_path / "phase" / "teacher.pt"
        ck.unlink()
        names_file = re.escape(ck.name)
    elif case == "mismatched_checkpoint":
        ck = tmp_path / "models" / "model.pt" if TARGETS[target][5] != "teacher" else tmp_path / "phase" / "teacher.pt"
        if TARGETS[target][5] == "unet":
            from monai.networks.nets import UNet

            torch.save(UNet(2, 3, 2, channels=[8, 16, 32], strides=[2, 2], num_res_units=0).state_dict(), ck)
        elif TARGETS[target][5] == "deployable":
            from custom_components.networks import MaskPathwaySegmenter

            torch.save(MaskPathwaySegmenter(2, 3, 2, channels=[16, 32], norm_num_groups=4).state_dict(), ck)
        else:
            fresh_teacher(ck, 2, 3, channels=[16, 32])
        names_file = re.escape(ck.name)
    elif case == "output_dir_is_a_file":
        blocker = tmp_path / "out_is_a_file"
        blocker.write_text("not a folder")
        overrides["output_dir"] = str(blocker)
        names_file = re.escape(blocker.name)
    elif case == "ckpt_dir_is_a_file":
        blocker = tmp_path / "ckpt_is_a_file"
        blocker.write_text("not a folder")
        overrides["ckpt_dir"] = str(blocker)
        names_file = re.escape(blocker.name)
    else:
        # phase 1 needs no labels: an empty 'labeled' list is legal there, its required list is 'validation'
        required = "validation" if target.startswith("teacher_pretrain") else key
        names_file = _corrupt(case, data, key, bundle_dims, required)
    before = {d: tree_hash(tmp_path / d) for d in ("models", "out", "phase")}
    with pytest.raises(Exception) as err:  # noqa: PT011 - MONAI wraps errors of config expressions
        _run_workflow(target, overrides, bundle_dims)
    msg = full_message(err.value)
    record_message(msg)
    for d, h in before.items():
        assert_unchanged(h, tree_hash(tmp_path / d), d)
    assert re.search(names_file, msg), f"the error does not name the offending file ({names_file}): {msg}"
    assert re.search(BUNDLE_INPUTS[case], msg, re.IGNORECASE), f"the error does not name the problem: {msg}"


# ------------------------------------------------------------------------------------------------ disk full
def _enospc_save(real_save: Callable[..., Any]) -> Callable[..., Any]:
    """A ``torch.save`` that writes half of the bytes, then fails with ``ENOSPC`` (a full disk)."""

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        import io

        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        if hasattr(f, "write"):
            f.write(data[: len(data) // 2])
        else:
            Path(f).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_disk_full_while_writing_checkpoint_keeps_previous_files(tiny_dataset_2d, tmp_path: Path, monkeypatch,
                                                                 record_message) -> None:
    data = tiny_dataset_2d(num_cases=7, size=16, splits=SPLITS)
    overrides = _overrides("supervised/train", data, tmp_path, 2, 3)
    overrides["check_datalist_files"] = False
    _run_workflow("supervised/train", overrides, 2)
    models = tmp_path / "models"
    before = tree_hash(models)
    assert {"model.pt", "train_state.pt"} <= set(before)
    monkeypatch.setattr(torch, "save", _enospc_save(torch.save))
    with pytest.raises(Exception) as err:  # noqa: PT011
        _run_workflow("supervised/train", {**overrides, "max_epochs": 2}, 2)
    monkeypatch.undo()
    msg = full_message(err.value)
    record_message(msg)
    after = tree_hash(models)
    assert_unchanged({k: v for k, v in before.items() if not k.endswith(".prev")}, after, "models")
    assert not [k for k in after if k.endswith(".tmp")], f"temporary files left behind: {sorted(after)}"
    for name in ("model.pt", "train_state.pt"):
        load_weights_only(models / name)
    assert "No space left on device" in msg, msg
    assert re.search(r"model\.pt|train_state\.pt", msg), f"the error does not name the file being written: {msg}"


# ------------------------------------------------------------------------------------------ preparation scripts
def _rgb(h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _mask(h: int = 16, w: int = 16, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4:10, 4:12] = value
    return m


def _folder_2d(raw: Path, n: int = 2) -> tuple[Path, Path]:
    (raw / "im").mkdir(parents=True)
    (raw / "ma").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(_rgb(seed=i)).save(raw / "im" / f"c{i}.png")
        Image.fromarray(_mask(value=1)).save(raw / "ma" / f"c{i}.png")
    return raw / "im", raw / "ma"


def _ph2(raw: Path, cid: str = "IMD001", mask_hw: tuple[int, int] = (16, 16)) -> Path:
    d = raw / "PH2Dataset" / "PH2 Dataset images" / cid
    (d / f"{cid}_Dermoscopic_Image").mkdir(parents=True)
    (d / f"{cid}_lesion").mkdir()
    Image.fromarray(_rgb()).save(d / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp")
    Image.fromarray(_mask(*mask_hw)).save(d / f"{cid}_lesion" / f"{cid}_lesion.bmp")
    return d


def _glas(raw: Path, anno_hw: tuple[int, int] = (16, 16)) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb()).save(raw / "train_1.bmp")
    Image.fromarray(_mask(*anno_hw, value=1)).save(raw / "train_1_anno.bmp")


def _la(raw: Path, lab_shape: tuple[int, int, int] = (8, 8, 8)) -> Path:
    import h5py

    d = raw / "2018LA_Seg_Training Set" / "X"
    d.mkdir(parents=True)
    with h5py.File(d / "mri_norm2.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((8, 8, 8), np.float32))
        lab = np.zeros(lab_shape, np.uint8)
        lab[2:5, 2:5, 2:5] = 1
        f.create_dataset("label", data=lab)
    return d / "mri_norm2.h5"


def _split_datalist(path: Path, cases: list[dict] | None = None, text: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if text is not None:
        path.write_text(text)
    else:
        path.write_text(json.dumps({"name": "x", "num_classes": 2, "cases": cases or []}))
    return path


def _cases(n: int = 6) -> list[dict]:
    return [{"id": f"c{i}", "image": f"imagesTr/c{i}.png", "label": f"labelsTr/c{i}.png"} for i in range(n)]


def _script_setup(script: str, case: str, raw: Path, out: Path) -> tuple[list[str], str]:
    """Build the raw input of ``case`` for ``script``; return ``(argv, regex naming the offending file)``."""
    if script == "prepare_folder":
        im, ma = _folder_2d(raw)
        argv = ["--images", str(im), "--masks", str(ma), "--out", str(out)]
        if case == "truncated_image":
            raw_b = (im / "c0.png").read_bytes()
            (im / "c0.png").write_bytes(raw_b[: len(raw_b) // 2])
            return argv, r"c0\.png"
        if case == "wrong_extension":
            (ma / "c0.png").rename(ma / "c0.txt")
            return argv, r"c0"
        if case == "shape_mismatch":
            Image.fromarray(_mask(12, 16, 1)).save(ma / "c0.png")
            return argv, r"c0\.png"
        if case == "wrong_channel_count":
            Image.fromarray(_rgb(seed=5)[..., 0]).save(im / "c1.png")
            return argv, r"c1\.png|im\b"
        if case == "label_outside_classes":
            Image.fromarray(_mask(value=255)).save(ma / "c0.png")
            return argv, r"c0\.png"
        if case == "duplicate_cases":
            Image.fromarray(_rgb(seed=9)).save(im / "c0.bmp")
            return argv, r"c0\.(png|bmp)"
        if case == "spacing_mismatch_3d":
            for p in list(im.iterdir()) + list(ma.iterdir()):
                p.unlink()
            _write_3d(im / "v0.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
            _write_3d(ma / "v0.nii.gz", np.ones((8, 8, 8), np.uint8), spacing=(2.0, 2.0, 2.0))
            return argv, r"v0\.nii\.gz"
        if case == "3d_and_2d_mixed":
            _write_3d(im / "v0.nii.gz", np.zeros((8, 8, 8), np.float32))
            _write_3d(ma / "v0.nii.gz", np.zeros((8, 8, 8), np.uint8))
            return argv, r"v0\.nii\.gz|im\b"
        if case == "output_is_a_file":
            return argv, re.escape(out.name)
    if script == "prepare_ph2":
        d = _ph2(raw, mask_hw=(12, 16) if case == "shape_mismatch" else (16, 16))
        argv = [str(raw), str(out)]
        if case == "truncated_image":
            p = d / "IMD001_Dermoscopic_Image" / "IMD001.bmp"
            p.write_bytes(p.read_bytes()[:40])
            return argv, r"IMD001\.bmp"
        if case == "shape_mismatch":
            return argv, r"IMD001_lesion\.bmp"
        if case == "label_outside_classes":
            m = _mask()
            m[0, 0] = 128
            Image.fromarray(m).save(d / "IMD001_lesion" / "IMD001_lesion.bmp")
            return argv, r"IMD001_lesion\.bmp"
        if case == "output_is_a_file":
            return argv, re.escape(out.name)
    if script == "prepare_glas":
        _glas(raw, anno_hw=(12, 16) if case == "shape_mismatch" else (16, 16))
        argv = [str(raw), str(out)]
        if case == "truncated_image":
            (raw / "train_1.bmp").write_bytes((raw / "train_1.bmp").read_bytes()[:40])
            return argv, r"train_1\.bmp"
        if case == "shape_mismatch":
            return argv, r"train_1_anno\.bmp"
        if case == "output_is_a_file":
            return argv, re.escape(out.name)
    if script == "prepare_la":
        h5 = _la(raw, lab_shape=(8, 8, 7) if case == "shape_mismatch" else (8, 8, 8))
        argv = [str(raw), str(out)]
        if case == "truncated_image":
            h5.write_bytes(h5.read_bytes()[:100])
            return argv, r"mri_norm2\.h5"
        if case == "shape_mismatch":
            return argv, r"mri_norm2\.h5"
        if case == "label_outside_classes":
            import h5py

            with h5py.File(h5, "r+") as f:
                f["label"][0, 0, 0] = 7
            return argv, r"mri_norm2\.h5"
        if case == "output_is_a_file":
            return argv, re.escape(out.name)
    if script == "make_split":
        dl = raw / "datalist.json"
        argv = [str(dl), "--ratio", "0.5", "--seed", "0", "--out", str(out / "split.json")]
        if case == "malformed_datalist":
            _split_datalist(dl, text='{"cases": [')
            return argv, r"datalist\.json"
        if case == "empty_datalist":
            _split_datalist(dl, cases=[])
            return argv, r"datalist\.json"
        if case == "duplicate_cases":
            cases = _cases()
            cases.append(dict(cases[0]))
            _split_datalist(dl, cases=cases)
            return argv, r"c0"
        if case == "output_is_a_file":  # --out is a file path: its folder is an existing file
            _split_datalist(dl, cases=_cases())
            return [str(dl), "--ratio", "0.5", "--seed", "0", "--out", str(out / "split.json")], re.escape(out.name)
    raise ValueError((script, case))


SCRIPT_INPUTS: dict[str, str] = {
    "truncated_image": r"unreadable|truncated|corrupt",
    "wrong_extension": r"no mask|extension|format|unsupported|not supported",
    "shape_mismatch": r"size mismatch|shape mismatch",
    "spacing_mismatch_3d": r"spacing",
    "3d_and_2d_mixed": r"2D and 3D",
    "wrong_channel_count": r"channel",
    "label_outside_classes": r"values|class",
    "duplicate_cases": r"twice|duplicate",
    "malformed_datalist": r"malformed",
    "empty_datalist": r"no cases|empty",
    "output_is_a_file": r"File exists|Not a directory|not a directory|not writable",
}
SCRIPT_CASES: dict[str, list[str]] = {
    "prepare_folder": ["truncated_image", "wrong_extension", "shape_mismatch", "spacing_mismatch_3d",
                       "3d_and_2d_mixed", "wrong_channel_count", "label_outside_classes", "duplicate_cases",
                       "output_is_a_file"],
    "prepare_ph2": ["truncated_image", "shape_mismatch", "label_outside_classes", "output_is_a_file"],
    "prepare_glas": ["truncated_image", "shape_mismatch", "output_is_a_file"],
    "prepare_la": ["truncated_image", "shape_mismatch", "label_outside_classes", "output_is_a_file"],
    "make_split": ["malformed_datalist", "empty_datalist", "duplicate_cases", "output_is_a_file"],
}
#: (script, input) -> the bug (strict xfail)
SCRIPT_XFAIL: dict[tuple[str, str], str] = {}


def _sparam(s: str, c: str) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=SCRIPT_XFAIL[(s, c)])] if (s, c) in SCRIPT_XFAIL else []
    return pytest.param(s, c, id=f"{s}-{c}", marks=marks)


@pytest.mark.parametrize("script,case", [_sparam(s, c) for s, cs in SCRIPT_CASES.items() for c in cs])
def test_script_bad_input(script: str, case: str, tmp_path: Path, record_message) -> None:
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    if case == "output_is_a_file":
        out = tmp_path / "out_is_a_file"
        out.write_text("not a folder")
    else:  # a previously prepared dataset the failed run must leave intact
        (out / "imagesTr").mkdir(parents=True)
        (out / "labelsTr").mkdir(parents=True)
        for stem in ("c0", "c1", "IMD001", "train_1", "X", "v0"):
            for sub in ("imagesTr", "labelsTr"):
                Image.fromarray(_mask(value=1)).save(out / sub / f"{stem}.png")
        (out / "datalist.json").write_text(json.dumps({"name": "previous", "cases": []}))
        (out / "splits").mkdir()
        (out / "splits" / "old.json").write_text("{}")
    argv, names_file = _script_setup(script, case, raw, out)
    before = tree_hash(out) if out.is_dir() else {"<file>": out.read_text()}
    main = load_script(script).main
    with pytest.raises((Exception, SystemExit)) as err:  # noqa: PT011
        main(argv)
    msg = full_message(err.value)
    record_message(msg)
    after = tree_hash(out) if out.is_dir() else {"<file>": out.read_text()}
    assert_unchanged(before, after, str(out))
    assert re.search(names_file, msg), f"the error does not name the offending file ({names_file}): {msg}"
    assert re.search(SCRIPT_INPUTS[case], msg, re.IGNORECASE), f"the error does not name the problem: {msg}"

"""What a person sees: each user mistake ends the output of the real command line with the file and the problem.

``test_bad_inputs.py`` checks the exception chains in-process; this module runs the commands a user types
(``python -m monai.bundle run ...``, ``python scripts/...``) and asserts on the **last lines** of their combined
output and on the exit status: a bundle prints MONAI's traceback and then repeats the user error
(``custom_components.errors.install_excepthook``); a script prints one ``error:`` line, no traceback, exit 2
(``custom_components.errors.run_cli``). Each case starts a Python process (~5-15 s); two run in the default suite,
the rest are ``slow``.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rel_helpers import REPO, TINY_DIFFUSION, assert_unchanged, bundle_command, copy_bundle, run_to_end, tree_hash


def _last_lines(text: str, n: int = 3) -> str:
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-n:])


def _script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / f"{name}.py"), *args]


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)


def _inference(tmp_path: Path, input_dir: Path, **extra) -> list[str]:
    b = copy_bundle("cotrain", tmp_path / "bundle")
    return bundle_command(b, ["inference"], {**TINY_DIFFUSION, "roi_size": [16, 16], "input_dir": str(input_dir),
                                             "output_dir": str(tmp_path / "pred"), **extra})


def _train(tmp_path: Path, data: Path, **extra) -> list[str]:
    b = copy_bundle("cotrain", tmp_path / "bundle")
    return bundle_command(b, ["train"], {**TINY_DIFFUSION, "roi_size": [16, 16], "dataset_dir": str(data),
                                         "max_epochs": 1, "teacher_ckpt": "", **extra})


def _case_input_dir_missing(tmp_path, tiny_dataset_2d):
    return _inference(tmp_path, tmp_path / "no_such_folder"), [r"no_such_folder", r"does not exist"]


def _case_input_dir_without_images(tmp_path, tiny_dataset_2d):
    (tmp_path / "scans").mkdir()
    Image.fromarray(_rgb()).save(tmp_path / "scans" / "a.jpg")
    return _inference(tmp_path, tmp_path / "scans"), [r"scans", r"holds no '\*\.png' image file", r"--image_ext \.jpg"]


def _case_truncated_image(tmp_path, tiny_dataset_2d):
    d = tmp_path / "new"
    _png(d / "a.png", _rgb(1))
    raw = _png(d / "b.png", _rgb(2)).read_bytes()
    (d / "b.png").write_bytes(raw[: len(raw) // 2])
    return _inference(tmp_path, d), [r"b\.png", r"unreadable or truncated"]


def _case_wrong_channel_count(tmp_path, tiny_dataset_2d):
    d = tmp_path / "new"
    _png(d / "a.png", _rgb(1))
    _png(d / "grey.png", _rgb(2)[..., 0])
    return _inference(tmp_path, d), [r"grey\.png", r"wrong channel count, 1 channel\(s\) where 3 expected",
                                     r"convert this image to 3 channel\(s\)", r"--in_channels must stay 3"]


def _case_dataset_dir_without_datalist(tmp_path, tiny_dataset_2d):
    d = tmp_path / "new"
    _png(d / "a.png", _rgb(1))
    b = copy_bundle("cotrain", tmp_path / "bundle")
    cmd = bundle_command(b, ["inference"], {**TINY_DIFFUSION, "roi_size": [16, 16], "dataset_dir": str(d),
                                            "output_dir": str(tmp_path / "pred")})
    return cmd, [r"new/datalist\.json: datalist file not found", r"pass --input_dir .*new --output_dir OUT"]


def _case_teacher_ckpt_is_a_folder(tmp_path, tiny_dataset_2d):
    data = tiny_dataset_2d(num_cases=6, size=16)
    (tmp_path / "phase1" / "models").mkdir(parents=True)
    return _train(tmp_path, data, teacher_ckpt=str(tmp_path / "phase1")), [r"phase1", r"is a folder, not a checkpoint"]


def _case_prepared_datalist_instead_of_split(tmp_path, tiny_dataset_2d):
    data = tiny_dataset_2d(num_cases=6, size=16)
    dl = json.loads((data / "datalist.json").read_text())
    cases = [e for k in ("labeled", "validation", "test") for e in dl[k]]
    prepared = {k: dl[k] for k in ("num_classes", "spatial_dims", "in_channels") if k in dl} | {"cases": cases}
    (data / "dataset.json").write_text(json.dumps(prepared))
    cmd = _train(tmp_path, data, datalist=str(data / "dataset.json"))
    return cmd, [r"dataset\.json", r"not a split: run 'python scripts/make_split\.py"]


def _case_in_channels_not_matching_data(tmp_path, tiny_dataset_2d):
    data = tiny_dataset_2d(num_cases=6, size=16, in_channels=1)  # its datalist records in_channels 1
    return _train(tmp_path, data), [r"case_\d+\.png", r"wrong channel count, 1 channel\(s\) where 3 expected",
                                    r"datalist records in_channels=1: pass --in_channels 1"]


def _case_prepare_folder_missing_mask(tmp_path, tiny_dataset_2d):
    _png(tmp_path / "im" / "a.png", _rgb())
    _png(tmp_path / "im" / "b.png", _rgb(1))
    _png(tmp_path / "ma" / "a.png", np.zeros((16, 16), np.uint8))
    cmd = _script("prepare_folder", "--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"),
                  "--out", str(tmp_path / "out"))
    return cmd, [r"prepare_folder\.py: error: .*im/b\.png: no mask 'b\.\*'", r"--no-mask-as-unlabeled"]


def _case_make_split_without_validation(tmp_path, tiny_dataset_2d):
    cases = [{"image": f"imagesTr/c{i}.png", "label": f"labelsTr/c{i}.png"} for i in range(6)]
    (tmp_path / "datalist.json").write_text(json.dumps({"cases": cases}))
    cmd = _script("make_split", str(tmp_path / "datalist.json"), "--ratio", "1.0", "--val-fraction", "0")
    return cmd, [r"make_split\.py: error: .*datalist\.json: make_split: the split has no validation case"]


def _case_nonfinite_image_at_inference(tmp_path, tiny_dataset_2d):
    d = tmp_path / "new"
    d.mkdir()
    Image.fromarray(np.ones((16, 16), np.float32), mode="F").save(d / "a.tif")
    bad = np.ones((16, 16), np.float32)
    bad[3, :10] = np.nan
    Image.fromarray(bad, mode="F").save(d / "b.tif")
    cmd = _inference(tmp_path, d, image_ext=".tif", in_channels=1)
    return cmd, [r"b\.tif: 10 non-finite voxel\(s\) \(NaN or Inf\)"]


def _case_ckpt_dir_is_a_file(tmp_path, tiny_dataset_2d):
    data = tiny_dataset_2d(num_cases=6, size=16)
    (tmp_path / "ckpt_is_a_file").write_text("not a folder")
    return _train(tmp_path, data, ckpt_dir=str(tmp_path / "ckpt_is_a_file")), [
        r"ERROR \(FileExistsError\): '.*ckpt_is_a_file': a file is in the way"]


def _case_prepare_folder_nonfinite(tmp_path, tiny_dataset_2d):
    (tmp_path / "im").mkdir()
    img = np.ones((16, 16), np.float32)
    img[0, 0] = np.inf
    Image.fromarray(img, mode="F").save(tmp_path / "im" / "a.tif")
    _png(tmp_path / "ma" / "a.png", np.eye(16, dtype=np.uint8))
    cmd = _script("prepare_folder", "--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"),
                  "--out", str(tmp_path / "out"))
    return cmd, [r"prepare_folder\.py: error: .*im/a\.tif: 1 non-finite voxel\(s\)"]


CASES = {
    "input_dir_missing": _case_input_dir_missing,
    "input_dir_without_images": _case_input_dir_without_images,
    "truncated_image_at_inference": _case_truncated_image,
    "wrong_channel_count_at_inference": _case_wrong_channel_count,
    "dataset_dir_without_datalist": _case_dataset_dir_without_datalist,
    "teacher_ckpt_is_a_folder": _case_teacher_ckpt_is_a_folder,
    "prepared_datalist_instead_of_split": _case_prepared_datalist_instead_of_split,
    "in_channels_not_matching_data": _case_in_channels_not_matching_data,
    "prepare_folder_missing_mask": _case_prepare_folder_missing_mask,
    "make_split_without_validation": _case_make_split_without_validation,
    "nonfinite_image_at_inference": _case_nonfinite_image_at_inference,
    "ckpt_dir_is_a_file": _case_ckpt_dir_is_a_file,
    "prepare_folder_nonfinite": _case_prepare_folder_nonfinite,
}
DEFAULT_SUITE = ("input_dir_missing", "prepare_folder_missing_mask", "dataset_dir_without_datalist")


@pytest.mark.parametrize("case", [pytest.param(c, marks=[] if c in DEFAULT_SUITE else [pytest.mark.slow])
                                  for c in CASES])
def test_user_error_is_the_last_thing_printed(case, tmp_path, tiny_dataset_2d, record_message):
    cmd, patterns = CASES[case](tmp_path, tiny_dataset_2d)
    pred = tmp_path / "pred"
    pred.mkdir(exist_ok=True)
    (pred / "earlier_seg.png").write_bytes(b"an output of an earlier run")
    before = tree_hash(pred)
    rc, out = run_to_end(cmd, tmp_path / "run.log")
    tail = _last_lines(out)
    record_message(tail)
    assert rc == 2, out[-2000:]  # user errors and actionable faults: exit status 2 (bundles and scripts)
    for p in patterns:
        assert any(re.search(p, ln) for ln in tail.splitlines()), f"{p!r} not in the last lines:\n{tail}"
    if "scripts" in cmd[1]:
        assert rc == 2 and "Traceback" not in out, out[-2000:]
    assert_unchanged(before, tree_hash(pred), "pred")  # nothing already written is lost


def test_excepthook_repeats_the_innermost_user_error_last(monkeypatch):
    """The hook keeps the previous hook's traceback and then prints the user error; other errors are untouched."""
    import custom_components.errors as errors_mod
    from custom_components.data.datalist import DatalistError
    from custom_components.errors import _excepthook, find_user_error

    exits = []
    monkeypatch.setattr(errors_mod, "_exit", exits.append)
    calls = []
    hook = _excepthook(lambda *a: calls.append(a))
    try:
        try:
            raise DatalistError("x.png: wrong channel count")
        except DatalistError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
    except RuntimeError as wrapped:
        err = io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        hook(type(wrapped), wrapped, wrapped.__traceback__)
    assert calls and err.getvalue().strip().splitlines()[-1] == "ERROR (DatalistError): x.png: wrong channel count"
    assert exits == [2]
    assert find_user_error(ValueError("a bug")) is None
    err.truncate(0)
    hook(ValueError, ValueError("a bug"), None)
    assert err.getvalue().strip() == "" and exits == [2]  # a bug: Python's own status 1
    from custom_components.errors import install_excepthook

    def previous(*a):
        return None

    monkeypatch.setattr(sys, "excepthook", previous)  # e.g. torch.distributed wraps the hook in-process
    install_excepthook()
    installed = sys.excepthook
    assert installed is not previous and getattr(installed, "custom_components_user_errors", False)
    install_excepthook()
    assert sys.excepthook is installed  # idempotent: not wrapped twice


def _wrapped(exc: BaseException) -> RuntimeError:
    """``exc`` inside two MONAI-like ``Failed to evaluate ConfigExpression`` wrappers."""
    try:
        try:
            try:
                raise exc
            except BaseException as e:
                raise RuntimeError("Failed to evaluate ConfigExpression: $torch.save(...)") from e
        except RuntimeError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression: $@evaluator.run()") from e
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("exc, expected", [
    (PermissionError(13, "Permission denied", "/run/models/.model.pt.x1.tmp"),
     "ERROR (PermissionError): '/run/models/.model.pt.x1.tmp': permission denied: make it writable or choose "
     "another folder (--output_dir / --ckpt_dir)."),
    (OSError(28, "No space left on device"),
     "ERROR (OSError): [Errno 28] No space left on device: disk full (no space left on device): free space or write "
     "to another disk, then rerun the same command."),
    (OSError(30, "Read-only file system", "/ro/pred"), "ERROR (OSError): '/ro/pred': read-only file system"),
    (ConnectionRefusedError(111, "refused"), None),
])
def test_excepthook_names_actionable_os_faults_last(monkeypatch, exc, expected):
    """Unwritable path, disk full, read-only disk: the path and the advice are the last line, exit status 2; an
    OSError a person cannot act on is left to Python (status 1)."""
    import custom_components.errors as errors_mod

    exits, err = [], io.StringIO()
    monkeypatch.setattr(errors_mod, "_exit", exits.append)
    monkeypatch.setattr(sys, "stderr", err)
    outer = _wrapped(exc)
    errors_mod._excepthook(lambda *a: None)(type(outer), outer, outer.__traceback__)
    if expected is None:
        assert exits == [] and err.getvalue() == ""
    else:
        assert err.getvalue().strip().splitlines()[-1].startswith(expected) and exits == [2]


def test_actionable_fault_in_a_real_process_exits_2(tmp_path):
    """The installed hook in a real interpreter: traceback first, the path last, exit status 2."""
    import subprocess

    code = ("import custom_components, errno\n"
            "try:\n"
            "    raise OSError(errno.ENOSPC, 'No space left on device', '/data/run/models/train_state.pt')\n"
            "except OSError as e:\n"
            "    raise RuntimeError('Failed to evaluate ConfigExpression: $@trainer.run()') from e\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert _last_lines(proc.stderr, 1).startswith("ERROR (OSError): '/data/run/models/train_state.pt': disk full")


def test_run_cli_turns_actionable_os_errors_into_one_line(capsys):
    from custom_components.errors import run_cli

    def main(argv):
        raise PermissionError(13, "Permission denied", "/data/out/imagesTr")

    assert run_cli(main, []) == 2
    assert "error: '/data/out/imagesTr': permission denied" in capsys.readouterr().err

    def bug(argv):
        raise ConnectionResetError(104, "reset")

    with pytest.raises(ConnectionResetError):
        run_cli(bug, [])

"""Runtime faults a user can act on end the real command line with their cause (issue 28), exit status 2.

- a checkpoint folder that becomes unwritable during training: the last lines say "cannot write checkpoint",
  name the folder and keep the previous files loadable;
- a non-finite loss: the last lines name the batch's image files and the last finite loss.

Permission bits cannot make a folder unwritable for root (CI runs as root), so the first test starts the bundle
through a small launcher that makes every file creation in the checkpoint folder fail with ``EACCES`` once the
first ``train_state.pt`` exists, which is what ``chmod a-w`` does for another user.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from rel_helpers import TINY_SUPERVISED, bundle_command, copy_bundle, load_weights_only, run_to_end, tree_hash

SPLITS = {"labeled": 4, "unlabeled": 2, "validation": 1, "test": 1}

_LAUNCHER = '''
import errno, os, runpy, sys
folder = os.path.abspath(sys.argv.pop(1))
real_open = os.open

def guarded_open(path, flags, *args, **kwargs):
    target = os.path.abspath(os.fspath(path))
    started = os.path.exists(os.path.join(folder, "train_state.pt"))
    if flags & os.O_CREAT and os.path.dirname(target) == folder and started:
        raise PermissionError(errno.EACCES, "Permission denied", target)
    return real_open(path, flags, *args, **kwargs)

os.open = guarded_open
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
'''


def _last_lines(text: str, n: int = 3) -> str:
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-n:])


def _train_command(tmp_path: Path, data: Path, **extra) -> list[str]:
    b = copy_bundle("supervised", tmp_path / "bundle")
    overrides = {**TINY_SUPERVISED, "dataset_dir": str(data), "ckpt_dir": str(tmp_path / "models"),
                 "output_dir": str(tmp_path / "eval"), "roi_size": [16, 16], "batch_size": 2, "val_interval": 1,
                 "check_datalist_files": False, **extra}
    return bundle_command(b, ["train"], overrides)


def test_unwritable_checkpoint_folder_is_named_in_the_last_lines(tiny_dataset_2d, tmp_path: Path,
                                                                  record_message) -> None:
    data = tiny_dataset_2d(num_cases=8, size=16, splits=SPLITS)
    models = tmp_path / "models"
    launcher = tmp_path / "launch_unwritable.py"
    launcher.write_text(_LAUNCHER)
    cmd = _train_command(tmp_path, data, max_epochs=3)
    rc, out = run_to_end([sys.executable, str(launcher), str(models), *cmd[3:]], tmp_path / "run.log")
    last = _last_lines(out, 1)
    record_message(last)
    assert rc == 2, out[-3000:]
    assert last.startswith("ERROR (FileWriteError): cannot write checkpoint"), last
    assert re.search(rf"checkpoint {re.escape(str(models))}/\S+\.pt \(Permission denied\)", last), last
    assert f"The folder {models} is not writable" in last, last
    files = tree_hash(models)
    assert not [k for k in files if k.endswith(".tmp") or k.startswith("tmp")], f"temporary files left: {files}"
    state = load_weights_only(models / "train_state.pt")
    trainer = state["trainer"]
    assert trainer["iteration"] == trainer["epoch_length"], "the checkpoint of epoch 1 must be intact"
    load_weights_only(models / "model.pt")


_NAN_LAUNCHER = '''
import runpy, sys
sys.path.insert(0, sys.argv.pop(1))  # rel_helpers.NaNAfterLoss
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
'''


def test_nan_loss_names_the_batch_files_and_the_last_finite_loss(tiny_dataset_2d, tmp_path: Path,
                                                                 record_message) -> None:
    data = tiny_dataset_2d(num_cases=8, size=16, splits=SPLITS)
    launcher = tmp_path / "launch_nan.py"
    launcher.write_text(_NAN_LAUNCHER)
    cmd = _train_command(tmp_path, data, max_epochs=2,
                         loss={"_target_": "rel_helpers.NaNAfterLoss", "nan_from_call": 2})
    rc, out = run_to_end([sys.executable, str(launcher), str(Path(__file__).parent), *cmd[3:]], tmp_path / "run.log")
    last = _last_lines(out, 1)
    record_message(last)
    assert rc == 2, out[-3000:]
    m = re.fullmatch(r"ERROR \(NonFiniteLossError\): Non-finite loss at epoch 1, iteration 2: (.*)\. Training stopped; "
                     r"no checkpoint of this state was written\. Batch files: (.*)\. Last finite loss: (.*)\. Check .*",
                     last)
    assert m, last
    assert re.search(r"(^|, )loss(\[\d+\])?=nan", m.group(1)), last
    labeled = json.loads((data / "datalist.json").read_text())["labeled"]
    paths = {str((data / e["image"]).resolve()) for e in labeled}
    named = m.group(2).split(", ")
    assert len(named) == 2 and set(named) <= paths, f"{named} are not two labelled images of {sorted(paths)}"
    assert re.fullmatch(r"loss(\[0\])?=\d+\.\d+(e-?\d+)? at iteration 1", m.group(3)), last
    assert not (tmp_path / "models" / "train_state.pt").exists(), "the broken state must not be written"

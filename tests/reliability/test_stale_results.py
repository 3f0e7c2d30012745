"""Stale results can not pass for new ones (issue 28): a training bundle rerun in a finished folder with another
datalist, re-prepared data or other settings refuses, naming what differs; the same command is still "done"."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow
from rel_helpers import BUNDLES_DIR, TINY_SUPERVISED, root_cause

from custom_components.runtime.rerun import RUN_RECORD, RerunError


def _train(data: Path, tmp: Path, **extra) -> None:
    overrides = {**TINY_SUPERVISED, "dataset_dir": str(data), "ckpt_dir": str(tmp / "models"),
                 "output_dir": str(tmp / "eval"), "roi_size": [16, 16], "batch_size": 2, "max_epochs": 1,
                 "val_interval": 1, **extra}
    wf = ConfigWorkflow(config_file=str(BUNDLES_DIR / "supervised" / "configs" / "train.json"),
                        workflow_type="train", **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()


def test_finished_supervised_run_rerun_with_another_datalist_refuses(tiny_dataset_2d, tmp_path):
    splits = {"labeled": 4, "unlabeled": 0, "validation": 1, "test": 1}
    data = tiny_dataset_2d(num_cases=6, size=16, splits=splits)
    _train(data, tmp_path)
    models = tmp_path / "models"
    assert (models / "train_state.pt").is_file() and (models / RUN_RECORD).is_file()
    model = (models / "model.pt").read_bytes()
    _train(data, tmp_path)  # the same command: nothing to do, no refusal
    other = tmp_path / "other_data"
    shutil.copytree(data, other)
    with pytest.raises(Exception) as info:
        _train(other, tmp_path)
    err = root_cause(info.value)
    assert isinstance(err, RerunError), repr(err)
    assert "datalist: was" in str(err) and "other_data/datalist.json" in str(err) and "--ckpt_dir NEW" in str(err)
    img = data / "imagesTr" / sorted(p.name for p in (data / "imagesTr").iterdir())[0]
    img.write_bytes(img.read_bytes())  # re-prepared in place: same bytes, new modification time
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    with pytest.raises(Exception) as info:
        _train(data, tmp_path, max_epochs=2)
    assert "the data: 1 file(s) listed in" in str(root_cause(info.value))
    assert (models / "model.pt").read_bytes() == model  # the earlier result is untouched

"""The semi-supervised baselines as override files of the supervised bundle (``configs/methods/*.json``): every
baseline passes ``check_properties`` and trains through ``python -m monai.bundle run`` (2D; a 3D smoke test),
writing the supervised bundle's ``models/model.pt`` + ``model_selection.json`` that its evaluate.json reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from custom_components.engines import SemiSupervisedTrainer
from custom_components.experiments.methods import METHODS

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "supervised" / "configs"
TINY = {
    "network_def#channels": [4, 8, 16],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 0,
    "num_workers": 0,
    "check_datalist_files": False,
    "max_epochs": 2,
    "val_interval": 1,
    "batch_size": 2,
    "mc_samples": 2,
}
BASELINES = [m for m in METHODS.values() if m.bundle == "supervised" and m.overrides]


def files(method, dims: int = 2) -> list[str]:
    names = ["train.json", *(["profile_3d.json"] if dims == 3 else []), *method.overrides]
    return [str(CONFIGS / n) for n in names]


def overrides(data: Path, out: Path, dims: int = 2) -> dict:
    ids = {**TINY, "dataset_dir": str(data), "output_dir": str(out / "eval"), "ckpt_dir": str(out / "models")}
    ids.update({"roi_size": [16, 16]} if dims == 2 else {"roi_size": [16, 16, 16], "num_samples": 1,
                                                       "val_batch_size": 1, "batch_size": 1, "max_epochs": 1})
    return ids


def test_every_baseline_is_registered_with_its_override_files() -> None:
    names = {m.name for m in BASELINES}
    assert {"mean_teacher", "cps", "uamt", "bcp", "unimatch"} <= names
    for m in BASELINES:
        assert all((CONFIGS / f).is_file() for f in m.overrides), m.name


@pytest.mark.parametrize("method", BASELINES, ids=lambda m: m.name)
def test_baseline_properties_and_bundle_run_2d(method, tiny_dataset_2d, tmp_path) -> None:
    data = tiny_dataset_2d(num_cases=8, size=24, splits={"labeled": 2, "unlabeled": 3, "validation": 2, "test": 1})
    ids = overrides(data, tmp_path)
    wf = ConfigWorkflow(config_file=files(method), workflow_type="train", **ids)
    wf.initialize()
    assert wf.check_properties() == []
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(files(method))]
    for k, v in ids.items():
        cmd += [f"--{k}", json.dumps(v)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    model = tmp_path / "models" / "model.pt"
    sel = json.loads((tmp_path / "models" / "model_selection.json").read_text())
    assert model.is_file() and sel["epoch"] >= 1
    # the supervised bundle's own network loads the selected weights
    net = ConfigWorkflow(config_file=[str(CONFIGS / "train.json")], workflow_type="train", **ids)
    net.initialize()
    net.parser.get_parsed_content("network_def").load_state_dict(torch.load(model, weights_only=True))
    state = torch.load(tmp_path / "models" / "train_state.pt", weights_only=False)
    if "mean_teacher.json" in " ".join(method.overrides):
        assert "ema_network" in json.dumps(list(state)) or any("ema" in k for k in state)


@pytest.mark.parametrize("name", [m.name for m in BASELINES])
def test_baseline_3d_smoke(name, tiny_dataset_3d, tmp_path) -> None:
    method = METHODS[name]
    data = tiny_dataset_3d(num_cases=6, size=16, splits={"labeled": 2, "unlabeled": 2, "validation": 1, "test": 1})
    ids = overrides(data, tmp_path, dims=3)
    wf = ConfigWorkflow(config_file=files(method, 3), workflow_type="train", **ids)
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert isinstance(trainer, SemiSupervisedTrainer) and type(trainer) is not SemiSupervisedTrainer
    assert trainer.state.iteration >= 1 and torch.isfinite(trainer.state.output["loss"])
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()

"""``multi_gpu_train.json`` of the co-training and teacher-pretraining bundles under ``torchrun`` (2 CPU processes,
gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"

TINY = {
    "channels": [4, 8],
    "norm_num_groups": 2,
    "roi_size": [16, 16],
    "batch_size": 2,
    "num_workers": 0,
    "max_epochs": 1,
    "val_interval": 1,
    "seed": 0,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(bundle: str, overrides: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    override_file = tmp_path / "override.json"
    override_file.write_text(json.dumps(overrides))
    configs = ([str(BUNDLES / bundle / "configs" / n) for n in ("train.json", "multi_gpu_train.json")]
               + [str(override_file)])
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", "-m", "monai.bundle", "run", "--config_file", repr(configs),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _check_state_dict(path: Path) -> dict:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    keys = list(sd) if isinstance(sd, dict) else []
    assert keys and all(isinstance(v, torch.Tensor) for v in sd.values()), f"{path.name} is not a state dict"
    assert not [k for k in keys if "module." in k], f"{path.name} has DDP 'module.' prefixes"
    return sd


def test_cotrain_multi_gpu_two_cpu_processes(tiny_dataset_2d, tmp_path):
    data = tiny_dataset_2d(num_cases=12, size=16)
    ckpt = tmp_path / "models"
    overrides = dict(TINY, dataset_dir=str(data), ckpt_dir=str(ckpt), output_dir=str(tmp_path / "eval"),
                     teacher_ckpt="", rounds=1, cache_rate=0.0)
    proc = _torchrun("cotrain", overrides, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    written = sorted(p.name for p in ckpt.glob("model*.pt"))
    assert written == ["model.pt"], written
    model = _check_state_dict(ckpt / "model.pt")
    assert any(k.startswith("mask_net.") for k in model) and "fg_logit_offset" not in model
    teacher = _check_state_dict(ckpt / "teacher.pt")
    assert any(k.startswith("mask_net.") for k in teacher) and any(k.startswith("image_net.") for k in teacher)
    state = torch.load(ckpt / "train_state.pt", map_location="cpu", weights_only=True)
    for name in ("teacher", "student"):
        assert not [k for k in state[name] if "module." in k], f"train_state.pt[{name}] has 'module.' prefixes"
    # the checkpoint loads into a plain single-process teacher
    from custom_components.networks import DiffusionTeacher

    net = DiffusionTeacher(2, 3, 2, channels=TINY["channels"], norm_num_groups=TINY["norm_num_groups"])
    net.load_state_dict(teacher)


def test_teacher_pretrain_multi_gpu_two_cpu_processes(tiny_dataset_2d, tmp_path):
    data = tiny_dataset_2d(num_cases=12, size=16)
    ckpt = tmp_path / "models"
    overrides = dict(TINY, dataset_dir=str(data), ckpt_dir=str(ckpt), output_dir=str(tmp_path / "eval"),
                     cache_rate=0.0)
    proc = _torchrun("teacher_pretrain", overrides, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    teacher = _check_state_dict(ckpt / "teacher.pt")
    assert any(k.startswith("mask_net.") for k in teacher)


@pytest.mark.parametrize("bundle", ["cotrain", "teacher_pretrain"])
def test_multi_gpu_config_outside_torchrun_fails_clearly(bundle, tiny_dataset_2d, tmp_path, monkeypatch):
    from monai.bundle import ConfigWorkflow

    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    data = tiny_dataset_2d(num_cases=12, size=16)
    cfgs = [str(BUNDLES / bundle / "configs" / n) for n in ("train.json", "multi_gpu_train.json")]
    wf = ConfigWorkflow(config_file=cfgs, workflow_type="train", dataset_dir=str(data), ckpt_dir=str(tmp_path / "m"),
                        output_dir=str(tmp_path / "e"), teacher_ckpt="", **TINY)
    with pytest.raises(RuntimeError) as err:
        wf.initialize()
    chain, e = [], err.value
    while e is not None:  # MONAI wraps the expression's error: look through the cause chain
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any("torchrun" in m and "RANK" in m for m in chain), chain

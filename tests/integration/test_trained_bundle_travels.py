"""A bundle trained by the runner travels: copied to a new folder, it runs inference on new images, exports to
TorchScript (MONAI ``ckpt_export`` and ``scripts/export_model.py``) and ONNX with parity at two input sizes other
than the training size, and passes ``verify_bundle.py`` and MONAI's ``verify_metadata`` - every command without a
setting override (issue 12)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "custom_components" / "bundle_tools" / "schema" / "metadata.schema.json"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} (in {cwd}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_runner_trained_cotrain_bundle_travels(tmp_path):
    from custom_components.bundle_tools.export import build_bundle_network, check_parity
    from custom_components.data import make_synthetic_dataset

    # train with non-default settings (1 grey channel, 16x16, a 2-level backbone) through the runner
    dl = make_synthetic_dataset(tmp_path / "syn", num_cases=16, image_size=16, in_channels=1, seed=0)
    _run([sys.executable, str(ROOT / "scripts" / "run_experiments.py"), "--dataset", str(dl), "--name", "tiny",
          "--work-dir", str(tmp_path / "wd"), "--results-dir", str(tmp_path / "res"), "--methods", "cps_diffusion",
          "--ratios", "0.5", "--seeds", "0", "--num-qualitative", "1", "--override", "*:max_epochs=1",
          "--override", "*:roi_size=[16,16]", "--override", "cotrain:epoch_length=2",
          "--override", "cotrain:channels=[8,16]", "--override", "cotrain:norm_num_groups=4",
          "--override", "cotrain:num_workers=0"], ROOT)
    trained = tmp_path / "wd" / "tiny" / "cps_diffusion" / "r0.5_s0" / "cotrain"
    assert (trained / "models" / "model.pt").is_file()

    # ... copied as it is to a new place
    bundle = tmp_path / "received" / "cotrain"
    shutil.copytree(trained, bundle)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == ["2*n", "2*n"]
    assert meta["version"] in meta["changelog"] and meta["version"] != "0.1.0"

    # new images (another size than the training one), inference with no override but the data
    new = make_synthetic_dataset(tmp_path / "new", num_cases=3, image_size=24, in_channels=1, seed=7)
    d = json.loads(new.read_text())
    d["test"] = d["cases"]
    new.write_text(json.dumps(d))
    _run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
          "--dataset_dir", str(new.parent)], bundle)
    preds = sorted((bundle / "eval" / "predictions").glob("*_seg.png"))
    assert len(preds) == 3

    # MONAI's own export command, then parity of TorchScript against eager at two sizes other than 16x16
    _run([sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", "models/model.ts",
          "--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json",
          "--config_file", "configs/inference.json", "--use_trace", "True"], bundle)
    eager = build_bundle_network(bundle)
    inputs = [torch.rand(1, 1, 24, 24), torch.rand(2, 1, 32, 20)]
    assert check_parity(eager, bundle / "models" / "model.ts", inputs, atol=1e-4) < 1e-4

    # the project's export script: TorchScript and ONNX, each checked at two sizes besides the traced one
    out = _run([sys.executable, str(ROOT / "scripts" / "export_model.py"), str(bundle), "--format", "torchscript",
                "onnx"], ROOT).stdout
    assert "torchscript:" in out and "onnx:" in out
    assert check_parity(eager, bundle / "models" / "model.onnx", inputs, atol=1e-4) < 1e-4

    # verification, offline, with the schema kept in the repository
    _run([sys.executable, str(ROOT / "scripts" / "verify_bundle.py"), str(bundle), "--no-manifest", "--strict"], ROOT)
    _run([sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json",
          "--filepath", str(SCHEMA)], bundle)
    _run([sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
          "configs/metadata.json", "--config_file", "configs/inference.json"], bundle)

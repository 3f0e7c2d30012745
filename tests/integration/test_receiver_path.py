"""The receiver's path of docs/sharing.md, run exactly as written on runner-trained folders (issue 28, part 5).

The experiment runner trains a tiny ``cps_diffusion`` (cotrain) or ``supervised`` run (2D PNG, or 3D NIfTI on a 16^3
volume); the sender packages the trained folder with ``scripts/package_bundle.py``; the runner's work folders and
the dataset are deleted; then the receiver's commands: ``verify_bundle.py`` on the package (no
``--accept-review``), one predict command from outside the folder on a plain folder of new images, MONAI's
zoo-default ``ckpt_export`` (no ``--use_trace``: it works for the UNet baseline, and stops with one line saying
to pass ``--use_trace True`` for the diffusion network, which then exports). Finally no file of the received
folder holds a path of the trainer's machine. The 2D cotrain case runs in the default suite, the rest is ``slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TINY = {  # runner overrides: tiny networks, one short epoch
    "cps_diffusion": ["*:max_epochs=1", "cotrain:epoch_length=2", "cotrain:channels=[8,16]",
                      "cotrain:norm_num_groups=4", "*:num_workers=0"],
    "supervised": ["*:max_epochs=1", "supervised:epoch_length=2", "supervised:channels=[4,8,16,32]",
                   "*:num_workers=0"],
}
PHASE = {"cps_diffusion": "cotrain", "supervised": "supervised"}


def _run(cmd: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, f"{' '.join(cmd)} (in {cwd}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _train_with_runner(tmp: Path, method: str, dims: int) -> Path:
    from custom_components.data import make_synthetic_dataset

    dl = make_synthetic_dataset(tmp / "syn", spatial_dims=dims, num_cases=12 if dims == 2 else 8, image_size=16,
                                seed=0, **({"in_channels": 3} if dims == 2 else {}))
    roi = "[16,16]" if dims == 2 else "[16,16,16]"
    ovs = [a for o in [*TINY[method], f"*:roi_size={roi}"] for a in ("--override", o)]
    _run([PY, str(ROOT / "scripts" / "run_experiments.py"), "--dataset", str(dl), "--name", "tiny",
          "--work-dir", str(tmp / "wd"), "--results-dir", str(tmp / "res"), "--methods", method, "--ratios", "0.5",
          "--seeds", "0", "--num-qualitative", "1", *ovs], ROOT)
    trained = tmp / "wd" / "tiny" / method / "r0.5_s0" / PHASE[method]
    assert (trained / "models" / "model.pt").is_file()
    return trained


def _new_images(tmp: Path, dims: int) -> Path:
    """A plain folder of images (no datalist), another size than the training one."""
    from custom_components.data import make_synthetic_dataset

    d = make_synthetic_dataset(tmp / "new_ds", spatial_dims=dims, num_cases=3, image_size=24 if dims == 2 else 16,
                               seed=7, **({"in_channels": 3} if dims == 2 else {})).parent
    new = tmp / "NEW"
    shutil.copytree(d / "imagesTr", new)
    shutil.rmtree(d)
    return new


@pytest.mark.parametrize("method,dims", [
    pytest.param("cps_diffusion", 2),
    pytest.param("supervised", 2, marks=pytest.mark.slow),
    pytest.param("cps_diffusion", 3, marks=pytest.mark.slow),
    pytest.param("supervised", 3, marks=pytest.mark.slow),
])
def test_receiver_commands_of_sharing_md(tmp_path, method, dims):
    trainer = tmp_path / "trainer"
    trained = _train_with_runner(trainer, method, dims)
    name = trained.name
    # the trained folder itself (logs, runner files and all) passes the verifier with nothing to accept
    out = _run([PY, str(ROOT / "scripts" / "verify_bundle.py"), str(trained), "--no-manifest"], ROOT).stdout
    assert "Result: PASSED - 0 error(s)" in out and "REVIEW" not in out, out
    # the sender (docs/sharing.md, "Package"): the trained folder, packaged
    sent = tmp_path / f"{name}-trained.zip"
    _run([PY, str(ROOT / "scripts" / "package_bundle.py"), str(trained), str(sent)], ROOT)
    trainer_paths = [str(trainer), str(trainer.resolve()), str(ROOT)]
    shutil.rmtree(trainer)  # the work folders, the results and the dataset are gone

    recv = tmp_path / "receiver"
    recv.mkdir()
    new = _new_images(recv, dims)
    # 1. verify before anything runs: passes with nothing to accept
    out = _run([PY, str(ROOT / "scripts" / "verify_bundle.py"), str(sent)], recv).stdout
    assert "Result: PASSED - 0 error(s)" in out and "REVIEW" not in out, out
    with zipfile.ZipFile(sent) as zf:
        zf.extractall(recv)
    bundle = recv / name
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    selection = json.loads((bundle / "models" / "model_selection.json").read_text())
    assert meta["threshold"] == round(selection["threshold"], 4)  # the exported file carries the threshold

    # 2. predict, from outside the folder, on a plain folder of images
    _run([PY, "-m", "monai.bundle", "run", "--config_file", f"{name}/configs/inference.json",
          "--input_dir", str(new), "--output_dir", str(recv / "OUT")], recv)
    ext = ".png" if dims == 2 else ".nii.gz"
    images = sorted(new.glob("*" + ext))
    segs = sorted((recv / "OUT").glob("*_seg" + ext))
    assert len(images) == 3 and len(segs) == 3
    for seg in segs:
        if dims == 2:
            from PIL import Image

            im = Image.open(seg)
            assert im.mode == "P" and im.getpalette()[:6] == [0, 0, 0, 255, 255, 255]  # 1 shows white
            assert set(np.unique(np.asarray(im))) <= {0, 1}  # the pixel values are the class indices
        else:
            import nibabel as nib

            assert set(np.unique(np.asarray(nib.load(seg).dataobj))) <= {0, 1}

    # 3. the model zoo's default export (no --use_trace)
    export = ["-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", "models/model.ts", "--ckpt_file",
              "models/model.pt", "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"]
    proc = _run([PY, *export], bundle, ok=method == "supervised")
    if method != "supervised":  # the diffusion network cannot be scripted: one line says what to do
        last = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()][-1]
        assert proc.returncode != 0 and "add --use_trace True to the ckpt_export command" in last, last
        _run([PY, *export, "--use_trace", "True"], bundle)
    assert (bundle / "models" / "model.ts").is_file()

    # 4. no file of the received folder holds a path of the trainer's machine
    for p in sorted(q for q in bundle.rglob("*") if q.is_file()):
        if p.name == "model.ts":  # written here by the receiver (TorchScript keeps its own code paths)
            continue
        data = p.read_bytes()
        held = [t for t in trainer_paths if t.encode() in data]
        assert not held, f"{p.relative_to(bundle)} holds {held}"

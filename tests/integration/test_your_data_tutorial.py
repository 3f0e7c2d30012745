"""``docs/your_data.md`` run as written: the commands are extracted from the markdown, so doc and test cannot drift.

The test makes the raw folders the tutorial describes (a user's labelled images, masks, images without a mask and
new images) in a temporary working folder, unless the section makes them itself with its first command
(``scripts/make_synthetic.py --folders``), links ``scripts/`` there, and runs every ``bash`` block between
``<!-- tutorial:NAME -->`` and ``<!-- /tutorial:NAME -->`` in order. The default-suite version appends a tiny
training budget to the runner command (``TINY_RUNNER_ARGS``); the ``slow`` version runs the commands unchanged.
A further tutorial section is covered by adding its name (and a data maker, or None) to ``SECTIONS``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from script_loader import load_script

from custom_components.data.synthetic import synth_case

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "your_data.md"

#: appended to the runner command in the default suite: one epoch per phase, tiny networks
TINY_RUNNER_ARGS = ["--override", "*:max_epochs=1", "--override", "cotrain:epoch_length=2",
                    "--override", "cotrain:channels=[8,16]", "--override", "teacher_pretrain:channels=[8,16]",
                    "--override", "supervised:network_def#channels=[4,8,16,32]", "--num-qualitative", "1"]


def tutorial_commands(section: str, doc: Path = DOC) -> list[str]:
    """The commands of the ``bash`` blocks of one tutorial section, in document order.

    Args:
        section: the name in ``<!-- tutorial:NAME -->``.
        doc: the markdown file.
    """
    text = doc.read_text()
    m = re.search(rf"<!-- tutorial:{section} -->(.*?)<!-- /tutorial:{section} -->", text, re.S)
    assert m, f"{doc}: no section <!-- tutorial:{section} -->"
    blocks = re.findall(r"```bash\n(.*?)```", m.group(1), re.S)
    cmds = [line for b in blocks for line in b.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert cmds, f"{doc}: section {section} has no bash command"
    return cmds


def make_raw_2d(root: Path, n_labelled: int = 4, n_unlabelled: int = 20, n_new: int = 3, size: int = 40) -> None:
    """``my_data/{images,masks,unlabelled,new}``: RGB PNG images, ``*_mask.png`` masks holding 0/255."""
    rng = np.random.default_rng(0)

    def png(path: Path, arr: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    def case() -> tuple[np.ndarray, np.ndarray]:
        img, lab = synth_case(rng, (size, size), in_channels=3)
        return (np.moveaxis(img, 0, -1) * 255).round().astype(np.uint8), (lab * 255).astype(np.uint8)

    for i in range(n_labelled):
        img, lab = case()
        png(root / "my_data" / "images" / f"case_{i:02d}.png", img)
        png(root / "my_data" / "masks" / f"case_{i:02d}_mask.png", lab)
    for i in range(n_unlabelled):
        png(root / "my_data" / "unlabelled" / f"scan_{i:02d}.png", case()[0])
    for i in range(n_new):
        png(root / "my_data" / "new" / f"new_{i}.png", case()[0])


#: section name -> (data maker or None when the section's first command makes its folders, raw folder of the new
#: images, output folder of the predictions, extension)
SECTIONS: dict[str, tuple[Callable[[Path], None] | None, str, str, str]] = {
    "2d": (make_raw_2d, "my_data/new", "predictions/mine", ".png"),
    "4class": (None, "my_data4/new", "predictions/mine4", ".png"),
    "3d": (None, "my_vols/new", "predictions/vols", ".nii.gz"),
}


RUNNER = "python scripts/run_experiments.py"


def run_tutorial(section: str, cwd: Path, tiny: bool, until_training: bool = False) -> list[str]:
    """Make the section's raw data in ``cwd`` and run its commands there; return the commands run.

    Args:
        section: tutorial section name.
        cwd: empty working folder.
        tiny: append ``TINY_RUNNER_ARGS`` to the runner command.
        until_training: stop before the first runner command (the data steps only).
    """
    maker = SECTIONS[section][0]
    if maker is not None:
        maker(cwd)
    (cwd / "scripts").symlink_to(REPO / "scripts")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmds = tutorial_commands(section)
    if until_training:
        cmds = cmds[: next(i for i, c in enumerate(cmds) if c.startswith(RUNNER))]
    for cmd in cmds:
        if tiny and cmd.startswith(RUNNER):
            cmd = cmd + " " + shlex.join(TINY_RUNNER_ARGS)
        proc = subprocess.run(["bash", "-c", cmd], cwd=str(cwd), env=env, capture_output=True, text=True,
                              timeout=1800)
        assert proc.returncode == 0, (f"tutorial command failed ({proc.returncode}): {cmd}\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return cmds


#: what the prepared dataset of a section must say: (spatial_dims, num_classes)
EXPECTED_DATASET = {"2d": (2, 2), "4class": (2, 4), "3d": (3, 2)}


def _check_dataset(section: str, cwd: Path) -> dict:
    dl = json.loads(next((cwd / "data").glob("*/datalist.json")).read_text())
    assert dl["cases"] and dl["unlabeled"] and all("label" not in e for e in dl["unlabeled"])
    assert (dl["spatial_dims"], dl["num_classes"]) == EXPECTED_DATASET[section], dl
    return dl


def _check_outputs(section: str, cwd: Path) -> None:
    from monai.transforms import LoadImage

    _, new_dir, pred_dir, ext = SECTIONS[section]
    new = sorted((cwd / new_dir).glob("*" + ext))
    segs = sorted((cwd / pred_dir).glob("*_seg" + ext))
    assert len(new) > 0 and len(segs) == len(new), (new, segs)
    dl = _check_dataset(section, cwd)
    load = LoadImage(image_only=True)
    for img_f, seg_f in zip(new, segs):
        img, seg = load(str(img_f)), np.asarray(load(str(seg_f)))
        assert seg.shape[: dl["spatial_dims"]] == tuple(img.shape[: dl["spatial_dims"]]), (img_f, seg.shape)
        assert seg.min() >= 0 and seg.max() < dl["num_classes"], (seg_f, np.unique(seg))
    results = list((cwd / "runs" / "results").glob("*.md"))
    text = results[0].read_text() if results else ""
    assert "full" in text, results
    if dl["num_classes"] > 2:
        assert all(f"class{c}" in text for c in range(1, dl["num_classes"])), "no per-class Dice in the report"
    # few labelled cases: cross-validated (every labelled case once), a recommended model, no interval from n < 5
    assert "-fold CV" in text and "## Recommended model" in text, results
    if section == "2d":  # the 4 labelled images of the example: 4 folds, every image scored, no interval
        assert "4-fold CV" in text and "n too small" in text and "| 4 |" in text, text
    assert (cwd / "runs" / dl["name"] / "recommended" / "configs" / "inference.json").is_file()


def test_tutorial_commands_are_extracted():
    cmds = tutorial_commands("2d")
    assert cmds[0].startswith("python scripts/prepare_folder.py") and "--unlabeled-images" in cmds[0]
    assert any(c.startswith("python scripts/run_experiments.py") for c in cmds)
    assert cmds[-1].startswith("python -m monai.bundle run") and "--input_dir my_data/new" in cmds[-1]
    assert (REPO / "README.md").read_text().count("docs/your_data.md") >= 1


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_tutorial_data_steps_and_command_consistency(section, tmp_path, monkeypatch):
    """Default suite: the data steps run as written; the training and prediction commands parse and agree.

    The prediction command must read the configs of the recommended model the runner command delivers
    (``<work-dir>/<name>/recommended/configs``), and the runner must cross-validate these few labelled cases.
    """
    run_tutorial(section, tmp_path, tiny=False, until_training=True)
    _check_dataset(section, tmp_path)
    rx = load_script("run_experiments")
    cmds = tutorial_commands(section)
    (train,) = [c for c in cmds if c.startswith(RUNNER)]
    a = rx.build_parser().parse_args(shlex.split(train)[2:])
    run_dir = Path(a.work_dir) / a.name / "recommended" / "configs"
    from custom_components.experiments.runner import Experiment

    monkeypatch.chdir(tmp_path)  # the command's relative paths
    assert Experiment(rx.settings_from_args(a), "cmd").cv_folds >= 2  # few labelled cases: cross-validated
    (predict,) = [c for c in cmds if c.startswith("python -m monai.bundle run")]
    words = shlex.split(predict)
    # one file: the trained folder's inference.json holds the settings training recorded (docs/sharing.md)
    assert Path(words[words.index("--config_file") + 1]) == run_dir / "inference.json", predict


@pytest.mark.slow
@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_tutorial_tiny(section, tmp_path):
    """Every tutorial section (folders -> predictions) with a one-epoch budget, tiny networks."""
    run_tutorial(section, tmp_path, tiny=True)
    _check_outputs(section, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_tutorial_full(section, tmp_path):
    """Every tutorial section exactly as written (the budget the page states)."""
    run_tutorial(section, tmp_path, tiny=False)
    _check_outputs(section, tmp_path)

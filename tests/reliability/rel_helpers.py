"""Helpers for the reliability tests: bundle commands, folder hashing, fresh checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BUNDLES_DIR = REPO / "bundles"

#: tiny UNet for the supervised bundle
TINY_SUPERVISED: dict[str, Any] = {
    "network_def#channels": [4, 8, 16],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 0,
    "num_workers": 0,
}
#: tiny DiffusionTeacher / MaskPathwaySegmenter for teacher_pretrain, cotrain and pseudolabel
TINY_DIFFUSION: dict[str, Any] = {"channels": [8, 16], "norm_num_groups": 4, "num_workers": 0}


def root_cause(exc: BaseException) -> BaseException:
    """The innermost ``__cause__`` (MONAI's config parser wraps errors of ``$`` expressions in ``RuntimeError``).

    Args:
        exc: the exception that was raised.
    """
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def full_message(exc: BaseException) -> str:
    """Every message of the ``__cause__`` chain joined with `` <- `` (outermost first).

    Args:
        exc: the exception that was raised.
    """
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__  # type: ignore[assignment]
    return " <- ".join(parts)


def tree_hash(folder: str | os.PathLike) -> dict[str, str]:
    """``relative path -> sha256`` of every regular file under ``folder`` (empty when it does not exist).

    Args:
        folder: the folder to fingerprint.
    """
    root = Path(folder)
    if not root.is_dir():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_unchanged(before: Mapping[str, str], after: Mapping[str, str], where: str) -> None:
    """Every file of ``before`` still exists in ``after`` with the same content (new files are allowed).

    Args:
        before: :func:`tree_hash` taken before the run.
        after: :func:`tree_hash` taken after the run.
        where: folder name for the assertion message.
    """
    deleted = sorted(set(before) - set(after))
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    assert not deleted and not changed, f"{where}: pre-existing outputs deleted {deleted} / modified {changed}"


def copy_bundle(bundle: str, dest: Path) -> Path:
    """Copy ``bundles/<bundle>`` (without ``models``/``eval`` outputs) to ``dest``; return ``dest``.

    Args:
        bundle: bundle folder name.
        dest: destination folder (must not exist).
    """
    shutil.copytree(BUNDLES_DIR / bundle, dest,
                    ignore=shutil.ignore_patterns("models", "eval", "outputs", "__pycache__"))
    return dest


def cli_args(overrides: Mapping[str, Any]) -> list[str]:
    """``--id value`` pairs for ``python -m monai.bundle run`` (lists and bools as JSON/Python literals).

    Args:
        overrides: config id -> value.
    """
    args = []
    for k, v in overrides.items():
        args += [f"--{k}", json.dumps(v) if isinstance(v, (list, dict)) else ("''" if v == "" else str(v))]
    return args


def bundle_command(bundle_dir: Path, configs: Sequence[str], overrides: Mapping[str, Any]) -> list[str]:
    """The ``python -m monai.bundle run`` command line for a copied bundle.

    Args:
        bundle_dir: the copied bundle folder.
        configs: config names (without ``.json``) in stacking order.
        overrides: config id -> value.
    """
    files = [str(bundle_dir / "configs" / f"{c}.json") for c in configs]
    config_arg = files[0] if len(files) == 1 else json.dumps(files)
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg,
            "--logging_file", str(bundle_dir / "configs" / "logging.conf"), *cli_args(overrides)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_to_end(cmd: Sequence[str], log: Path, timeout: float = 240) -> tuple[int, str]:
    """Run a command to completion, its stdout+stderr appended to ``log``; return ``(returncode, new log text)``.

    Args:
        cmd: the command.
        log: log file (appended).
        timeout: seconds before the test fails.
    """
    start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as f:
        proc = subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=_env(), timeout=timeout, cwd=str(REPO))
    return proc.returncode, log.read_bytes()[start:].decode(errors="replace")


def run_and_kill(cmd: Sequence[str], log: Path, ready: Callable[[str], bool], timeout: float = 240) -> tuple[int, str]:
    """Start a command, SIGKILL it as soon as ``ready(new log text)`` is true; return ``(returncode, log text)``.

    Args:
        cmd: the command.
        log: log file (appended).
        ready: predicate on the log text written so far by this process.
        timeout: seconds before the test fails.
    """
    start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as f:
        proc = subprocess.Popen(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=_env(), cwd=str(REPO))
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if ready(log.read_bytes()[start:].decode(errors="replace")):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.01)
            else:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    pytest.fail(f"{cmd}: kill condition never met within {timeout} s; log {log}")
        finally:
            proc.wait()
    return proc.returncode, log.read_bytes()[start:].decode(errors="replace")


def load_weights_only(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` with a message naming the file on failure.

    Args:
        path: checkpoint file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{path} does not load with weights_only=True: {type(e).__name__}: {e}") from e


def fresh_teacher(path: Path, spatial_dims: int, in_channels: int, num_classes: int = 2, **kwargs: Any) -> Path:
    """Write a freshly initialised ``DiffusionTeacher`` state dict (a stand-in for phase 1's ``teacher.pt``).

    Args:
        path: destination file.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: classes including background.
        kwargs: more ``DiffusionTeacher`` arguments (default tiny: channels [8, 16], norm_num_groups 4).
    """
    from custom_components.networks import DiffusionTeacher

    torch.manual_seed(0)
    kw = {"channels": [8, 16], "norm_num_groups": 4, **kwargs}
    net = DiffusionTeacher(spatial_dims, in_channels, num_classes, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def fresh_deployable(path: Path, spatial_dims: int, in_channels: int, num_classes: int = 2) -> Path:
    """Write a freshly initialised deployable ``MaskPathwaySegmenter`` state dict (cotrain's ``model.pt``).

    Args:
        path: destination file.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: classes including background.
    """
    from custom_components.networks import MaskPathwaySegmenter

    torch.manual_seed(7)
    net = MaskPathwaySegmenter(spatial_dims, in_channels, num_classes, channels=[8, 16], norm_num_groups=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    write_selection(path)
    return path


def write_selection(model_path: Path, threshold: float = 0.5) -> Path:
    """The ``<stem>_selection.json`` training writes beside ``model.pt`` (the post-processing threshold)."""
    out = model_path.with_name(model_path.stem + "_selection.json")
    out.write_text(json.dumps({"network": "fresh", "threshold": threshold, "dice": 0.0, "epoch": 0}))
    return out


def fresh_unet(path: Path, spatial_dims: int, in_channels: int, num_classes: int = 2) -> Path:
    """Write a freshly initialised tiny UNet state dict (the supervised bundle's ``model.pt``).

    Args:
        path: destination file.
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: classes including background.
    """
    from monai.networks.nets import UNet

    torch.manual_seed(7)
    net = UNet(spatial_dims, in_channels, num_classes, channels=[4, 8, 16], strides=[2, 2], num_res_units=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    write_selection(path)
    return path


class NaNAfterLoss(torch.nn.Module):
    """Wrap a loss and return NaN from its ``nan_from_call``-th call on (forces :class:`NaNGuard` to trigger).

    Injected through a config override such as ``{"loss#_target_": "rel_helpers.NaNAfterLoss", ...}``; only usable
    in-process (the test folder is on ``sys.path``).

    Args:
        nan_from_call: 1-based call number from which the loss is NaN.
        loss: the wrapped loss (default MONAI ``DiceCELoss(to_onehot_y=True, softmax=True)``).
    """

    def __init__(self, nan_from_call: int, loss: torch.nn.Module | None = None) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.nan_from_call = int(nan_from_call)
        self.loss = loss if loss is not None else DiceCELoss(to_onehot_y=True, softmax=True)
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The wrapped loss, times NaN from call ``nan_from_call`` on.

        Args:
            args: positional arguments of the wrapped loss.
            kwargs: keyword arguments of the wrapped loss.
        """
        self.calls += 1
        out = self.loss(*args, **kwargs)
        return out * float("nan") if self.calls >= self.nan_from_call else out

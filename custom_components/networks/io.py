"""Loading the teacher checkpoint that links phase 1 to phases 2 and 3, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from custom_components.errors import CheckpointError, CheckpointNotFoundError

__all__ = ["check_weights", "describe_architecture", "load_teacher_weights"]


def describe_architecture(net: nn.Module) -> str:
    """A one-line description of a teacher's architecture for error messages.

    Args:
        net: a ``DiffusionTeacher`` (or any module).
    """
    fields = ["spatial_dims", "in_channels", "num_classes", "num_levels", "backbone"]
    desc = ", ".join(f"{f}={getattr(net, f)}" for f in fields if hasattr(net, f))
    n = sum(p.numel() for p in net.parameters())
    return f"{type(net).__name__}({desc}; {n} parameters)"


def _read_state(path: Path, missing_hint: str, what: str = "checkpoint") -> dict:
    if path.is_dir():
        inside = sorted(str(p) for p in path.rglob("*.pt"))[:3]
        raise CheckpointError(
            f"{what} '{path}' is a folder, not a checkpoint file: give the .pt file itself"
            + (f" (found in it: {', '.join(inside)})." if inside else ".")
        )
    if not path.is_file():
        raise CheckpointNotFoundError(f"{what} '{path}' does not exist: {missing_hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is reported the same way
        raise CheckpointError(
            f"{what} '{path}' cannot be read ({type(e).__name__}: {e}); it may be truncated or not a weights file."
        ) from e
    if isinstance(state, dict) and "teacher" in state and isinstance(state["teacher"], dict):
        state = state["teacher"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} '{path}' holds a {type(state).__name__}, not a state_dict.")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def check_weights(
    net: nn.Module, path: str | os.PathLike, missing_hint: str = "train the bundle first.", what: str = "checkpoint"
) -> dict:
    """Read a ``state_dict`` file and check it fits ``net`` exactly (keys and shapes); return it.

    Args:
        net: the network the weights are for.
        path: the weights file (``torch.load(weights_only=True)``-loadable).
        missing_hint: what to tell the user when the file does not exist.
        what: how to name the file in messages.

    Raises:
        CheckpointNotFoundError: the file does not exist (message names it); a ``FileNotFoundError``.
        CheckpointError: a folder instead of a file, an unreadable file, or weights of another architecture
            (message names the file, the mismatching tensors and the expected architecture).
    """
    path = Path(path)
    state = _read_state(path, missing_hint, what)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs expected {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shape:
        details = []
        if shape:
            details.append("shape mismatch: " + "; ".join(shape[:3]) + (" ..." if len(shape) > 3 else ""))
        if missing:
            details.append(f"{len(missing)} missing keys (e.g. {missing[:2]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]})")
        raise CheckpointError(
            f"{what} '{path}' does not match the configured architecture {describe_architecture(net)}: "
            f"{'; '.join(details)}. Use the same spatial_dims, in_channels, num_classes, channels and backbone as in "
            "training."
        )
    return state


def load_teacher_weights(teacher: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a teacher checkpoint (a ``state_dict`` of both pathways, ``torch.load(weights_only=True)``).

    Also accepts the resumable training state of phase 1 (the ``teacher`` entry is used).

    Args:
        teacher: the ``DiffusionTeacher`` to fill.
        path: the checkpoint file (phase 1's ``models/teacher.pt``).
        strict: require exactly matching keys and shapes.

    Raises:
        CheckpointNotFoundError: the file does not exist (message names it and how to make it).
        CheckpointError: a folder instead of a file, an unreadable file, or a checkpoint of another architecture
            (message names the file, the mismatching tensors and the expected architecture).
    """
    hint = (
        "run the teacher_pretrain bundle first, or set teacher_ckpt to '' for co-training without phase 1 "
        "(plain CPS)."
    )
    if strict:
        state = check_weights(teacher, path, hint, "teacher checkpoint")
    else:
        state = _read_state(Path(path), hint, "teacher checkpoint")
    teacher.load_state_dict(state, strict=strict)
    return teacher

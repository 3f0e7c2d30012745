"""Iteration budgets of a profile, and their conversion into the epoch-based ids of the bundles.

A profile has two halves: the bundle settings (``bundles/<phase>/configs/profiles/<name>.json``, stacked after
``train.json`` and usable with plain ``python -m monai.bundle run``) and the budgets here
(``custom_components/experiments/profiles/<name>.json``): per phase the number of training iterations, of
validation rounds, and the warm-up / first LR step as fractions of the run (METHOD.md reference: 20-epoch warm-up
and x0.5 every 50 epochs of 200 -> 0.1 / 0.25). The conversion needs the split sizes and the batch size actually
used, so it is done by the runner, not by a config file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .methods import PHASES

__all__ = ["PROFILES_DIR", "PhaseBudget", "Profile", "available_profiles", "iterations_to_epochs", "load_profile",
           "schedule_ids"]

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True)
class PhaseBudget:
    """The training length of one phase.

    Args:
        iterations: optimiser steps wanted.
        validations: validation rounds over the run (sets ``val_interval``).
        warmup_frac: warm-up length as a fraction of ``max_epochs``.
        lr_step_frac: LR step period as a fraction of ``max_epochs``.
        epoch_length: iterations per epoch for the cotrain bundle (its epochs are not passes over a dataset).
    """

    iterations: int
    validations: int
    warmup_frac: float
    lr_step_frac: float
    epoch_length: int | None = None


@dataclass(frozen=True)
class Profile:
    """A profile's budgets (one per phase) and the runner's thread default.

    Args:
        name: the profile name (also the bundles' ``configs/profiles/<name>.json``).
        phases: ``{phase: PhaseBudget}`` for ``supervised``, ``teacher_pretrain``, ``cotrain``.
        num_threads: OpenMP threads per bundle process (``None``: torch's default, or the cores / ``--jobs``).
        description: what the profile is for.
        spatial_dims: the data the profile is made for (``None``: any; a 3D profile's bundle files replace
            ``profile_3d.json`` settings, a 2D profile's would override them).
    """

    name: str
    phases: Mapping[str, PhaseBudget]
    num_threads: int | None = None
    description: str = ""
    spatial_dims: int | None = None

    def with_iterations(self, iterations: Mapping[str, int]) -> Profile:
        """A copy with the iteration budgets of some phases replaced (``--iterations PHASE=N``)."""
        phases = dict(self.phases)
        for phase, n in iterations.items():
            phases[phase] = replace(phases[phase], iterations=int(n))
        return replace(self, phases=phases)


def available_profiles() -> list[str]:
    """Names of the profiles with a budget file."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.json"))


def load_profile(name: str) -> Profile:
    """Read ``profiles/<name>.json``.

    Raises:
        ValueError: unknown profile, or a budget file missing a phase or a field (naming the file).
    """
    path = PROFILES_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown profile {name!r}; available: {available_profiles()}.")
    data = json.loads(path.read_text())
    phases = {}
    for phase in PHASES:
        if phase not in data:
            raise ValueError(f"{path}: no budget for phase {phase!r}.")
        try:
            phases[phase] = PhaseBudget(**data[phase])
        except TypeError as e:
            raise ValueError(f"{path}: phase {phase!r}: {e}.") from e
    if phases["cotrain"].epoch_length is None:
        raise ValueError(f"{path}: phase 'cotrain' needs 'epoch_length'.")
    return Profile(name, phases, data.get("num_threads"), data.get("description", ""), data.get("spatial_dims"))


def iterations_to_epochs(iterations: int, num_items: int, batch_size: int, drop_last: bool) -> int:
    """Epochs needed for at least ``iterations`` optimiser steps over ``num_items`` items.

    Args:
        iterations: wanted number of iterations.
        num_items: dataset length.
        batch_size: batch size.
        drop_last: whether the loader drops the last incomplete batch (only when the dataset exceeds one batch).

    Raises:
        ValueError: an empty dataset.
    """
    if num_items < 1:
        raise ValueError(f"cannot train on an empty dataset (batch_size {batch_size}).")
    per_epoch = num_items // batch_size if (drop_last and num_items > batch_size) else math.ceil(num_items / batch_size)
    return max(1, math.ceil(iterations / max(1, per_epoch)))


def schedule_ids(phase: str, budget: PhaseBudget, num_labeled: int, num_unlabeled: int, batch_size: int,
                 user: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The bundle ids of one phase's schedule: ``max_epochs``, ``val_interval``, ``warmup_epochs``,
    ``lr_step_epochs``, ``ckpt_interval`` (and ``epoch_length`` for cotrain).

    The supervised bundle iterates over the labelled cases; phase 1 over every training image (labelled and
    unlabelled, ``drop_last``); cotrain runs ``epoch_length`` iterations per epoch. Ids the user set explicitly
    (``user``) win, and a user-chosen ``max_epochs`` bounds the other intervals.

    Args:
        phase: ``supervised``, ``teacher_pretrain`` or ``cotrain``.
        budget: the phase's budget.
        num_labeled: labelled cases of the split.
        num_unlabeled: unlabelled cases of the split.
        batch_size: the batch size the bundle will use (after every override).
        user: the user's overrides for this phase.
    """
    user = dict(user or {})
    out: dict[str, Any] = {}
    if phase == "supervised":
        epochs = iterations_to_epochs(budget.iterations, num_labeled, batch_size, drop_last=False)
    elif phase == "teacher_pretrain":
        epochs = iterations_to_epochs(budget.iterations, num_labeled + num_unlabeled, batch_size, drop_last=True)
    else:
        out["epoch_length"] = int(user.get("epoch_length", budget.epoch_length))
        epochs = max(1, math.ceil(budget.iterations / out["epoch_length"]))
    out.update({
        "max_epochs": epochs,
        "val_interval": max(1, epochs // max(1, budget.validations)),
        "warmup_epochs": max(1, round(budget.warmup_frac * epochs)),
        "lr_step_epochs": max(1, round(budget.lr_step_frac * epochs)),
    })
    if "max_epochs" in user:  # keep validation and schedule inside a user-chosen length
        out["max_epochs"] = int(user["max_epochs"])
        for k in ("val_interval", "warmup_epochs", "lr_step_epochs"):
            out[k] = max(1, min(out[k], out["max_epochs"]))
    out.update({k: v for k, v in user.items() if k in out or k == "ckpt_interval"})
    out.setdefault("ckpt_interval", max(1, min(int(out["val_interval"]), int(out["max_epochs"]))))
    return out

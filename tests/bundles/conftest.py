"""Helpers for bundle tests: run a bundle's configs end to end through ``ConfigWorkflow`` with overrides."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.bundle import ConfigWorkflow

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"

#: overrides that make any UNet-based bundle tiny and single-process (CPU, 2 cores)
TINY_UNET = {
    "network_def#channels": [4, 8, 16],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 0,
    "num_workers": 0,
    "check_datalist_files": False,
}


def config_paths(bundle: str, names: Sequence[str]) -> list[str]:
    """Absolute paths of ``bundles/<bundle>/configs/<name>.json`` for each name.

    Args:
        bundle: bundle folder name.
        names: config names without extension, in stacking order.
    """
    paths = [BUNDLES_DIR / bundle / "configs" / f"{n}.json" for n in names]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"bundle config {p} does not exist")
    return [str(p) for p in paths]


def make_workflow(bundle: str, names: Sequence[str], workflow_type: str, **overrides: Any) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` of stacked configs with overrides (``#`` ids as keyword names via ``**{...}``).

    Args:
        bundle: bundle folder name.
        names: config names, in stacking order.
        workflow_type: ``train``, ``eval`` or ``inference``.
        overrides: id -> value pairs.
    """
    return ConfigWorkflow(config_file=config_paths(bundle, names), workflow_type=workflow_type, **overrides)


@pytest.fixture
def run_bundle() -> Callable[..., ConfigWorkflow]:
    """Factory: ``run_bundle(bundle, names, workflow_type, **overrides)`` initialises, checks properties, runs.

    Asserts ``check_properties() == []`` before running; returns the workflow (finalized) for inspection.
    """

    def run(bundle: str, names: Sequence[str], workflow_type: str, **overrides: Any) -> ConfigWorkflow:
        wf = make_workflow(bundle, names, workflow_type, **overrides)
        wf.initialize()
        assert wf.check_properties() == [], f"{names}: missing or wrongly referenced properties"
        wf.run()
        wf.finalize()
        return wf

    return run


def save_fresh_weights(wf: ConfigWorkflow, path: Path) -> Path:
    """Write a freshly initialised ``network_def`` state dict to ``path`` (a stand-in for trained weights).

    Args:
        wf: an initialised workflow whose config has ``network_def``.
        path: destination ``model.pt``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wf.parser.get_parsed_content("network_def", instantiate=True).state_dict(), path)
    write_selection(path)
    return path


def write_selection(model_path: Path, threshold: float = 0.5) -> Path:
    """Write the ``model_selection.json`` that training writes beside ``model.pt`` (the validation threshold)."""
    out = model_path.with_name(model_path.stem + "_selection.json")
    out.write_text(json.dumps({"network": "fresh", "threshold": threshold, "dice": 0.0, "epoch": 0}))
    return out


@pytest.fixture
def make_bundle_workflow() -> Callable[..., ConfigWorkflow]:
    """Factory fixture for :func:`make_workflow` (``make_bundle_workflow(bundle, names, workflow_type,
    **overrides)``)."""
    return make_workflow


@pytest.fixture
def tiny_unet_overrides() -> dict[str, Any]:
    """A fresh copy of :data:`TINY_UNET`."""
    return dict(TINY_UNET)


@pytest.fixture
def fresh_weights() -> Callable[[ConfigWorkflow, Path], Path]:
    """Fixture form of :func:`save_fresh_weights`."""
    return save_fresh_weights

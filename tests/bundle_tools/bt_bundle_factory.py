"""Write minimal, complete bundles into temporary folders for the bundle_tools tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

UNET_DEF = {
    "_target_": "UNet",
    "spatial_dims": "@spatial_dims",
    "in_channels": "@in_channels",
    "out_channels": "@num_classes",
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 0,
}


def fake_deployable_def(noise_mode: str = "generator") -> dict[str, Any]:
    """Config of the test stand-in for the deployable wrapper.

    Args:
        noise_mode: ``generator`` or ``buffer``.
    """
    return {
        "_target_": "bt_fake_deployable.FakeMaskPathwaySegmenter",
        "spatial_dims": "@spatial_dims",
        "in_channels": "@in_channels",
        "num_classes": "@num_classes",
        "noise_mode": noise_mode,
    }


def metadata(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, size: int = 16) -> dict[str, Any]:
    """A metadata.json dictionary valid against the repository schema.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output classes.
        size: multiple of the spatial sizes (``"<size>*n"``).
    """
    spatial = [f"{size}*n"] * spatial_dims
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json",
        "version": "0.2.0",
        "changelog": {"0.2.0": "export the deployable network", "0.1.0": "initial version"},
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.4.6",
        "required_packages_version": {"nibabel": "5.4.2"},
        "name": "tiny test bundle",
        "task": "binary segmentation",
        "description": "tiny bundle for the bundle_tools tests",
        "authors": "bundle_tools tests",
        "copyright": "Copyright (c) the authors",
        "license": "Apache-2.0",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR",
                                 "num_channels": in_channels, "spatial_shape": spatial, "dtype": "float32",
                                 "value_range": [0, 1], "is_patch_data": False,
                                 "channel_def": {str(i): f"image channel {i}" for i in range(in_channels)}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": num_classes,
                                 "spatial_shape": spatial, "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": False,
                                 "channel_def": {str(i): f"class {i}" for i in range(num_classes)}}},
        },
    }


def make_bundle(root: Path, network_def: dict[str, Any] | None = None, spatial_dims: int = 2,
                in_channels: int = 1, num_classes: int = 2, seed: int = 0) -> Path:
    """Write configs/{inference.json, metadata.json}, docs/README.md, LICENSE and models/model.pt under ``root``.

    Args:
        root: bundle folder to create.
        network_def: the ``network_def`` config (default: a tiny MONAI UNet).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output classes.
        seed: seed of the random weights.
    """
    (root / "configs").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "models").mkdir()
    inference = {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "spatial_dims": spatial_dims,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "network_def": network_def or UNET_DEF,
        "network": "$@network_def.to(@device)",
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}]},
        "initialize": ["$custom_components.networks.check_weights(@network, @ckpt_path)"],
        "run": [],
    }
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=4))
    (root / "configs" / "metadata.json").write_text(
        json.dumps(metadata(spatial_dims, in_channels, num_classes), indent=4))
    (root / "docs" / "README.md").write_text("# Tiny bundle\n\nOverview, data, commands, license.\n")
    (root / "LICENSE").write_text("Apache License 2.0 (test fixture)\n")
    parser = ConfigParser(inference)
    torch.manual_seed(seed)
    net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root

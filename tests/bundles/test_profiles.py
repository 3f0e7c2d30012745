"""``bundles/<phase>/configs/profiles/*.json``: override files stacked after ``train.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from custom_components.experiments.budget import load_profile

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
FILES = sorted(BUNDLES.glob("*/configs/profiles/*.json"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parents[2].name}-{p.stem}")
def test_profile_overrides_only_ids_that_train_json_has_and_builds_the_network(path):
    train = path.parents[1] / "train.json"
    stack = [train]
    if load_profile(path.stem).spatial_dims == 3:  # a 3D profile is stacked on profile_3d.json (the runner's order)
        stack.append(path.parents[1] / "profile_3d.json")
    base = {k: v for f in stack for k, v in json.loads(f.read_text()).items()}
    prof = json.loads(path.read_text())
    unknown = [k for k in prof if k not in base]
    assert not unknown, f"{path.name} sets ids that {stack} do not have (they would be ignored): {unknown}"
    parser = ConfigParser()
    parser.read_config([str(f) for f in stack] + [str(path)])
    parser["device"] = "$torch.device('cpu')"
    assert parser.get_parsed_content("roi_size") == prof["roi_size"]
    net = parser.get_parsed_content("network_def", instantiate=True)
    if "channels" in prof:
        if hasattr(net, "num_levels"):  # the diffusion networks
            assert net.num_levels == len(prof["channels"])
        else:  # the supervised UNet
            assert tuple(net.channels) == tuple(prof["channels"])

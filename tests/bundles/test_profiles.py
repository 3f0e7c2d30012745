"""``bundles/<phase>/configs/profiles/*.json``: override files stacked after ``train.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
FILES = sorted(BUNDLES.glob("*/configs/profiles/*.json"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parents[2].name}-{p.stem}")
def test_profile_overrides_only_ids_that_train_json_has_and_builds_the_network(path):
    train = path.parents[1] / "train.json"
    base = json.loads(train.read_text())
    prof = json.loads(path.read_text())
    unknown = [k for k in prof if k not in base]
    assert not unknown, f"{path.name} sets ids that {train} does not have (they would be ignored): {unknown}"
    parser = ConfigParser()
    parser.read_config([str(train), str(path)])
    parser["device"] = "$torch.device('cpu')"
    assert parser.get_parsed_content("roi_size") == prof["roi_size"]
    net = parser.get_parsed_content("network_def", instantiate=True)
    if "channels" in prof:
        assert net.num_levels == len(prof["channels"])

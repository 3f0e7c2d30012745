"""Model-zoo style checks of every bundle: properties after initialize, the deployable network against its
metadata (``verify_net_in_out``), and bitwise determinism of a short training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_net_in_out

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"

#: every runnable config combination of the repository: (bundle, stacked configs, workflow type)
COMBINATIONS = [
    ("supervised", ["train"], "train"), ("supervised", ["train", "profile_3d"], "train"),
    ("supervised", ["train", "evaluate"], "eval"), ("supervised", ["inference"], "inference"),
    ("supervised", ["inference", "profile_3d"], "inference"),
    ("teacher_pretrain", ["train"], "train"), ("teacher_pretrain", ["train", "profile_3d"], "train"),
    ("cotrain", ["train"], "train"), ("cotrain", ["train", "profile_3d"], "train"),
    ("cotrain", ["train", "evaluate"], "eval"), ("cotrain", ["inference"], "inference"),
    ("cotrain", ["inference", "profile_3d"], "inference"),
    ("pseudolabel", ["inference"], "inference"), ("pseudolabel", ["inference", "profile_3d"], "inference"),
]


def _files(bundle: str, names: list[str]) -> list[str]:
    return [str(BUNDLES / bundle / "configs" / f"{n}.json") for n in names]


@pytest.mark.parametrize("bundle,names,wtype", COMBINATIONS, ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_check_properties_after_initialize(bundle, names, wtype, tmp_path, tiny_dataset_2d, tiny_dataset_3d):
    data = tiny_dataset_3d(num_cases=8, size=16) if "profile_3d" in names else tiny_dataset_2d(num_cases=8, size=16)
    wf = ConfigWorkflow(config_file=_files(bundle, names), workflow_type=wtype, initialize=[],
                        bundle_root=str(tmp_path), dataset_dir=str(data), num_workers=0,
                        # no model_selection.json
                        **({"threshold": 0.5} if wtype != "train" and bundle != "pseudolabel" else {}))
    wf.initialize()
    assert wf.check_properties() == []


@pytest.mark.parametrize("bundle", ["cotrain", "supervised"])
def test_deployable_network_matches_metadata(bundle, tmp_path):
    """``verify_net_in_out``: input channels, output channels and dtype of ``network_def`` as metadata.json says."""
    verify_net_in_out(net_id="network_def", meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"),
                      config_file=str(BUNDLES / bundle / "configs" / "inference.json"), device="cpu", n=2,
                      bundle_root=str(tmp_path))


def _train_once(tiny: Path, out: Path) -> dict[str, torch.Tensor]:
    wf = ConfigWorkflow(config_file=_files("cotrain", ["train"]), workflow_type="train", dataset_dir=str(tiny),
                        ckpt_dir=str(out / "models"), output_dir=str(out / "eval"), teacher_ckpt="", rounds=1,
                        channels=[8, 16], norm_num_groups=4, roi_size=[16, 16], batch_size=2, val_batch_size=2,
                        num_workers=0, max_epochs=1, epoch_length=2, val_interval=1, check_datalist_files=False, seed=3)
    wf.initialize()
    wf.run()
    wf.finalize()
    nets = {"teacher": wf.parser.get_parsed_content("network"), "student": wf.parser.get_parsed_content("student")}
    return {f"{n}.{k}": v.detach().cpu().clone() for n, net in nets.items() for k, v in net.state_dict().items()}


def test_training_is_deterministic(tiny_dataset_2d, tmp_path):
    """Two co-training runs with the same seed (two iterations, R = 1) give bitwise-identical weights."""
    data = tiny_dataset_2d(num_cases=8, size=16)
    a, b = _train_once(data, tmp_path / "a"), _train_once(data, tmp_path / "b")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert differ == [], f"weights differ between two runs with the same seed: {differ[:5]}"
    init = ConfigWorkflow(config_file=_files("cotrain", ["train"]), workflow_type="train", initialize=[],
                          channels=[8, 16], norm_num_groups=4, bundle_root=str(tmp_path))
    fresh = init.parser.get_parsed_content("network").state_dict()
    assert any(not torch.equal(fresh[k].cpu(), a[f"teacher.{k}"]) for k in fresh), "training changed nothing"

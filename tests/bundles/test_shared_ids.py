"""Bundles stay self-contained, so ids shared by several bundles are repeated; this test keeps the copies equal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
DIFFUSION = ["teacher_pretrain/configs/train.json", "cotrain/configs/train.json", "cotrain/configs/inference.json",
             "pseudolabel/configs/inference.json"]
ALL_2D = DIFFUSION + ["supervised/configs/train.json", "supervised/configs/inference.json"]
PROFILE_3D = [f"{b}/configs/profile_3d.json" for b in ("teacher_pretrain", "cotrain", "pseudolabel", "supervised")]
PROFILES = sorted({p.name for p in BUNDLES.glob("*/configs/profiles/*.json")})

SHARED = [
    # (ids, files that must agree on each id that they define)
    (["channels", "num_res_blocks", "norm_num_groups", "backbone", "num_train_timesteps", "noise_schedule",
      "infer_timestep", "intensity_transforms"], DIFFUSION),
    (["network_def"], ["teacher_pretrain/configs/train.json", "cotrain/configs/train.json",
                       "pseudolabel/configs/inference.json"]),
    (["spatial_dims", "in_channels", "num_classes", "roi_size", "seed", "labeled_key", "unlabeled_key",
      "val_key", "ckpt_interval"], ALL_2D),
    # bf16 where the device computes it natively for the diffusion phases' training (docs/performance.md);
    # inference and the supervised baseline stay fp32
    (["amp", "fused_adam"], ["teacher_pretrain/configs/train.json", "cotrain/configs/train.json"]),
    (["amp"], ["cotrain/configs/inference.json", "pseudolabel/configs/inference.json", "supervised/configs/train.json",
               "supervised/configs/inference.json"]),
    (["spatial_dims", "in_channels", "roi_size", "channels", "intensity_transforms"], PROFILE_3D),
    (["eval_inferer"], ["cotrain/configs/profile_3d.json", "supervised/configs/profile_3d.json"]),
]


def _load(rel: str) -> dict:
    return json.loads((BUNDLES / rel).read_text())


@pytest.mark.parametrize("ids, files", SHARED, ids=[f"{ids[0]}..." for ids, _ in SHARED])
def test_shared_ids_are_equal_across_bundles(ids, files):
    configs = {f: _load(f) for f in files}
    for key in ids:
        values = {f: json.dumps(c[key], sort_keys=True) for f, c in configs.items() if key in c}
        assert len(values) >= 2, f"{key}: defined in fewer than two of {files}; drop it from this test"
        assert len(set(values.values())) == 1, f"{key} differs between bundles: {values}"


def test_the_deployable_model_is_built_alike_in_training_and_inference():
    train, infer = _load("cotrain/configs/train.json"), _load("cotrain/configs/inference.json")
    net = dict(infer["network_def"])
    assert net.pop("num_draws") == "@num_draws"  # inference may ensemble; the saved weights are the same
    assert net.pop("sampler") == "@sampler" and net.pop("ddim_steps") == "@ddim_steps"  # or refine by DDIM
    assert train["deployable_def"] == net


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_files_agree_on_the_ids_the_phases_share(profile):
    files = {p.parent.parent.parent.name: json.loads(p.read_text())
             for p in BUNDLES.glob(f"*/configs/profiles/{profile}")}
    assert set(files) == {"supervised", "teacher_pretrain", "cotrain"}
    assert len({json.dumps(f["roi_size"]) for f in files.values()}) == 1
    assert files["teacher_pretrain"].get("channels") == files["cotrain"].get("channels")  # phase 2 loads phase 1
    assert not [k for f in files.values() for k in f if "#" in k]  # top-level ids only, no list positions


@pytest.mark.parametrize("rel,net_id", [("teacher_pretrain/configs/train.json", "network_def"),
                                        ("cotrain/configs/train.json", "network_def"),
                                        ("cotrain/configs/train.json", "student_def"),
                                        ("cotrain/configs/train.json", "deployable_def"),
                                        ("cotrain/configs/inference.json", "network_def"),
                                        ("pseudolabel/configs/inference.json", "network_def")])
def test_one_backbone_id_switches_every_diffusion_network(rel, net_id):
    """``backbone`` is one top-level id (default the paper's ``diffusion_unet``); overriding it to ``fast`` builds the
    fast backbone in every pathway of every diffusion network the bundles build."""
    from monai.bundle import ConfigParser
    from monai.networks.nets import DiffusionModelUNet

    from custom_components.networks import TimeConditionedUNet

    for backbone, cls in (("diffusion_unet", DiffusionModelUNet), ("fast", TimeConditionedUNet)):
        parser = ConfigParser()
        parser.read_config(str(BUNDLES / rel))
        if backbone != "diffusion_unet":
            parser["backbone"] = backbone
        else:
            assert parser["backbone"] == "diffusion_unet"
        net = parser.get_parsed_content(net_id, instantiate=True)
        nets = [net.mask_net] + ([net.image_net] if hasattr(net, "image_net") else [])
        assert all(isinstance(n, cls) for n in nets), (backbone, [type(n).__name__ for n in nets])

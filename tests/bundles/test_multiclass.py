"""Multi-class (K > 2) end to end through every bundle, parameterised over K = 2 / 4 and 2D / 3D.

One chain per setting, tiny networks, one epoch each: phase 1 (class fractions for every class), phase 2 from its
teacher (channels named on the labelled data, per-class validation Dice of both networks, argmax selection for
K > 2), test evaluation (every foreground class and their mean), inference of the deployable model and phase-3
pseudo-labels (class indices 0..K-1, uncertainty in [0, 1]), and the supervised baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

NET = {"channels": [8, 16], "norm_num_groups": 4, "num_workers": 0, "check_datalist_files": False}
# 3D binary is covered by the per-bundle 3D tests: slow here, to keep the default suite short
SETTINGS = [(2, 2), (2, 4), pytest.param(3, 2, marks=pytest.mark.slow), (3, 4)]


def _data(spatial_dims: int, k: int, tiny_dataset_2d, tiny_dataset_3d) -> tuple[Path, list[int], list[str], int]:
    splits = {"labeled": 2, "unlabeled": 2, "validation": 2, "test": 2}
    if spatial_dims == 2:
        return tiny_dataset_2d(num_cases=8, size=20, num_classes=k, splits=splits), [16, 16], [], 3
    return tiny_dataset_3d(num_cases=8, size=(16, 16, 12), num_classes=k, splits=splits), [16, 16, 8], ["profile_3d"], 1


@pytest.mark.parametrize("spatial_dims,k", SETTINGS)
def test_every_bundle_with_k_classes(spatial_dims, k, tiny_dataset_2d, tiny_dataset_3d, tmp_path, run_bundle,
                                     tiny_unet_overrides):
    data, roi, profile, c = _data(spatial_dims, k, tiny_dataset_2d, tiny_dataset_3d)
    common = {**NET, "dataset_dir": str(data), "num_classes": k, "in_channels": c, "roi_size": roi,
              "batch_size": 2, "max_epochs": 1, "val_interval": 1}

    p1 = tmp_path / "teacher_pretrain"
    wf = run_bundle("teacher_pretrain", ["train", *profile], "train",
                    **common, output_dir=str(p1 / "eval"), ckpt_dir=str(p1 / "models"))
    m1 = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    fracs = [m1[f"val_frac_class{i}"] for i in range(k)]
    assert f"val_frac_class{k}" not in m1 and sum(fracs) == pytest.approx(1.0, abs=1e-4)

    p2 = tmp_path / "cotrain"
    co = {**common, "output_dir": str(p2 / "eval"), "ckpt_dir": str(p2 / "models"), "val_batch_size": 2,
          "rounds": 1, "epoch_length": 2, "teacher_ckpt": str(p1 / "models" / "teacher.pt")}
    wf = run_bundle("cotrain", ["train", *profile], "train", **co)
    m2 = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    for net in ("student", "teacher"):
        assert {f"val_dice_{net}_class{i}" for i in range(1, k)} <= set(m2)
        assert f"val_dice_{net}_class{k}" not in m2
    assert ("val_dice_teacher_at_0.5" in m2) == (k == 2)  # the threshold sweep is for binary tasks only
    selection = json.loads((p2 / "models" / "model_selection.json").read_text())
    assert (selection["threshold"] == 0.5) if k > 2 else (0.0 < selection["threshold"] < 1.0)
    assert {f"val_dice_{selection['network']}_class{i}" for i in range(1, k)} <= set(selection)

    run_bundle("cotrain", ["train", "evaluate", *profile], "eval", **{**co, "output_dir": str(p2 / "test")})
    summary = json.loads((p2 / "test" / "metrics.json").read_text())["summary"]
    classes = [g for g in summary["metrics"] if g != "mean"]
    assert len(classes) == k - 1 and (("mean" in summary["metrics"]) == (k > 2))

    pred = tmp_path / "pred"  # the deployable model on new images: argmax masks and K-class uncertainty maps
    run_bundle("cotrain", ["inference", *profile], "inference", **{**NET, "num_classes": k, "in_channels": c,
               "roi_size": roi, "ckpt_dir": str(p2 / "models"), "output_dir": str(pred),
               "input_dir": str(data / "imagesTr")})
    ext = ".png" if spatial_dims == 2 else ".nii.gz"
    segs = sorted(pred.glob("*_seg" + ext))
    assert len(segs) == 8 and len(list(pred.glob("*_uncertainty" + ext))) == 8
    for seg in segs[:2]:
        unc = Path(str(seg).replace("_seg", "_uncertainty"))
        if spatial_dims == 2:
            m, u = np.asarray(Image.open(seg)), np.asarray(Image.open(unc)) / 255.0
        else:
            m, u = np.asarray(nib.load(seg).dataobj), nib.load(unc).get_fdata()
        assert set(np.unique(m)) <= set(range(k)) and 0.0 <= u.min() and u.max() <= 1.0 + 1e-6

    p3 = tmp_path / "pseudolabel"
    run_bundle("pseudolabel", ["inference", *profile], "inference",
               **{**NET, "dataset_dir": str(data), "num_classes": k,
               "in_channels": c, "roi_size": roi, "rounds": 1, "output_dir": str(p3),
               "teacher_ckpt": str(p2 / "models" / "teacher.pt")})
    entries = json.loads((p3 / "pseudolabels.json").read_text())["pseudolabels"]
    assert len(entries) == 2
    for e in entries:
        if spatial_dims == 2:
            lab, unc = (np.asarray(Image.open(p3 / e["pseudo_label"])),
                        np.asarray(Image.open(p3 / e["uncertainty"])) / 255.0)
        else:
            lab, unc = np.asarray(nib.load(p3 / e["pseudo_label"]).dataobj), nib.load(p3 / e["uncertainty"]).get_fdata()
        assert lab.dtype == np.uint8 and set(np.unique(lab)) <= set(range(k))
        assert 0.0 <= unc.min() and unc.max() <= 1.0 + 1e-6

    sup = tmp_path / "supervised"
    ov = {**tiny_unet_overrides, "dataset_dir": str(data), "num_classes": k, "in_channels": c, "roi_size": roi,
          "batch_size": 2,
          "max_epochs": 1, "val_interval": 1, "output_dir": str(sup / "eval"), "ckpt_dir": str(sup / "models")}
    run_bundle("supervised", ["train", *profile], "train", **ov)
    run_bundle("supervised", ["train", "evaluate", *profile], "eval", **{**ov, "output_dir": str(sup / "test")})
    summary = json.loads((sup / "test" / "metrics.json").read_text())["summary"]
    assert len([g for g in summary["metrics"] if g != "mean"]) == k - 1 and (("mean" in summary["metrics"]) == (k > 2))


@pytest.mark.parametrize("align", [True, False])
def test_cotrain_names_the_phase1_channels_before_training(align, tiny_dataset_2d, tmp_path, make_bundle_workflow):
    # a phase-1 teacher whose last channel holds every pixel: the background must become channel 0
    import torch

    from custom_components.networks import DiffusionTeacher

    k = 4
    data = tiny_dataset_2d(num_cases=8, size=16, num_classes=k)
    teacher = DiffusionTeacher(2, 3, k, channels=[8, 16], norm_num_groups=4)
    out_conv = [m for m in teacher.mask_net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        out_conv.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 10.0]))
    ckpt = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), ckpt)
    wf = make_bundle_workflow("cotrain", ["train"], "train", **{**NET, "dataset_dir": str(data), "num_classes": k,
                              "roi_size": [16, 16], "teacher_ckpt": str(ckpt), "align_teacher_classes": align,
                              "ckpt_dir": str(tmp_path / "models"), "output_dir": str(tmp_path / "eval")})
    wf.initialize()
    net = wf.parser.get_parsed_content("network")
    bias = [m for m in net.mask_net.modules() if isinstance(m, torch.nn.Conv2d)][-1].bias.detach().cpu()
    assert int(bias.argmax()) == (0 if align else k - 1)

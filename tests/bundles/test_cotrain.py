"""End-to-end tests of bundles/cotrain (phase 2): train 2D / 3D from a fresh teacher checkpoint, plain CPS,
teacher-checkpoint errors, evaluate (2D, 3D), inference (2D, 3D, datalist key), metadata."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from custom_components.bundle_tools.verify import validate_metadata
from custom_components.networks import DiffusionTeacher, MaskPathwaySegmenter, load_teacher_weights

BUNDLE = "cotrain"
BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
ROOT = Path(__file__).resolve().parents[2] / "bundles" / BUNDLE
#: tiny two-level networks, single-process data loading
TINY = {"channels": [8, 16], "norm_num_groups": 4, "num_workers": 0}


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _fresh_teacher(path: Path, spatial_dims: int, in_channels: int, channels=(8, 16), seed: int = 123,
                   backbone: str = "diffusion_unet") -> Path:
    """Write a freshly initialised DiffusionTeacher state dict (a stand-in for phase 1's teacher.pt)."""
    torch.manual_seed(seed)
    net = DiffusionTeacher(spatial_dims, in_channels, 2, channels=list(channels), norm_num_groups=4,
                           backbone=backbone)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def _fresh_deployable(path: Path, spatial_dims: int, in_channels: int) -> Path:
    """Write a freshly initialised deployable MaskPathwaySegmenter state dict (a stand-in for models/model.pt)."""
    torch.manual_seed(7)
    net = MaskPathwaySegmenter(spatial_dims, in_channels, 2, channels=[8, 16], norm_num_groups=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    # and the validation choice training writes beside it (the post-processing threshold)
    (path.parent / "model_selection.json").write_text(json.dumps({"network": "teacher", "threshold": 0.5}))
    return path


def _train_overrides(dataset: Path, out: Path, roi: list[int], teacher_ckpt: str, **extra) -> dict:
    return {
        **TINY,
        "dataset_dir": str(dataset),
        "output_dir": str(out / "eval"),
        "ckpt_dir": str(out / "models"),
        "teacher_ckpt": teacher_ckpt,
        "roi_size": roi,
        "batch_size": 2,
        "val_batch_size": 2,
        "max_epochs": 1,
        "val_interval": 1,
        "rounds": 1,
        "check_datalist_files": False,
        **extra,
    }


def _check_outputs(models: Path, wf, spatial_dims: int) -> None:
    """model.pt (deployable), model_selection.json, teacher.pt, train_state.pt."""
    weights = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    assert any(v.ndim == spatial_dims + 2 for v in weights.values()), f"{spatial_dims}D convolutions expected"
    deployable = wf.parser.get_parsed_content("deployable_def")
    deployable.load_state_dict(weights)  # one network: the deployable MaskPathwaySegmenter
    selection = json.loads((models / "model_selection.json").read_text())
    assert selection["network"] in ("student", "teacher") and 0.0 < selection["threshold"] < 1.0
    assert len(selection["curve"]["thresholds"]) == len(selection["curve"]["dice"]) == 49  # the validation curve
    teacher = wf.parser.get_parsed_content("network_def")
    load_teacher_weights(teacher, models / "teacher.pt")  # the teacher of the selected epoch, usable by phase 3
    if selection["network"] == "teacher":  # saved at the same moment: the deployable is that teacher's mask pathway
        for k, v in teacher.mask_net.state_dict().items():
            assert torch.equal(weights[f"mask_net.{k}"], v)
    assert (models / "train_state.pt").is_file()


@pytest.mark.parametrize("rounds,round_mode,round_scale", [(1, "independent", 1.0), (2, "chained", 0.5)])
def test_train_2d_from_teacher_checkpoint(rounds, round_mode, round_scale, tiny_dataset_2d, tmp_path,
                                          make_bundle_workflow):
    data = tiny_dataset_2d(num_cases=6, size=24)
    ckpt = _fresh_teacher(tmp_path / "phase1" / "teacher.pt", 2, 3)
    overrides = _train_overrides(data, tmp_path, [16, 16], str(ckpt), rounds=rounds, round_mode=round_mode,
                                 round_scale=round_scale)
    wf = make_bundle_workflow(BUNDLE, ["train"], "train", **overrides)
    wf.initialize()
    assert wf.check_properties() == []
    saved = torch.load(ckpt, weights_only=True)
    teacher = wf.parser.get_parsed_content("network")
    assert all(torch.equal(v.cpu(), saved[k]) for k, v in teacher.state_dict().items()), "teacher_ckpt not loaded"
    student = wf.parser.get_parsed_content("student")
    assert student is not teacher and not torch.equal(
        student.mask_net.conv_in.conv.weight, teacher.mask_net.conv_in.conv.weight
    ), "the twin student must be a separate, freshly initialised network"
    wf.run()
    wf.finalize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.rounds == rounds and trainer.round_mode == round_mode
    assert trainer.round_scale == round_scale
    out = trainer.state.output
    assert float(out["loss_rec"]) > 0 and torch.isfinite(out["loss"])
    _check_outputs(tmp_path / "models", wf, 2)


def test_fast_backbone_with_rounds_on_the_unlabelled_half_trains_and_its_model_runs_inference(
        tiny_dataset_2d, tmp_path, make_bundle_workflow, run_bundle):
    """Issue 27: ``backbone: fast`` (one id: teacher, student, deployable) and ``round_batch: unlabeled`` through the
    bundle: phase 1's fast teacher loads, training runs, and inference.json with the same id runs the saved model."""
    from custom_components.networks import TimeConditionedUNet

    data = tiny_dataset_2d(num_cases=6, size=24)
    ckpt = _fresh_teacher(tmp_path / "phase1" / "teacher.pt", 2, 3, backbone="fast")
    overrides = _train_overrides(data, tmp_path, [16, 16], str(ckpt), rounds=2, backbone="fast",
                                 round_batch="unlabeled")
    wf = make_bundle_workflow(BUNDLE, ["train"], "train", **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.round_batch == "unlabeled" and isinstance(trainer.teacher.image_net, TimeConditionedUNet)
    assert isinstance(trainer.student.mask_net, TimeConditionedUNet)
    assert float(trainer.state.output["loss_rec"]) > 0
    _check_outputs(tmp_path / "models", wf, 2)
    run_bundle(BUNDLE, ["inference"], "inference", **_inference_overrides(
        tmp_path, [16, 16], input_dir=str(data / "imagesTr"), backbone="fast"))
    assert len(list((tmp_path / "pred").glob("*_seg.png"))) == len(list((data / "imagesTr").glob("*.png")))


def test_model_selection_never_reads_the_test_split(tiny_dataset_2d, tmp_path, make_bundle_workflow):
    """METHOD.md, "Model selection": student / teacher and the threshold are chosen on the validation split only.
    Every test image and label is made unreadable, so a run that touched one would fail; the evaluator that
    selects must hold exactly the validation cases."""
    data = tiny_dataset_2d(num_cases=8, size=24, splits={"labeled": 2, "unlabeled": 2, "validation": 2, "test": 2})
    datalist = json.loads((data / "datalist.json").read_text())
    for item in datalist["test"]:
        for key in ("image", "label"):
            (data / item[key]).write_bytes(b"not an image: selection must never read the test split")
    ckpt = _fresh_teacher(tmp_path / "phase1" / "teacher.pt", 2, 3)
    wf = make_bundle_workflow(BUNDLE, ["train"], "train", **_train_overrides(data, tmp_path, [16, 16], str(ckpt)))
    wf.initialize()
    wf.run()
    wf.finalize()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    seen = {Path(d["image"]).resolve() for d in evaluator.data_loader.dataset.data}
    assert seen == {(data / d["image"]).resolve() for d in datalist["validation"]}
    assert evaluator.state.iteration > 0  # validation ran, so a selection was made from these cases
    assert json.loads((tmp_path / "models" / "model_selection.json").read_text())["network"] in ("student", "teacher")


def test_train_3d_profile(tiny_dataset_3d, tmp_path, run_bundle):
    data = tiny_dataset_3d(num_cases=6, size=(16, 20, 12))  # one side smaller than roi_size, one larger
    ckpt = _fresh_teacher(tmp_path / "phase1" / "teacher.pt", 3, 1)
    overrides = _train_overrides(data, tmp_path, [16, 16, 16], str(ckpt), val_batch_size=1)
    wf = run_bundle(BUNDLE, ["train", "profile_3d"], "train", **overrides)
    assert wf.parser.get_parsed_content("network").spatial_dims == 3
    assert type(wf.parser.get_parsed_content("validate#inferer")).__name__ == "SlidingWindowInferer"
    _check_outputs(tmp_path / "models", wf, 3)


def _phase1_run(tmp_path: Path, best_assignment: float, baseline: float = 0.45) -> Path:
    """A stand-in for a teacher_pretrain folder: models/teacher.pt and the checks of eval/metrics.csv."""
    ckpt = _fresh_teacher(tmp_path / "teacher_pretrain" / "models" / "teacher.pt", 2, 3)
    (ckpt.parents[1] / "eval").mkdir()
    (ckpt.parents[1] / "eval" / "metrics.csv").write_text(
        f"val_best_assignment_dice,{best_assignment}\nval_all_foreground_dice,{baseline}\n")
    return ckpt


def test_phase1_gate_keeps_a_teacher_that_beats_the_all_foreground_baseline(tiny_dataset_2d, tmp_path,
                                                                            make_bundle_workflow):
    data = tiny_dataset_2d(num_cases=6, size=16)
    ckpt = _phase1_run(tmp_path, best_assignment=0.6)
    wf = make_bundle_workflow(BUNDLE, ["train"], "train",
                              **_train_overrides(data, tmp_path, [16, 16], str(ckpt), phase1_gate=True))
    wf.initialize()
    assert wf.parser.get_parsed_content("phase1_decision")[0] is True
    saved = torch.load(ckpt, weights_only=True)
    teacher = wf.parser.get_parsed_content("network")
    assert all(torch.equal(v.cpu(), saved[k]) for k, v in teacher.state_dict().items()), "teacher_ckpt not loaded"
    assert wf.parser.get_parsed_content("validate#model_saver").warnings == []
    trainer = wf.parser.get_parsed_content("train#trainer")  # the safeguards are off by default
    assert trainer.unsup_rampup is None and (trainer.pseudo_confidence, trainer.pseudo_weighting) == (0.0, "hard")


def test_phase1_gate_falls_back_to_a_fresh_teacher_and_says_so_with_every_safeguard_on(tiny_dataset_2d, tmp_path,
                                                                                       make_bundle_workflow):
    """A phase-1 teacher below the all-foreground baseline is not loaded; model_selection.json's warnings (which the
    runner's report shows) say so. The other switches reach the trainer and its CPS loss."""
    from custom_components.engines import ProgressRampUp

    data = tiny_dataset_2d(num_cases=6, size=16)
    ckpt = _phase1_run(tmp_path, best_assignment=0.3)
    overrides = _train_overrides(data, tmp_path, [16, 16], str(ckpt), phase1_gate=True, pseudo_confidence=0.55,
                                 pseudo_weighting="confidence", unlabeled_rampup_frac=0.5,
                                 unlabeled_rampup="linear")
    wf = make_bundle_workflow(BUNDLE, ["train"], "train", **overrides)
    wf.initialize()
    saved = torch.load(ckpt, weights_only=True)
    teacher = wf.parser.get_parsed_content("network")
    assert not all(torch.equal(v.cpu(), saved[k]) for k, v in teacher.state_dict().items()), "phase-1 weights loaded"
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert (trainer.pseudo_confidence, trainer.pseudo_weighting) == (0.55, "confidence")
    assert (trainer.cps_loss.confidence, trainer.cps_loss.weighting) == (0.55, "confidence")
    assert isinstance(trainer.unsup_rampup, ProgressRampUp)
    assert (trainer.unsup_rampup.ramp, trainer.unsup_rampup.shape) == (0.5, "linear")
    wf.run()
    wf.finalize()
    assert "pseudo_kept" in trainer.state.output
    selection = json.loads((tmp_path / "models" / "model_selection.json").read_text())
    assert "phase-1 best-assignment Dice 0.3000 does not beat the all-foreground baseline 0.4500" in \
        selection["warnings"][0]
    assert "fresh (untrained) teacher" in selection["warnings"][0]
    # evaluation stacks the same ids but never runs the gate again (here it could not: the checks are gone)
    (ckpt.parents[1] / "eval" / "metrics.csv").unlink()
    ev = make_bundle_workflow(BUNDLE, ["train", "evaluate"], "eval", **overrides)
    ev.initialize()
    ev.run()
    ev.finalize()
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_phase1_gate_reads_what_a_real_phase1_run_writes(tiny_dataset_2d, tmp_path, run_bundle, make_bundle_workflow):
    """The default phase1_metrics (beside teacher_ckpt: ``<phase 1>/eval/metrics.csv``) is where teacher_pretrain
    writes its checks, with the two values the gate compares."""
    from custom_components.engines import phase1_gate

    data = tiny_dataset_2d(num_cases=6, size=16)
    p1 = tmp_path / "teacher_pretrain"
    run_bundle("teacher_pretrain", ["train"], "train", **TINY, dataset_dir=str(data), output_dir=str(p1 / "eval"),
               ckpt_dir=str(p1 / "models"), roi_size=[16, 16], batch_size=2, val_batch_size=2, max_epochs=1,
               val_interval=1, check_datalist_files=False)
    ckpt = p1 / "models" / "teacher.pt"
    wf = make_bundle_workflow(BUNDLE, ["train"], "train",
                              **_train_overrides(data, tmp_path / "p2", [16, 16], str(ckpt), phase1_gate=True))
    wf.initialize()
    assert wf.parser.get_parsed_content("phase1_metrics") == str(p1 / "eval" / "metrics.csv")
    assert wf.parser.get_parsed_content("phase1_decision") == phase1_gate(p1 / "eval" / "metrics.csv")


def test_plain_cps_without_teacher_checkpoint(tiny_dataset_2d, tmp_path, run_bundle):
    data = tiny_dataset_2d(num_cases=6, size=16)
    overrides = _train_overrides(data, tmp_path, [16, 16], "", rounds=0)
    wf = run_bundle(BUNDLE, ["train"], "train", **overrides)
    out = wf.parser.get_parsed_content("train#trainer").state.output
    assert float(out["loss_rec"]) == 0.0 and float(out["loss_align"]) == 0.0
    assert float(out["loss_cps"]) > 0.0
    _check_outputs(tmp_path / "models", wf, 2)


def test_missing_teacher_checkpoint_names_the_file(tiny_dataset_2d, tmp_path, make_bundle_workflow):
    data = tiny_dataset_2d(num_cases=4, size=16)
    missing = tmp_path / "nowhere" / "teacher.pt"
    wf = make_bundle_workflow(BUNDLE, ["train"], "train", **_train_overrides(data, tmp_path, [16, 16], str(missing)))
    with pytest.raises(RuntimeError) as err:
        wf.initialize()
    cause = _root_cause(err.value)
    assert isinstance(cause, FileNotFoundError)
    assert str(missing) in str(cause) and "teacher_pretrain" in str(cause)


def test_teacher_checkpoint_of_another_architecture(tiny_dataset_2d, tmp_path, make_bundle_workflow):
    data = tiny_dataset_2d(num_cases=4, size=16)
    ckpt = _fresh_teacher(tmp_path / "phase1" / "teacher.pt", 2, 3, channels=(16, 32))
    wf = make_bundle_workflow(BUNDLE, ["train"], "train", **_train_overrides(data, tmp_path, [16, 16], str(ckpt)))
    with pytest.raises(RuntimeError) as err:
        wf.initialize()
    cause = _root_cause(err.value)
    assert isinstance(cause, ValueError)
    msg = str(cause)
    assert str(ckpt) in msg
    assert "DiffusionTeacher(spatial_dims=2, in_channels=3, num_classes=2, num_levels=2" in msg
    assert "shape mismatch" in msg


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_evaluate_writes_metrics(spatial_dims, tiny_dataset_2d, tiny_dataset_3d, tmp_path, make_bundle_workflow):
    if spatial_dims == 2:  # non-square native size, different from roi_size: predictions are inverted
        data, roi, names, c = tiny_dataset_2d(num_cases=8, size=(20, 28)), [16, 16], ["train", "evaluate"], 3
    else:
        data, roi, names, c = (tiny_dataset_3d(num_cases=8, size=(16, 20, 12)), [16, 16, 16],
                               ["train", "evaluate", "profile_3d"], 1)
    _fresh_deployable(tmp_path / "models" / "model.pt", spatial_dims, c)
    overrides = _train_overrides(data, tmp_path, roi, "")
    wf = make_bundle_workflow(BUNDLE, names, "eval", **overrides)
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    test_cases = json.loads((data / "datalist.json").read_text())["test"]
    with open(tmp_path / "eval" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(test_cases) == 2
    assert all(0.0 <= float(r["dice_class1"]) <= 1.0 for r in rows)
    assert (tmp_path / "eval" / "metrics.json").is_file()
    assert not (tmp_path / "models" / "train_state.pt").exists(), "evaluation must not train"
    assert not (tmp_path / "models" / "teacher.pt").exists(), "evaluation must not write a teacher"


def test_evaluate_and_inference_with_the_ddim_sampler(tiny_dataset_2d, tmp_path, make_bundle_workflow, run_bundle):
    """The inference setting is a top-level id of evaluate.json and inference.json: ``--sampler ddim --ddim_steps N``
    (with ``--num_draws``) builds the deployable model with that sampler from the same model.pt."""
    data = tiny_dataset_2d(num_cases=8, size=(20, 28))
    _fresh_deployable(tmp_path / "models" / "model.pt", 2, 3)
    overrides = _train_overrides(data, tmp_path, [16, 16], "", sampler="ddim", ddim_steps=2, num_draws=2)
    wf = make_bundle_workflow(BUNDLE, ["train", "evaluate"], "eval", **overrides)
    wf.initialize()
    net = wf.parser.get_parsed_content("deployable")
    assert (net.sampler, net.ddim_timesteps, net.num_draws) == ("ddim", [999, 0], 2)
    wf.run()
    wf.finalize()
    assert len(json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_case"]) == 2
    infer = make_bundle_workflow(BUNDLE, ["inference"], "infer", **_inference_overrides(tmp_path, [16, 16],
                                 dataset_dir=str(data), sampler="ddim", ddim_steps=3))
    infer.initialize()
    assert infer.parser.get_parsed_content("network").ddim_timesteps == [999, 500, 0]
    infer.run()
    assert len(list((tmp_path / "pred").glob("*_seg.png"))) == 2  # the test key


def _inference_overrides(tmp_path: Path, roi: list[int], **extra) -> dict:
    return {**TINY, "output_dir": str(tmp_path / "pred"), "ckpt_dir": str(tmp_path / "models"), "roi_size": roi,
            **extra}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_inference_writes_mask_and_uncertainty_per_input(spatial_dims, tiny_dataset_2d, tiny_dataset_3d, tmp_path,
                                                         run_bundle):
    if spatial_dims == 2:
        data, names, roi, ext, c = tiny_dataset_2d(num_cases=4, size=(20, 28)), ["inference"], [16, 16], ".png", 3
    else:
        data = tiny_dataset_3d(num_cases=4, size=(16, 20, 12), spacing=(0.625, 0.625, 1.25))
        names, roi, ext, c = ["inference", "profile_3d"], [16, 16, 16], ".nii.gz", 1
    _fresh_deployable(tmp_path / "models" / "model.pt", spatial_dims, c)
    run_bundle(BUNDLE, names, "inference", **_inference_overrides(tmp_path, roi, input_dir=str(data / "imagesTr")))
    inputs = sorted((data / "imagesTr").glob("*" + ext))
    assert len(inputs) == 4
    assert len(list((tmp_path / "pred").glob("*_seg" + ext))) == len(inputs)
    assert len(list((tmp_path / "pred").glob("*_uncertainty" + ext))) == len(inputs)
    for src in inputs:
        seg = tmp_path / "pred" / src.name.replace(ext, "_seg" + ext)
        unc = tmp_path / "pred" / src.name.replace(ext, "_uncertainty" + ext)
        if spatial_dims == 2:
            image = np.asarray(Image.open(src))
            mask, u = np.asarray(Image.open(seg)), np.asarray(Image.open(unc))
            assert mask.dtype == np.uint8 and mask.shape == u.shape == image.shape[:2]
        else:
            image, m, un = nib.load(str(src)), nib.load(str(seg)), nib.load(str(unc))
            assert m.shape == un.shape == image.shape
            assert np.allclose(m.affine, image.affine) and np.allclose(un.affine, image.affine)
            assert m.get_data_dtype() == np.uint8
            mask, u = np.asarray(m.dataobj), np.asarray(un.dataobj)
            assert 0.0 <= u.min() and u.max() <= 1.0 + 1e-6
        assert set(np.unique(mask)) <= {0, 1}


def test_phase3_teacher_is_the_teacher_of_the_selected_epoch(tiny_dataset_2d, tmp_path, make_bundle_workflow):
    """teacher.pt (phase 3's default teacher_ckpt) is written by the model saver with every new best model, so it
    is the teacher of the selected epoch; no handler rewrites it at the end of training."""
    data = tiny_dataset_2d(num_cases=6, size=24)
    ckpt = _fresh_teacher(tmp_path / "phase1" / "teacher.pt", 2, 3)
    wf = make_bundle_workflow(BUNDLE, ["train"], "train", **_train_overrides(data, tmp_path, [16, 16], str(ckpt)))
    wf.initialize()
    saver = wf.parser.get_parsed_content("validate#model_saver")
    assert saver.also_save["teacher.pt"] is wf.parser.get_parsed_content("network")
    from monai.handlers import CheckpointSaver

    assert not [h for h in wf.parser.get_parsed_content("train#handlers") if isinstance(h, CheckpointSaver)]
    phase3 = json.loads((BUNDLES / "pseudolabel" / "configs" / "inference.json").read_text())
    assert phase3["teacher_ckpt"].endswith("/../cotrain/models/teacher.pt'")


def test_threshold_is_applied_after_the_uncertainty_map(tiny_dataset_2d, tmp_path, run_bundle):
    """The deployable model returns raw probabilities; the validation threshold (model_selection.json) changes the
    masks but not the uncertainty maps, which come from the network's own probabilities."""
    data = tiny_dataset_2d(num_cases=4, size=16)
    model = _fresh_deployable(tmp_path / "models" / "model.pt", 2, 3)
    g = torch.Generator().manual_seed(0)
    weights = {k: v + 0.3 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
               for k, v in torch.load(model, weights_only=True).items()}  # fresh outputs are a constant 0.5
    torch.save(weights, model)
    outputs = {}
    for thr in (0.5, 0.02):
        (model.parent / "model_selection.json").write_text(json.dumps({"network": "teacher", "threshold": thr}))
        overrides = {**_inference_overrides(tmp_path, [16, 16], input_dir=str(data / "imagesTr")),
                     "output_dir": str(tmp_path / f"pred_{thr}")}
        run_bundle(BUNDLE, ["inference"], "inference", **overrides)
        files = sorted((tmp_path / f"pred_{thr}").glob("*.png"))
        outputs[thr] = {f.name: np.asarray(Image.open(f)) for f in files}
    unc = [n for n in outputs[0.5] if n.endswith("_uncertainty.png")]
    seg = [n for n in outputs[0.5] if n.endswith("_seg.png")]
    assert len(unc) == len(seg) == 4
    for n in unc:
        assert np.array_equal(outputs[0.5][n], outputs[0.02][n])
    fg = {thr: sum(int(outputs[thr][n].sum()) for n in seg) for thr in outputs}
    assert fg[0.02] > fg[0.5]  # the lower threshold marks more foreground


def test_inference_on_datalist_key(tiny_dataset_2d, tmp_path, run_bundle):
    data = tiny_dataset_2d(num_cases=8, size=16)
    _fresh_deployable(tmp_path / "models" / "model.pt", 2, 3)
    overrides = _inference_overrides(tmp_path, [16, 16], dataset_dir=str(data), infer_key="validation",
                                     save_uncertainty=False)
    run_bundle(BUNDLE, ["inference"], "inference", **overrides)
    n_val = len(json.loads((data / "datalist.json").read_text())["validation"])
    assert len(list((tmp_path / "pred").glob("*_seg.png"))) == n_val == 2
    assert not list((tmp_path / "pred").glob("*_uncertainty.png"))


def test_metadata_is_valid_and_matches_deployable_network():
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    assert validate_metadata(meta) == []
    assert meta["version"] in meta["changelog"]
    infer = json.loads((ROOT / "configs" / "inference.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert len(image["spatial_shape"]) == len(pred["spatial_shape"]) == infer["spatial_dims"] == 2
    assert image["num_channels"] == infer["in_channels"] and pred["num_channels"] == infer["num_classes"]
    assert pred["channel_def"] == {"0": "background", "1": "foreground"}
    # the deployable network really maps image -> K class probabilities
    net = MaskPathwaySegmenter(2, image["num_channels"], pred["num_channels"], channels=[8, 16],
                               norm_num_groups=4).eval()
    with torch.no_grad():
        probs = net(torch.rand(1, image["num_channels"], 16, 16) * 2 - 1)
    assert probs.shape == (1, pred["num_channels"], 16, 16)
    assert torch.allclose(probs.sum(1), torch.ones(1, 16, 16), atol=1e-5)
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert (ROOT / "configs" / "logging.conf").is_file() and (ROOT / "docs" / "README.md").is_file()


@pytest.mark.parametrize("profile", [None, "profile_3d"])
def test_teacher_architecture_matches_phase1(profile):
    """The default teacher_ckpt of phase 1 must load: both bundles configure the same DiffusionTeacher."""
    from monai.bundle import ConfigParser

    def arch(bundle: str) -> dict:
        parser = ConfigParser()
        names = ["train"] + ([profile] if profile else [])
        parser.read_config([str(ROOT.parent / bundle / "configs" / f"{n}.json") for n in names])
        keys = ("spatial_dims", "in_channels", "num_classes", "roi_size", "channels", "num_res_blocks",
                "norm_num_groups", "num_train_timesteps", "noise_schedule", "infer_timestep")
        return {k: parser[k] for k in keys}

    assert arch("teacher_pretrain") == arch("cotrain")
    inference = json.loads((ROOT / "configs" / "inference.json").read_text())
    if profile is None:
        assert {k: inference[k] for k in ("spatial_dims", "in_channels", "num_classes", "channels")} == {
            k: arch("cotrain")[k] for k in ("spatial_dims", "in_channels", "num_classes", "channels")
        }

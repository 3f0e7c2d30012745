"""SegmentationReport on a tiny SupervisedEvaluator run over synthetic 2D and 3D cases."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, load_decathlon_datalist
from monai.engines import SupervisedEvaluator
from monai.transforms import AsDiscreted, Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

from custom_components.handlers.report import SegmentationReport, to_label_map
from custom_components.metrics import compute_case_metrics


class ThresholdNet(torch.nn.Module):
    """Identity-ish network: logits of background / foreground from the (first channel of the) image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = x[:, :1] - 0.5
        return torch.cat([-fg, fg], dim=1) * 10


def _run(root, protocol: str, capsys) -> tuple[SupervisedEvaluator, SegmentationReport, list[dict], dict]:
    data = load_decathlon_datalist(str(root / "datalist.json"), data_list_key="test")
    pre = Compose(
        [
            LoadImaged(["image", "label"], image_only=True),
            EnsureChannelFirstd(["image", "label"]),
            ScaleIntensityd("image"),
        ]
    )
    loader = DataLoader(Dataset(data, pre), batch_size=2, num_workers=0)
    report = SegmentationReport(root / "out", protocol, num_classes=2, class_names=["bg", "fg"])
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=ThresholdNet(),
        postprocessing=AsDiscreted("pred", argmax=True),
        val_handlers=[report],
    )
    evaluator.run()
    printed = capsys.readouterr().out
    assert f"protocol: {protocol}" in printed and "fg" in printed
    with open(root / "out" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    payload = json.loads((root / "out" / "metrics.json").read_text())
    assert evaluator.state.metrics["segmentation_report"]["num_cases"] == len(data)
    return evaluator, report, rows, payload


def test_report_3d_in_mm(tiny_dataset_3d, capsys) -> None:
    root = tiny_dataset_3d(
        num_cases=4, size=16, spacing=(0.5, 0.5, 2.0), splits={"labeled": 1, "unlabeled": 0, "validation": 0, "test": 3}
    )
    _, report, rows, payload = _run(root, "clean", capsys)
    assert [r["case"] for r in rows] == ["case_001", "case_002", "case_003"]
    assert {r["protocol"] for r in rows} == {"clean"} and {r["distance_unit"] for r in rows} == {"mm"}
    assert {r["spacing"] for r in rows} == {"0.5x0.5x2"}
    assert all(float(r["dice_fg"]) > 0.9 for r in rows)
    assert payload["protocol"] == "clean" and payload["summary"]["distance_unit"] == "mm"
    # the handler's numbers equal a direct computation on the same prediction
    import nibabel as nib

    img = nib.load(str(root / "imagesTr" / "case_001.nii.gz")).get_fdata()
    img = (img - img.min()) / (img.max() - img.min())
    lab = nib.load(str(root / "labelsTr" / "case_001.nii.gz")).get_fdata()
    direct = compute_case_metrics((img > 0.5).astype(int), lab, 2, "clean", spacing=(0.5, 0.5, 2.0))
    assert float(rows[0]["hd95_fg"]) == pytest.approx(direct["hd95_class1"], rel=1e-5)


def test_report_2d_la_uamt_runs_again_cleanly(tiny_dataset_2d, capsys) -> None:
    root = tiny_dataset_2d(num_cases=5, size=20, splits={"labeled": 1, "unlabeled": 0, "validation": 0, "test": 4})
    evaluator, report, rows, payload = _run(root, "la_uamt", capsys)
    assert len(rows) == 4 and {r["distance_unit"] for r in rows} == {"voxel"}
    assert payload["protocol_definition"]["asd"] == "pred_to_ref"
    evaluator.run()  # reset at STARTED: a second run does not accumulate
    assert len(report.rows) == 4 and len(json.loads((root / "out" / "metrics.json").read_text())["per_case"]) == 4


def test_to_label_map_and_missing_keys() -> None:
    onehot = np.zeros((3, 4, 4))
    onehot[2] = 1
    assert (to_label_map(onehot) == 2).all()
    assert to_label_map(torch.ones(1, 4, 4)).shape == (4, 4)
    with pytest.raises(ValueError, match="must be channel first"):
        to_label_map(np.zeros((4, 4)))

    class FakeState:
        output = [{"pred": torch.zeros(1, 4, 4)}]

    class FakeEngine:
        state = FakeState()

    with pytest.raises(KeyError, match="needs keys 'pred' and 'label'"):
        SegmentationReport("/tmp/unused", num_classes=2).iteration_completed(FakeEngine())

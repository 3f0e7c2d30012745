"""``--tracking mlflow`` on every training bundle, offline (local SQLite store): one epoch, metrics read back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None,
    reason="mlflow is not installed (optional extra: pip install -e .[mlflow]; .ci/run installs it)",
)

COMMON = {"num_workers": 0, "max_epochs": 1, "val_interval": 1, "batch_size": 2, "roi_size": [16, 16],
          "check_datalist_files": False}
CASES = {
    "supervised": ({"network_def#channels": [4, 8, 16], "network_def#strides": [2, 2], "network_def#num_res_units": 0},
                   {"train_loss"}),
    "teacher_pretrain": ({"channels": [8, 16], "norm_num_groups": 4},
                         {"loss", "loss_cyc", "frac_class1", "val_probe_dice"}),
    "cotrain": ({"channels": [8, 16], "norm_num_groups": 4, "teacher_ckpt": "", "rounds": 1, "val_batch_size": 2},
                {"loss", "loss_sup", "loss_cps", "loss_rec", "loss_align"}),
}


@pytest.mark.parametrize("bundle", list(CASES))
def test_mlflow_tracking_logs_named_loss_terms(bundle, tiny_dataset_2d, tmp_path):
    from mlflow.tracking import MlflowClient
    from monai.utils import path_to_sqlite_uri

    data = tiny_dataset_2d(num_cases=8, size=16)
    extra, expected = CASES[bundle]
    wf = ConfigWorkflow(config_file=str(BUNDLES / bundle / "configs" / "train.json"), workflow_type="train",
                        tracking="mlflow", dataset_dir=str(data), ckpt_dir=str(tmp_path / "models"),
                        output_dir=str(tmp_path / "eval"), **COMMON, **extra)
    wf.initialize()
    wf.run()
    wf.finalize()
    db = tmp_path / "eval" / "mlruns.db"
    assert db.is_file(), "the default MONAI settings keep a SQLite store under output_dir"
    client = MlflowClient(tracking_uri=path_to_sqlite_uri(str(db)))
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    logged = set().union(*(r.data.metrics for r in runs))
    assert expected <= logged, f"{bundle}: logged {sorted(logged)}"
    run = next(r for r in runs if expected <= set(r.data.metrics))
    for key in expected:
        history = client.get_metric_history(run.info.run_id, key)
        assert history and all(m.value == m.value for m in history), f"{bundle}: {key} missing or NaN"

"""A new method is one class + one ``register`` call: a toy semi-supervised method (entropy minimisation on the
unlabelled batch) defined here trains a few iterations through the experiment runner, on the supervised bundle with
the semi-supervised override file, and is evaluated like supervised-only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from custom_components.engines import SemiSupervisedTrainer
from custom_components.experiments import runner as rx
from custom_components.experiments.methods import METHODS, SEMI_SUPERVISED, Method, register


class EntropyMinTrainer(SemiSupervisedTrainer):
    """The toy method: supervised loss + 0.1 x the mean prediction entropy on the unlabelled batch."""

    def compute_losses(self, x_l, y, x_u, epoch):
        p = self.network(torch.cat([x_l, x_u]))
        sup = self.sup_loss(p[: len(x_l)], y)
        q = p[len(x_l):].float().softmax(1)
        ent = -(q * q.clamp_min(1e-8).log()).sum(1).mean()
        return {"loss": sup + 0.1 * ent, "loss_sup": sup, "loss_ent": ent}


def test_a_toy_method_trains_through_the_runner(tmp_path, monkeypatch, request):
    from custom_components.data import make_synthetic_dataset

    register(Method("toy_entmin", bundle="supervised", overrides=SEMI_SUPERVISED,
                    settings={"train#trainer#_target_": f"{Path(__file__).stem}.EntropyMinTrainer"}))
    request.addfinalizer(lambda: METHODS.pop("toy_entmin", None))
    # the bundle runs in a subprocess: it imports the toy class from this file
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))

    dl = make_synthetic_dataset(tmp_path / "syn", num_cases=16, image_size=16, seed=0)
    settings = rx.RunnerSettings(
        dataset=dl, work_dir=tmp_path / "wd", results_dir=tmp_path / "res", methods=["toy_entmin"], ratios=[0.25],
        seeds=[0], protocols=["clean"], num_qualitative=1, jobs=1,
        overrides=[rx.parse_override(o) for o in ("*:max_epochs=2", "*:roi_size=[16,16]", "*:num_workers=0",
                                                   "supervised:network_def#channels=[4,8,16]")])
    rx.Experiment(settings, "cmd").run()
    (run_json,) = (tmp_path / "wd").rglob("toy_entmin/r0.25_s0/run.json")
    run = json.loads(run_json.read_text())
    sup = run_json.parent / "supervised"
    assert (sup / "models" / "model.pt").is_file() and run["selection"]["epoch"] >= 1
    log = (sup / "train.log").read_text()
    assert "loss_ent" in log  # the toy trainer ran (its own loss term is logged)
    assert json.loads(Path(run["metrics"]["clean"]).read_text())  # evaluated like supervised-only

"""The bundles under ``selection: last`` (a cross-validation fold with no validation set, issue 25)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def test_supervised_bundle_without_validation_keeps_the_last_checkpoint(tiny_dataset_2d, tmp_path, run_bundle):
    """One tiny real training: a fold datalist with ``"selection": "last"`` and no validation case trains without
    a validation run and writes the last epoch's network."""
    data = tiny_dataset_2d(num_cases=6, size=24)
    dl = json.loads((data / "datalist.json").read_text())
    dl["labeled"] = dl["labeled"] + dl.pop("validation")
    dl.update(validation=[], selection="last")
    fold = data / "fold.json"
    fold.write_text(json.dumps(dl))
    out = tmp_path / "run"
    wf = run_bundle("supervised", ["train"], "train", **{
        "network_def#channels": [4, 8, 16], "network_def#strides": [2, 2], "network_def#num_res_units": 0,
        "num_workers": 0, "check_datalist_files": False, "dataset_dir": str(data), "datalist": str(fold),
        "output_dir": str(out / "eval"), "ckpt_dir": str(out / "models"), "max_epochs": 2, "val_interval": 1,
        "batch_size": 2, "roi_size": [16, 16]})
    assert wf.parser.get_parsed_content("selection") == "last"
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2
    assert not any(type(h).__name__ == "ValidationHandler" for h in wf.parser.get_parsed_content("train#handlers"))
    net = wf.parser.get_parsed_content("network")
    saved = torch.load(out / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v.cpu()) for k, v in net.state_dict().items())  # the final weights
    sel = json.loads((out / "models" / "model_selection.json").read_text())
    assert sel["selection"] == "last" and sel["epoch"] == 2 and sel["network"] == "supervised"


def test_cotrain_bundle_under_selection_last_has_no_validation_and_saves_at_the_end(tiny_dataset_2d, tmp_path):
    """The same wiring in cotrain (parsed, not trained): no ``ValidationHandler``, no validation list required,
    the saver in ``last`` mode (attached to the trainer by the ``run`` list)."""
    from monai.bundle import ConfigParser

    data = tiny_dataset_2d(num_cases=6, size=24)
    dl = json.loads((data / "datalist.json").read_text())
    dl.update(validation=[], selection="last")
    fold = data / "fold.json"
    fold.write_text(json.dumps(dl))
    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parents[2] / "bundles" / "cotrain" / "configs" / "train.json"))
    parser.update({"datalist": str(fold), "dataset_dir": str(data), "ckpt_dir": str(tmp_path / "models"),
                   "output_dir": str(tmp_path / "eval"), "num_workers": 0, "check_datalist_files": False})
    assert parser.get_parsed_content("selection") == "last"
    assert "validation" not in parser.get_parsed_content("initialize#0#require_keys")
    assert parser.get_parsed_content("validate#model_saver").selection == "last"
    assert not any(type(h).__name__ == "ValidationHandler" for h in parser.get_parsed_content("train#handlers"))
    run = [r.replace("::", "#") for r in parser["run"]]
    attach = [r for r in run if "model_saver" in r]  # wired before the trainer runs, after it is built
    assert len(attach) == 1 and ".attach(@train#trainer)" in attach[0] and run[-1] == "$@train#trainer.run()"
    assert attach[0].index("@train#trainer") < attach[0].index("@validate#model_saver")

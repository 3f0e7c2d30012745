"""``selection: last`` (few labels, issue 25): no selection on validation; the last checkpoint is the model."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine

from custom_components.data.datalist import DatalistError
from custom_components.handlers import SelectedModelSaver, selection_mode


def test_selection_mode_reads_the_datalist(tmp_path):
    def mode(**data):
        p = tmp_path / "d.json"
        p.write_text(json.dumps({"labeled": [{"image": "a"}], **data}))
        return selection_mode(p)

    assert mode(validation=[{"image": "v"}]) == "best"
    assert mode(validation=[{"image": "v"}], selection="best") == "best"
    assert mode(validation=[{"image": "v"}], selection="last") == "last"  # make_folds' word wins
    assert mode(validation=[]) == "last" and mode() == "last"  # nothing to select on
    with pytest.raises(DatalistError, match=r"d\.json: 'selection' is 'first'"):
        mode(validation=[{"image": "v"}], selection="first")
    # an unreadable datalist is left to validate_datalist (its message names the file and the problem)
    assert selection_mode(tmp_path / "missing.json") == "best"
    (tmp_path / "bad.json").write_text("{not json")
    assert selection_mode(tmp_path / "bad.json") == "best"


def test_last_mode_saves_the_last_epochs_weights_when_training_ends(tmp_path):
    nets = {"student": torch.nn.Linear(2, 2), "teacher": torch.nn.Linear(2, 2)}

    def step(engine, batch):  # every iteration changes the weights, so each epoch's differ
        with torch.no_grad():
            nets["student"].weight.add_(1.0)

    trainer = Engine(step)
    saver = SelectedModelSaver(str(tmp_path), None, nets, selection="last")
    saver.attach(trainer)
    trainer.run([0, 1], max_epochs=3)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert torch.equal(saved["weight"], nets["student"].weight)  # the last epoch's student (first network)
    sel = json.loads((tmp_path / "model_selection.json").read_text())
    assert sel["selection"] == "last" and sel["epoch"] == 3 and sel["threshold"] == 0.5 and sel["dice"] is None
    assert "last checkpoint" in sel["reason"]
    with pytest.raises(ValueError, match="selection must be one of"):
        SelectedModelSaver(str(tmp_path), None, nets, selection="first")

"""ResumableCheckpoint on Ignite's Checkpoint: the file format is the former one, and what Ignite's Checkpoint
believes is on disk never stops a save (it is reset from the files at every start)."""

from __future__ import annotations

import torch
from ignite.engine import Engine

from custom_components.handlers import ResumableCheckpoint


def test_file_holds_the_former_keys_and_format(tmp_path):
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    ResumableCheckpoint(tmp_path, {"network": net}, engine_key="trainer").attach(engine)
    engine.run([0, 1], max_epochs=1)
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert set(state) == {"_resumable_checkpoint_format", "network", "trainer", "rng"}
    assert state["_resumable_checkpoint_format"] == 1 and set(state["network"]) == {"weight", "bias"}
    assert set(state["rng"]) >= {"python", "numpy", "torch"} and state["trainer"]["iteration"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state.pt"]  # COMPLETED did not write it again


def test_a_restarted_run_saves_again_after_the_files_were_deleted(tmp_path):
    for load_on_start in (True, False):
        folder = tmp_path / str(load_on_start)
        engine = Engine(lambda e, b: None)
        ResumableCheckpoint(folder, {"network": torch.nn.Linear(1, 1)}, engine_key="trainer",
                            load_on_start=load_on_start).attach(engine)
        engine.run([0, 1], max_epochs=2)
        for p in folder.iterdir():
            p.unlink()
        engine.state.max_epochs = None  # restart from scratch in the same process
        engine.run([0, 1], max_epochs=1)
        state = torch.load(folder / "train_state.pt", weights_only=True)
        assert state["trainer"]["iteration"] == 2, load_on_start

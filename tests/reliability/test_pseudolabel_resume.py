"""The pseudolabel bundle after a kill (issue 28): the rerun skips the images done, writes ``pseudolabels.json``
from every record at the end, and ``--overwrite True`` never leaves a folder mixing two runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rel_helpers import TINY_DIFFUSION, bundle_command, copy_bundle, fresh_teacher, run_and_kill, run_to_end

from custom_components.handlers.pseudolabel_writer import PARTIAL_FILE, PSEUDOLABELS_FILE

N_UNLABELLED = 8


def _records(out: Path) -> int:
    f = out / PARTIAL_FILE
    return max(len(f.read_text().splitlines()) - 1, 0) if f.is_file() else 0


@pytest.mark.slow  # four bundle processes (~1 min on 2 cores); the logic is unit-tested in tests/handlers
def test_pseudolabel_killed_then_rerun_resumes_and_completes(tiny_dataset_2d, tmp_path):
    data = tiny_dataset_2d(num_cases=N_UNLABELLED + 3, size=16,
                           splits={"labeled": 1, "unlabeled": N_UNLABELLED, "validation": 1, "test": 1})
    b = copy_bundle("pseudolabel", tmp_path / "bundle")
    out = tmp_path / "out"
    ckpt = fresh_teacher(tmp_path / "teacher.pt", 2, 3)
    cmd = bundle_command(b, ["inference"], {**TINY_DIFFUSION, "roi_size": [16, 16], "dataset_dir": str(data),
                                            "teacher_ckpt": str(ckpt), "output_dir": str(out), "rounds": 1})
    log = tmp_path / "run.log"
    rc, text = run_and_kill(cmd, log, lambda _: _records(out) >= 3)
    assert rc != 0 and not (out / PSEUDOLABELS_FILE).exists(), text[-2000:]
    done_before = _records(out)
    assert 3 <= done_before < N_UNLABELLED, f"kill too late to test a resume ({done_before} done)"
    rc, text = run_to_end(cmd, log)
    assert rc == 0, text[-3000:]
    assert f"{done_before} of {N_UNLABELLED} images done earlier are skipped" in text, text[-3000:]
    assert "FileExistsError" not in text
    doc = json.loads((out / PSEUDOLABELS_FILE).read_text())
    entries = doc["pseudolabels"]
    assert len(entries) == N_UNLABELLED and len({e["image"] for e in entries}) == N_UNLABELLED
    assert [e["rank"] for e in entries] == list(range(N_UNLABELLED))
    assert all((out / e["pseudo_label"]).is_file() and (out / e["uncertainty"]).is_file() for e in entries)
    assert not (out / PARTIAL_FILE).exists()
    # a finished folder: refused, unless --overwrite True, which removes the earlier run's files first
    rc, text = run_to_end(cmd, log)
    assert rc == 2 and "already holds pseudo-labels" in text.strip().splitlines()[-1]
    stray = out / "from_an_older_dataset_pseudo.png"
    stray.write_bytes(b"old")
    rc, text = run_to_end(cmd + ["--overwrite", "True"], log)
    assert rc == 0 and not stray.exists(), text[-2000:]
    assert len(json.loads((out / PSEUDOLABELS_FILE).read_text())["pseudolabels"]) == N_UNLABELLED

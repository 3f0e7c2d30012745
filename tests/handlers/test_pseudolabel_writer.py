"""``PseudoLabelWriter`` / ``pending_entries`` / ``check_output_dir``: resuming an interrupted pseudo-labelling run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from custom_components.errors import UserError
from custom_components.handlers.pseudolabel_writer import (
    PARTIAL_FILE,
    PSEUDOLABELS_FILE,
    OutputExistsError,
    PseudoLabelWriter,
    check_output_dir,
    pending_entries,
)


def _interrupted(out, images, settings):
    out.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"settings": settings})]
    for name in images:
        (out / f"{name}_pseudo.png").write_bytes(b"p")
        (out / f"{name}_uncertainty.png").write_bytes(b"u")
        lines.append(json.dumps({"image": f"../img/{name}.png", "pseudo_label": f"{name}_pseudo.png",
                                 "uncertainty": f"{name}_uncertainty.png", "score": 0.5}))
    (out / PARTIAL_FILE).write_text("\n".join(lines) + '\n{"image": "cut by a ki')


def test_pending_entries_skip_recorded_images_and_keep_one_when_all_done(tmp_path):
    out = tmp_path / "out"
    entries = [{"image": str(tmp_path / "img" / f"{n}.png")} for n in "abc"]
    _interrupted(out, ["a", "b"], {"rounds": 1})
    (out / "c_pseudo.png").write_bytes(b"half-written, not recorded")
    assert check_output_dir(out) == str(out)  # an interrupted run is resumed, not refused
    assert pending_entries(entries, out) == entries[2:]
    assert pending_entries(entries, out, overwrite=True) == entries
    (out / "b_uncertainty.png").unlink()  # a recorded image whose file is gone is redone
    assert pending_entries(entries, out) == entries[1:]
    _interrupted(out, ["a", "b", "c"], {"rounds": 1})
    assert pending_entries(entries, out) == entries[2:]  # all done: the last one again, so the run ends


def test_writer_resumes_records_refuses_other_settings_and_overwrite_clears(tmp_path):
    out = tmp_path / "out"
    _interrupted(out, ["a", "b"], {"rounds": 1})
    w = PseudoLabelWriter(out, extra={"rounds": 1})
    w._reset(SimpleNamespace())
    assert sorted(r["image"] for r in w.records) == ["../img/a.png", "../img/b.png"]
    w._write(SimpleNamespace())
    doc = json.loads((out / PSEUDOLABELS_FILE).read_text())
    assert len(doc["pseudolabels"]) == 2 and not (out / PARTIAL_FILE).exists()
    with pytest.raises(OutputExistsError, match="already holds pseudo-labels"):
        check_output_dir(out)
    _interrupted(out, ["a"], {"rounds": 1})
    with pytest.raises(UserError, match=r"partial\.jsonl: an interrupted run with other settings \(rounds: was 1, "
                                        r"now 3\); pass --overwrite True"):
        PseudoLabelWriter(out, extra={"rounds": 3})._reset(SimpleNamespace())
    check_output_dir(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == []

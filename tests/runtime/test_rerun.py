"""``custom_components.runtime.rerun``: a rerun in a folder made with other data or settings is refused (issue 28)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from custom_components.runtime.rerun import RUN_RECORD, RerunError, check_same_run, data_files, data_fingerprint


def _dataset(root: Path, name: str = "datalist.json") -> Path:
    for d in ("imagesTr", "labelsTr"):
        (root / d).mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(2):
        (root / "imagesTr" / f"c{i}.png").write_bytes(b"img%d" % i)
        (root / "labelsTr" / f"c{i}.png").write_bytes(b"lab%d" % i)
        entries.append({"image": f"imagesTr/c{i}.png", "label": f"labelsTr/c{i}.png"})
    p = root / name
    p.write_text(json.dumps({"labeled": entries[:1], "validation": entries[1:]}))
    return p


def test_data_fingerprint_follows_the_files(tmp_path):
    dl = _dataset(tmp_path)
    fp = data_fingerprint(dl)
    assert data_fingerprint(dl) == fp and set(data_files(dl)) == {"imagesTr/c0.png", "labelsTr/c0.png",
                                                                  "imagesTr/c1.png", "labelsTr/c1.png"}
    f = tmp_path / "labelsTr" / "c1.png"
    st = f.stat()
    f.write_bytes(b"new1")  # same size, new content: the modification time tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert data_fingerprint(dl) != fp


def test_rerun_with_same_data_passes_with_other_data_or_settings_refuses(tmp_path):
    dl = _dataset(tmp_path / "data")
    ckpt = tmp_path / "run" / "models"
    settings = {"channels": [8, 16], "num_classes": 2}
    check_same_run(ckpt, dl, settings)  # a fresh folder: the record is written
    rec = json.loads((ckpt / RUN_RECORD).read_text())
    assert not os.path.isabs(rec["datalist"]) and rec["settings"] == settings
    other = _dataset(tmp_path / "data2")
    check_same_run(ckpt, other, settings)  # nothing trained yet (no train_state.pt): not refused
    check_same_run(ckpt, dl, settings)
    (ckpt / "train_state.pt").write_bytes(b"state")
    check_same_run(ckpt, dl, settings)  # the same command again: fine ("nothing to do" when finished)
    with pytest.raises(RerunError, match=r"models: holds a run made with other data or settings .*datalist: was "
                                         r"'.*data/datalist\.json', now '.*data2/datalist\.json'.*--bundle_root NEW "
                                         r"or --ckpt_dir NEW"):
        check_same_run(ckpt, other, settings)
    with pytest.raises(RerunError, match=r"channels: was \[8, 16\], now \[8, 32\]"):
        check_same_run(ckpt, dl, {**settings, "channels": [8, 32]})
    f = tmp_path / "data" / "imagesTr" / "c0.png"
    f.write_bytes(b"re-prepared image")
    with pytest.raises(RerunError, match=r"the data: 1 file\(s\) listed in .* changed, added or removed since that "
                                         r"run, e.g\. imagesTr/c0\.png"):
        check_same_run(ckpt, dl, settings)


def test_a_file_as_ckpt_dir_is_left_to_the_config(tmp_path):
    dl = _dataset(tmp_path)
    (tmp_path / "f").write_text("x")
    check_same_run(tmp_path / "f", dl, {})  # no error here: the config's mkdir names the file

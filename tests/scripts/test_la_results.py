"""``scripts/la_results.py``: the published numbers beside ours, inserted into a runner page (and replaced)."""

from __future__ import annotations

import json

import pytest
from script_loader import load_script


def _row(method, n, dice, seeds=(0,)):
    return {"method": method, "num_labeled": [n], "seeds": list(seeds), "dice": {"mean": dice, "std": 0.1}}


def test_published_numbers_beside_ours_inserted_after_the_verdict_and_replaced(tmp_path):
    mod = load_script("la_results")
    payload = {"tables": {"la_uamt": [_row("supervised", 8, 0.5), _row("full", 8, 0.6, (0, 1)),
                                      _row("upper", 72, 0.8)]}, "runs": []}
    (tmp_path / "la.json").write_text(json.dumps(payload))
    md = tmp_path / "la.md"
    md.write_text("# Results: la\n\n## In one line\n\nverdict\n\n## Command\n\ncmd\n")
    assert mod.main([str(tmp_path / "la.json"), "--cases", "0"]) == 0
    text = md.read_text()
    assert text.index("## In one line") < text.index("Published numbers") < text.index("## Command")
    lines = text.splitlines()
    head = next(ln for ln in lines if ln.startswith("| method |"))
    assert head == "| method | 4 labelled | 8 labelled | 16 labelled | 72 labelled | 80 labelled |"
    assert "| this page: full | - | 60.00 ± 10.00 (2 seeds) | - | - | - |" in lines
    assert "| BCP (CVPR'23) | 88.02 | 89.62 | 91.26 | - | - |" in lines
    assert "Not comparable one to one" in text
    assert mod.main([str(tmp_path / "la.json"), "--cases", "0"]) == 0  # a rerun replaces, never duplicates
    assert md.read_text() == text


def test_missing_results_file_is_named(tmp_path):
    mod = load_script("la_results")
    with pytest.raises(mod.LAResultsError, match="la.json: missing"):
        mod.main([str(tmp_path / "la.json"), "--cases", "0"])


@pytest.mark.parametrize("wall, shown", [(4916.3, True), (0.4, False)])
def test_wall_time_of_the_training_call_comes_from_the_page_when_no_log_is_given(tmp_path, wall, shown):
    """A call that trained (minutes) puts its wall time on the page; a rewrite-only call (0.4 s) does not."""
    mod = load_script("la_results")
    payload = {"tables": {"la_uamt": [_row("supervised", 8, 0.5)]}, "runs": [],
               "settings": {"wall time of this call (s)": wall}}
    (tmp_path / "la.json").write_text(json.dumps(payload))
    md = tmp_path / "la.md"
    md.write_text("# Results: la\n\n## In one line\n\nverdict\n\n## Command\n\ncmd\n")
    assert mod.main([str(tmp_path / "la.json"), "--cases", "0"]) == 0
    assert ("took **4916 s** (82 min)" in md.read_text()) is shown

"""``scripts/la_results.py``: the published numbers beside ours, inserted into a runner page (and replaced)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _mod():
    spec = importlib.util.spec_from_file_location("la_results", ROOT / "scripts" / "la_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(method, n, dice, seeds=(0,)):
    return {"method": method, "num_labeled": [n], "seeds": list(seeds), "dice": {"mean": dice, "std": 0.1}}


def test_published_numbers_beside_ours_inserted_after_the_verdict_and_replaced(tmp_path):
    mod = _mod()
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
    mod = _mod()
    with pytest.raises(mod.LAResultsError, match="la.json: missing"):
        mod.main([str(tmp_path / "la.json"), "--cases", "0"])

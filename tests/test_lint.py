"""The code base passes ``ruff check`` with the repository's ``ruff.toml`` (pycodestyle, pyflakes, isort rules)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed in this environment (pip install ruff==0.17.6, see requirements.txt)")
def test_ruff_check_passes():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO_ROOT)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, f"ruff check found problems:\n{proc.stdout}\n{proc.stderr}"

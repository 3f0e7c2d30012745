"""Fixtures of the bundle_tools tests: tiny bundles written into temporary folders."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# the test stand-in for the deployable wrapper (bt_fake_deployable) is referenced by _target_ from bundle configs
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from bt_bundle_factory import make_bundle  # noqa: E402


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a complete tiny bundle (MONAI UNet by default) under ``tmp_path``."""

    def make(name: str = "tiny", **kwargs) -> Path:
        return make_bundle(tmp_path / name, **kwargs)

    return make

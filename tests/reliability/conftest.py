"""Fixtures of the reliability tests (helpers live in ``rel_helpers.py``).

The error messages the bad-input matrix observes are collected per test session and, when the environment
variable ``RELIABILITY_MESSAGES_JSON`` names a file, written there as ``{test name: message}`` at the end of the
session (that is how the table of ``docs/reliability.md`` is filled)::

    RELIABILITY_MESSAGES_JSON=/tmp/messages.json pytest tests/reliability -q
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the project runs pytest with --import-mode=importlib: make rel_helpers importable
    sys.path.insert(0, _HERE)
_MESSAGES: dict[str, str] = {}


@pytest.fixture
def record_message(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``record_message(msg)`` stores the message observed by the calling test under its node id."""

    def record(msg: str) -> None:
        _MESSAGES[request.node.name] = msg

    return record


@pytest.fixture(scope="session", autouse=True)
def _dump_messages() -> Iterator[None]:
    yield
    target = os.environ.get("RELIABILITY_MESSAGES_JSON")
    if target and _MESSAGES:
        Path(target).write_text(json.dumps(dict(sorted(_MESSAGES.items())), indent=2))

"""``load_script(name)``: a script of ``scripts/`` loaded as a module, for tests that call its functions in process.

Importable from any test module (``from script_loader import load_script``): ``tests/conftest.py`` puts this folder
on ``sys.path``. It is not in ``conftest.py`` itself because pytest imports every folder's ``conftest.py`` under
the same name ``conftest``, so ``from conftest import ...`` would depend on which one was loaded last.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """Load ``scripts/<name>.py`` afresh as a module named ``script_<name>`` and return it.

    The script runs anew on every call and the module is not registered in ``sys.modules`` (no script defines a
    dataclass or otherwise needs to find itself there), so calls never share a script's module-level state.
    """
    path = SCRIPTS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"script_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load script {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

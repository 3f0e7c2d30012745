"""Every package of ``custom_components`` declares its public names in ``__all__``, and each of them exists."""

from __future__ import annotations

import importlib
import pkgutil

import custom_components


def test_every_package_declares_all_and_every_name_resolves():
    missing, unresolved = [], []
    for info in pkgutil.walk_packages(custom_components.__path__, "custom_components."):
        module = importlib.import_module(info.name)
        names = getattr(module, "__all__", None)
        if names is None:
            if info.ispkg:
                missing.append(info.name)
            continue
        unresolved += [f"{info.name}.{n}" for n in names if not hasattr(module, n)]
    assert not missing, f"packages without __all__: {missing}"
    assert not unresolved, f"__all__ names that do not exist: {unresolved}"

"""Small helpers for the bundle configs."""

from __future__ import annotations

import os
import traceback

__all__ = ["bundle_root"]


def bundle_root(default: str | None = None) -> str:
    """The folder of the bundle whose config is being run, so bundles work from any working directory.

    MONAI 1.6 passes no config-file path to the config parser; ``ConfigWorkflow`` keeps it only as
    ``config_root_path``. This finds the running ``ConfigWorkflow`` on the call stack and returns the parent of
    its ``configs/`` folder. Outside a workflow (a bare ``ConfigParser``), it returns ``default`` or the current
    working directory. ``--bundle_root`` on the command line still overrides it.

    Args:
        default: the value to return outside a ``ConfigWorkflow``.
    """
    from monai.bundle import ConfigWorkflow

    for frame, _ in traceback.walk_stack(None):
        obj = frame.f_locals.get("self")
        if isinstance(obj, ConfigWorkflow):
            root = obj.config_root_path.resolve()
            return str(root.parent if root.name == "configs" else root)
    return default if default is not None else os.getcwd()

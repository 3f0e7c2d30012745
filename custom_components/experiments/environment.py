"""Hardware and library versions for results pages, and repository-relative paths for what they print."""

from __future__ import annotations

import os
import platform
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = ["REPO_ROOT", "environment_info", "relative_path"]


def environment_info() -> dict[str, str]:
    """Hardware (GPU name or CPU model, core count) and library versions."""
    import monai
    import numpy
    import torch

    info: dict[str, str] = {}
    if torch.cuda.is_available():
        info["device"] = f"GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    else:
        cpu = platform.processor() or ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        info["device"] = f"CPU: {cpu or 'unknown'} ({os.cpu_count()} logical cores visible)"
    try:
        import ignite

        ign = ignite.__version__
    except ImportError:  # pragma: no cover
        ign = "not installed"
    info["versions"] = (f"python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}, "
                        f"pytorch-ignite {ign}, numpy {numpy.__version__}")
    info["platform"] = platform.platform()
    return info


def relative_path(path: str | os.PathLike[str], root: str | os.PathLike[str] = REPO_ROOT) -> str:
    """``path`` relative to ``root`` (the repository by default), for pages read on other machines.

    A path outside ``root`` is written relative to it too (``../data/x``), so no page carries an absolute path of
    the machine that wrote it.

    Args:
        path: a file or folder path (absolute or relative to the working directory).
        root: the folder the result is relative to.
    """
    return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()

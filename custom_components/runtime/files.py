"""Atomic file writes: a reader sees either the old complete file or the new complete file, never a torn one.

Every checkpoint, model file and JSON summary the bundles write goes through :func:`atomic_write`: the data goes
to a temporary file in the target folder, is flushed and ``fsync``-ed, then moved over the target with
``os.replace``, so a crash (or ``kill -9``) during a write never leaves a truncated file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import FileWriteError

__all__ = ["atomic_torch_save", "atomic_write", "atomic_write_json"]


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry to disk (POSIX); silently skipped where directories cannot be opened."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[bytes]], Any], keep_previous: bool = False, what: str = "file"
) -> Path:
    """Write ``path`` through ``write(binary_file)`` so that it is either the old or the new complete file.

    The data goes to a temporary file in the same folder, is flushed and ``fsync``-ed, then moved over ``path``
    with ``os.replace`` (atomic on POSIX and Windows). If anything fails, the temporary file is removed and the
    existing ``path`` is left untouched.

    Args:
        path: destination file; its folder is created if missing.
        write: writes the content to the open binary file it is given.
        keep_previous: if true and ``path`` exists, it is first moved to ``<path>.prev``.
        what: what the file is, for the error message (``"checkpoint"``, ``"file"``).

    Returns:
        The destination path.

    Raises:
        FileWriteError: (an ``OSError`` and a ``UserError``) when the file cannot be written, naming ``path`` and
            its folder; the previous file is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name(path.name + ".prev"))
        os.replace(tmp_name, path)
        os.chmod(path, 0o644)  # mkstemp creates 0600 files; outputs are shared with collaborators
    except OSError as e:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise FileWriteError(what, path, e) from e
    except BaseException:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike, keep_previous: bool = False) -> Path:
    """``torch.save(obj, path)`` through :func:`atomic_write`.

    Args:
        obj: anything ``torch.save`` accepts.
        path: destination file; its folder is created if missing.
        keep_previous: if true and ``path`` exists, it is first moved to ``<path>.prev``.

    Returns:
        The destination path.

    Raises:
        OSError: when the file cannot be written, naming ``path``; the previous file is unchanged.
    """
    return atomic_write(path, lambda f: torch.save(obj, f), keep_previous, what="checkpoint")


def atomic_write_json(obj: Any, path: str | os.PathLike, indent: int | None = 2) -> Path:
    """``json.dump(obj)`` to ``path`` through :func:`atomic_write`.

    Args:
        obj: a JSON-serialisable object.
        path: destination file; its folder is created if missing.
        indent: JSON indentation.

    Returns:
        The destination path.

    Raises:
        OSError: when the file cannot be written, naming ``path``; the previous file is unchanged.
        TypeError: when ``obj`` is not JSON-serialisable (nothing is written).
    """
    text = json.dumps(obj, indent=indent)  # serialise first: a TypeError must not leave a temporary file
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), what="file")

"""User errors: one exception type for mistakes a person must fix, and how they are shown.

``UserError`` (and its subclasses ``DatalistError``, ``PreparationError``, ``SplitError``, ``CheckpointError``)
carries a message that names the file and the problem. Two ways to show it:

- bundles (``python -m monai.bundle run``): MONAI wraps an error raised inside a ``$`` expression or a
  ``_target_`` instantiation in ``RuntimeError: Failed to evaluate ...``, so the message would sit in the middle of
  a chained traceback. :func:`install_excepthook` (called when ``custom_components`` is imported, which every
  bundle config does) keeps Python's traceback and then repeats the user error as the last lines of the output,
  or, when there is none, the cause of a runtime fault a person can act on (:func:`find_os_fault`: a file or folder
  that cannot be written, permission denied, disk full, a file where a folder is expected), with exit status 2;
- scripts: :func:`run_cli` runs a ``main(argv)`` and turns a ``UserError`` into ``<script>: error: <message>``
  on stderr and exit status 2, without a traceback (argparse's convention for usage errors).
"""

from __future__ import annotations

import atexit
import errno
import os
import sys
from collections.abc import Callable, Sequence
from types import TracebackType

__all__ = [
    "UserError", "CheckpointError", "CheckpointNotFoundError", "FileWriteError", "find_user_error", "find_os_fault",
    "describe_os_fault",
    "install_excepthook", "run_cli",
]

#: exit status of a run stopped by a user error or an actionable fault (argparse's status for usage errors)
EXIT_USER_ERROR = 2

#: OS errors a person can act on (permissions, disk space, a file in the way), with the advice given
_ACTIONABLE = {
    errno.EACCES: "permission denied: make it writable or choose another folder (--output_dir / --ckpt_dir)",
    errno.EPERM: "operation not permitted: make it writable or choose another folder (--output_dir / --ckpt_dir)",
    errno.EROFS: "read-only file system: choose a folder on a writable disk (--output_dir / --ckpt_dir)",
    errno.ENOSPC: "disk full (no space left on device): free space or write to another disk, then rerun the same "
                  "command",
    errno.EDQUOT: "disk quota exceeded: free space or write to another disk, then rerun the same command",
    errno.EEXIST: "a file is in the way: remove it or choose another path",
    errno.ENOTDIR: "a file is in the way where a folder is expected: remove it or choose another path",
    errno.EISDIR: "a folder is in the way where a file is expected: remove it or choose another path",
}


class UserError(Exception):
    """A mistake in the user's input (data, arguments, configuration); the message names the file and the problem."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file is a folder, is unreadable or does not fit the configured network."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint file does not exist."""


class FileWriteError(UserError, OSError):
    """A file cannot be written (unwritable folder, full disk); the message names the file and its folder."""

    def __init__(self, what: str, path: str | os.PathLike, err: OSError) -> None:
        reason = os.strerror(err.errno) if err.errno else str(err)
        folder = os.path.dirname(os.fspath(path))
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            advice = f" The folder {folder} is not writable: make it writable (or choose another folder)"
        elif err.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = f" The disk of {folder} is full: free some space"
        else:
            advice = f" Check the folder {folder}"
        super().__init__(f"cannot write {what} {path} ({reason}); the previous file is unchanged.{advice}, then rerun "
                         "the same command (a training run resumes from its last checkpoint).")
        self.errno, self.strerror, self.filename = err.errno, err.strerror, os.fspath(path)

    def __str__(self) -> str:
        return str(self.args[0])


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The innermost ``UserError`` in an exception's ``__cause__`` / ``__context__`` chain, if any.

    Args:
        exc: the exception that was raised.
    """
    found, seen = None, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            found = exc
        exc = exc.__cause__ or exc.__context__
    return found


def _chain(exc: BaseException | None) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def find_os_fault(exc: BaseException | None) -> OSError | None:
    """The innermost ``OSError`` a person can act on (permission denied, read-only disk, disk full or quota, a file
    or folder in the way) in an exception's chain, through MONAI's ``Failed to evaluate ConfigExpression`` wrappers.

    Args:
        exc: the exception that was raised.
    """
    found = None
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _ACTIONABLE:
            found = e
    return found


def describe_os_fault(err: OSError) -> str:
    """One line naming the path(s) of an actionable ``OSError`` and what to do.

    Args:
        err: an error found by :func:`find_os_fault`.
    """
    paths = [str(f) for f in (err.filename, err.filename2) if f is not None]
    where = " -> ".join(f"'{p}'" for p in paths) if paths else str(err)
    return f"{where}: {_ACTIONABLE[err.errno]}."


def _exit(status: int) -> None:  # pragma: no cover - replaced in tests
    """Run the interpreter's exit handlers (logging, TensorBoard writers), flush, and leave with ``status``."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(status)


def _excepthook(previous: Callable) -> Callable:
    def hook(etype: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        previous(etype, value, tb)
        err = find_user_error(value)
        fault = None if err is not None else find_os_fault(value)
        if err is not None:
            sys.stderr.write(f"\nERROR ({type(err).__name__}): {err}\n")
        elif fault is not None:
            sys.stderr.write(f"\nERROR ({type(fault).__name__}): {describe_os_fault(fault)}\n")
        else:
            return
        sys.stderr.flush()
        _exit(EXIT_USER_ERROR)

    hook.custom_components_user_errors = True  # type: ignore[attr-defined]
    return hook


def install_excepthook() -> None:
    """Make an uncaught exception whose chain holds a ``UserError`` (or an actionable ``OSError``, see
    :func:`find_os_fault`) end with that error's message and exit status 2 (idempotent).

    The traceback is still printed first (by the previously installed hook), so nothing is hidden; other
    exceptions keep Python's exit status 1.
    """
    if not getattr(sys.excepthook, "custom_components_user_errors", False):
        sys.excepthook = _excepthook(sys.excepthook)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main``; a ``UserError`` or an actionable ``OSError`` (:func:`find_os_fault`) becomes one line
    on stderr and exit status 2 (no traceback).

    Args:
        main: the script's entry point, returning its exit status.
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        ``main``'s status, or 2 after a user error.
    """
    try:
        return main(argv)
    except UserError as e:
        sys.stdout.flush()
        print(f"{os.path.basename(sys.argv[0]) or 'error'}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        fault = find_os_fault(e)
        if fault is None:
            raise
        sys.stdout.flush()
        print(f"{os.path.basename(sys.argv[0]) or 'error'}: error: {describe_os_fault(fault)}", file=sys.stderr)
        return EXIT_USER_ERROR

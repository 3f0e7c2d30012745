"""User errors: one exception type for mistakes a person must fix, and how they are shown.

``UserError`` (and its subclasses ``DatalistError``, ``PreparationError``, ``SplitError``, ``CheckpointError``)
carries a message that names the file and the problem. Two ways to show it:

- bundles (``python -m monai.bundle run``): MONAI wraps an error raised inside a ``$`` expression or a
  ``_target_`` instantiation in ``RuntimeError: Failed to evaluate ...``, so the message would sit in the middle of
  a chained traceback. :func:`install_excepthook` (called when ``custom_components`` is imported, which every
  bundle config does) keeps Python's traceback and then repeats the user error as the last lines of the output;
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
    "UserError", "CheckpointError", "CheckpointNotFoundError", "FileWriteError", "find_user_error",
    "install_excepthook", "run_cli",
]


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


_exit_status: int | None = None


def _exit_with_user_error_status() -> None:
    """At exit after a user error: run the other exit handlers, then end with status 2 (Python's own would be 1)."""
    if _exit_status is None:
        return
    atexit.unregister(_exit_with_user_error_status)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


def _excepthook(previous: Callable, exit_status: int | None = None) -> Callable:
    def hook(etype: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        global _exit_status
        previous(etype, value, tb)
        err = find_user_error(value)
        if err is not None:
            sys.stderr.write(f"\nERROR ({type(err).__name__}): {err}\n")
            sys.stderr.flush()
            if exit_status is not None:
                _exit_status = exit_status

    hook.custom_components_user_errors = True  # type: ignore[attr-defined]
    return hook


def install_excepthook() -> None:
    """Make an uncaught exception whose chain holds a ``UserError`` end with that error's message (idempotent).

    The traceback is still printed first (by the previously installed hook), so nothing is hidden; the process then
    exits with status 2, as the scripts do after a user error.
    """
    if not getattr(sys.excepthook, "custom_components_user_errors", False):
        sys.excepthook = _excepthook(sys.excepthook, exit_status=2)
        atexit.register(_exit_with_user_error_status)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main``; a ``UserError`` becomes one line on stderr and exit status 2 (no traceback).

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
        return 2

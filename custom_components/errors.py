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

import os
import sys
from collections.abc import Callable, Sequence
from types import TracebackType

__all__ = [
    "UserError", "CheckpointError", "CheckpointNotFoundError", "find_user_error", "install_excepthook", "run_cli",
]


class UserError(Exception):
    """A mistake in the user's input (data, arguments, configuration); the message names the file and the problem."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file is a folder, is unreadable or does not fit the configured network."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint file does not exist."""


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


def _excepthook(previous: Callable) -> Callable:
    def hook(etype: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        previous(etype, value, tb)
        err = find_user_error(value)
        if err is not None:
            sys.stderr.write(f"\nERROR ({type(err).__name__}): {err}\n")
            sys.stderr.flush()

    hook.custom_components_user_errors = True  # type: ignore[attr-defined]
    return hook


def install_excepthook() -> None:
    """Make an uncaught exception whose chain holds a ``UserError`` end with that error's message (idempotent).

    The traceback is still printed first (by the previously installed hook), so nothing is hidden.
    """
    if not getattr(sys.excepthook, "custom_components_user_errors", False):
        sys.excepthook = _excepthook(sys.excepthook)


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

"""Expected failures: what a person can fix (bad input, a missing file or weights, an unreachable
store). They end a command with one clear line and exit code 2; anything else is a bug and keeps
its traceback."""

from __future__ import annotations

EXIT_INPUT_ERROR = 2


class InputError(Exception):
    """Base of the project's expected failures; the message says what to fix."""


def expected_message(err: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for a bug. Looks through Ray's
    wrapper (a task's error arrives as RayTaskError whose `cause` is the original)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException) and type(err).__name__.startswith("RayTaskError"):
        err = cause
    if isinstance(err, InputError):
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        where = err.filename or (err.args[-1] if err.args else "")
        return f"{err.strerror or type(err).__name__}: {where}"
    return None

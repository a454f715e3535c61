"""User-facing errors and warnings.

A `FlexoptError` is a mistake in what the user asked for (a bad value, a missing file), not a bug:
the CLI prints its message on one line and exits with status 2, without a traceback. A warning
raised by flexopt's code is a message to the user too: under `user_warnings()` (the CLI, and the
worker processes it starts) it prints as one `Warning: ...` line.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


class FlexoptError(ValueError):
    """Invalid user input; the message names the bad value and what is allowed."""


@contextlib.contextmanager
def user_warnings() -> Iterator[None]:
    """Print flexopt's own warnings as one `Warning: ...` line: no source file, no code line,
    on a line of their own while a progress bar holds the current one. Other libraries'
    warnings keep Python's format (their origin helps a bug report). Only the text changes, so a
    recording `catch_warnings` still gets every warning; the previous format is restored."""
    previous = warnings.formatwarning
    warnings.formatwarning = _user_format(previous)
    try:
        yield
    finally:
        warnings.formatwarning = previous


def _user_format(python_format: Callable[..., str]) -> Callable[..., str]:
    def fmt(message, category, filename, lineno, line=None) -> str:
        if not _is_ours(filename):
            return python_format(message, category, filename, lineno, line)
        from tqdm import tqdm

        fresh = "\n" if getattr(tqdm, "_instances", None) else ""  # a bar holds the line
        return f"{fresh}Warning: {message}\n"

    return fmt


def _is_ours(filename: object) -> bool:
    """Whether a warning's file is in this package (a real path, not '<string>' or 'sys')."""
    if not isinstance(filename, str) or not os.path.isabs(filename):
        return False
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False

"""User-facing errors.

A `FlexoptError` is a mistake in what the user asked for (a bad value, a missing file), not a bug:
the CLI prints its message on one line and exits with status 2, without a traceback.
"""

from __future__ import annotations


class FlexoptError(ValueError):
    """Invalid user input; the message names the bad value and what is allowed."""

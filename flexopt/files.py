"""Writing output files (schedules, CSV, HTML, PNG, images) with one clear error when a file cannot
be written.

The outputs go where the user said: missing parent folders are created, and any remaining OS
error names the file and the real reason (some, like pandas', carry no `strerror`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flexopt.errors import FlexoptError


def _reason(path: Path, err: OSError) -> str:
    """The OS's reason, naming the parent folder it concerns when it is about one."""
    parent = Path(err.filename) if err.filename else None
    if parent not in path.parents:
        parent = None
    if parent is not None and isinstance(err, FileExistsError | NotADirectoryError):
        return f"{str(parent)!r} is a file, not a folder"
    if not err.strerror:
        return str(err) or type(err).__name__
    return err.strerror if parent is None else f"{err.strerror}: {str(parent)!r}"


def write_error(path: str | os.PathLike[str], err: OSError) -> FlexoptError:
    """The one-line user error for an output that could not be written."""
    p = Path(path)
    return FlexoptError(f"cannot write {str(p)!r}: {_reason(p, err)}")


def make_parent(path: str | os.PathLike[str]) -> Path:
    """`path` with its parent folders created, as every report output does."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(p, err) from None
    return p


def make_folder(path: str | os.PathLike[str]) -> Path:
    """`path` as a folder to write into (created with its parents), checked before slow work."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FlexoptError(f"cannot write into {str(p)!r}: it is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".flexopt-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise write_error(p, err) from None
    return p


def write_csv(frame: Any, path: str | os.PathLike[str]) -> Path:
    """Write a pandas DataFrame as CSV (no index); returns the path."""
    p = make_parent(path)
    try:
        frame.to_csv(p, index=False)
    except OSError as err:
        raise write_error(p, err) from None
    return p

"""flexopt's on-disk cache: where it lives, and how files get into it safely.

Cached files are shared by concurrent study workers, so every write goes to a temporary file in the
same directory and is moved into place with `os.replace` (atomic on POSIX): a reader sees either
the old file or the complete new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from flexopt.errors import FlexoptError

ENV_CACHE_DIR = "FLEXOPT_CACHE_DIR"


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: `explicit`, else `$FLEXOPT_CACHE_DIR`, else `$XDG_CACHE_HOME/flexopt`
    (default `~/.cache/flexopt`). Not created here; writers create what they need."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "flexopt"


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Create `path` (and its parents) with the bytes `write(f)` puts into an open binary file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise FlexoptError(f"cannot write into {str(path.parent)!r}: {err.strerror}; allowed: a "
                           f"writable folder (--cache-dir, or ${ENV_CACHE_DIR})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed): workers sharing a cache directory
    build an entry once, the others wait for it. Lock files stay; they are empty."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise FlexoptError(f"cannot write into {str(path.parent)!r}: {err.strerror}; allowed: a "
                           f"writable folder (--cache-dir, or ${ENV_CACHE_DIR})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (weights files are ~90 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

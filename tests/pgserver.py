"""A throw-away PostgreSQL server for tests, started with docs/search.md's recipe, word for word.

The recipe's shell blocks (after `<!-- postgres-start -->` and `<!-- postgres-stop -->`) run with
PGDATA in a temporary folder and PGPORT a free localhost port. PostgreSQL refuses to run as root,
so as root (CI) they run as the `postgres` user the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "search.md"
PASSWORD = "s3cret-pw"


def recipe(marker: str) -> str:
    """The shell block right after `<!-- marker -->` in docs/search.md."""
    lines = DOC.read_text().splitlines()
    start = lines.index(f"<!-- {marker} -->") + 2  # skip the ```bash fence
    end = lines.index("```", start)
    return "\n".join(lines[start:end]) + "\n"


def have_server() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def require_server() -> None:
    """Skip without a PostgreSQL server, but fail under CI, which installs one (.ci/run)."""
    if have_server():
        return
    msg = "needs Debian's postgresql package (apt-get install postgresql)"
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(script: str, env: dict[str, str]) -> None:
    cmd = ["bash", "-euo", "pipefail", "-c", script]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@contextmanager
def postgres() -> Iterator[str]:
    """Start a server; yield the storage URL of its `flexopt` database; stop and remove it."""
    require_server()
    root = Path(tempfile.mkdtemp(prefix="flexopt-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    env = {**os.environ, "PGDATA": str(root / "data"), "PGPORT": str(port),
           "PGPASSWORD": PASSWORD, "HOME": str(root)}
    try:
        _run(recipe("postgres-start"), env)
        yield f"postgresql://flexopt:{PASSWORD}@127.0.0.1:{port}/flexopt"
    finally:
        if (root / "data" / "postmaster.pid").exists():
            _run(recipe("postgres-stop"), env)
        shutil.rmtree(root, ignore_errors=True)

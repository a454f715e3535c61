"""optuna-dashboard on a flexopt storage, with the search's artifact store wired in.

optuna-dashboard's own command needs `--artifact-dir` spelled out; flexopt finds the directory
the search used by the same rule (`x-artifacts/` beside `x.db`), so trial pages show the sample
grids without the user knowing where they live.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any

from optuna.artifacts import FileSystemArtifactStore

from flexopt.errors import FlexoptError
from flexopt.search.artifacts import artifact_dir, open_store
from flexopt.search.study import study_names


def checked_store(
    storage: str, artifacts: str | Path | None, use_artifacts: bool = True
) -> FileSystemArtifactStore | None:
    """Check the storage opens, and return the artifact store to serve.

    The default store is created if missing (the dashboard can upload to it); a directory the
    user named must exist, so a typo is not served as an empty store.
    """
    study_names(storage)  # a clear error for a missing file or an unreachable database
    if not use_artifacts:
        return None
    if artifacts is not None and not artifact_dir(storage, artifacts).is_dir():
        raise FlexoptError(f"artifact directory {str(artifacts)!r} does not exist")
    return open_store(storage, artifacts, create=artifacts is None)


def _optuna_dashboard() -> Any:
    try:
        import optuna_dashboard
    except ImportError:
        raise FlexoptError(
            "flexopt dashboard needs optuna-dashboard: pip install 'optuna-dashboard==0.21.*'"
        ) from None
    return optuna_dashboard


def dashboard_app(storage: str, artifacts: str | Path | None = None, use_artifacts: bool = True):
    """optuna-dashboard's WSGI application for `storage` (to serve with any WSGI server)."""
    store = checked_store(storage, artifacts, use_artifacts)
    return _optuna_dashboard().wsgi(storage, artifact_store=store)


def listen_error(host: str, port: int, err: OSError) -> FlexoptError:
    """The one-line user error for an address the server cannot listen on."""
    if err.errno == errno.EADDRINUSE:
        return FlexoptError(f"port {port} is in use; allowed: a free port (--port)")
    reason = err.strerror or str(err)
    return FlexoptError(f"cannot listen on {host}:{port}: {reason}; allowed: a free port "
                        "(--port) on an address of this machine (--host)")


def check_listen(host: str, port: int) -> None:
    """Fail before the banner is printed when the server could not bind (port taken, bad host).

    The probe binds the way the server does (IPv6 for a host with ':', SO_REUSEADDR), so a port
    the server could use is not refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as err:
        raise listen_error(host, port, err) from None


def run_dashboard(
    storage: str, host: str, port: int, store: FileSystemArtifactStore | None
) -> None:
    """Serve the dashboard until interrupted (optuna-dashboard's own server loop)."""
    dashboard = _optuna_dashboard()  # outside the try: a missing package is its own error
    try:
        dashboard.run_server(storage, host=host, port=port, artifact_store=store)
    except OSError as err:
        if err.errno != errno.EADDRINUSE:  # not the user's mistake
            raise
        raise listen_error(host, port, err) from None

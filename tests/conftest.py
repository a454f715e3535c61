"""Shared pytest configuration."""

from __future__ import annotations

import os

# Tests never reach the hub: everything is built locally and loaded from temp dirs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


import pytest


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """The FID Inception weights converted once per test session (a torch-fidelity state dict).

    Tests pass this path explicitly, so each test's own cache directory stays empty of weights.
    """
    from flexopt.metrics import resolve_inception_weights

    cache = tmp_path_factory.mktemp("inception-cache")
    return str(resolve_inception_weights(None, cache=cache, allow_download=False).path)

"""Shared pytest configuration."""

from __future__ import annotations

import os

# Tests never reach the hub: everything is built locally and loaded from temp dirs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

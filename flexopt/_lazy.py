"""Module attributes loaded on first use (PEP 562): what keeps `import flexopt` and `flexopt --help`
free of torch and diffusers while the public names stay importable from the package."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package`: `names[attr]` is the module that holds
    `attr`, imported when the attribute is first asked for."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__

"""torch-fidelity's Inception-v3 (the standard FID network), loaded without its package `__init__`.

`import torch_fidelity` imports every metric, and those import torchvision; a torchvision built for
another torch (PyPI's wheel beside a CPU-only torch) fails with "operator torchvision::nms does not
exist", and once installed it also breaks `import diffusers`. The Inception module itself needs only
torch and four small torch_fidelity modules (helpers, defaults, deprecations, TF-exact resize),
so we import those under a bare stand-in for the package, then put `sys.modules` back as it was:
our copy is private, and a later `import torch_fidelity` by the user runs the real package normally.
(The swap lasts one import and happens once per process; another thread importing torch_fidelity at
that very moment would see the stand-in.)

The network is built on the meta device (no random init); real weights are assigned afterwards by
the caller, always read with `torch.load(weights_only=True)` (torch-fidelity's own loader uses
`weights_only=False`, which we never call).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

import torch

from flexopt.errors import FlexoptError

PACKAGE = "torch_fidelity"
MODULE = "torch_fidelity.feature_extractor_inceptionv3"
INSTALL_HINT = (
    "install it with `pip install --no-deps torch-fidelity==0.4.0` (or `pip install flexopt[fid]` "
    "where torchvision matches your torch)"
)

_SKELETON = object()  # handed to the constructor instead of a state dict: build, don't load


@functools.cache
def fidelity_inception_module() -> ModuleType:
    """torch_fidelity.feature_extractor_inceptionv3 as a private module object."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise FlexoptError(f"the FID network needs the package torch-fidelity; {INSTALL_HINT}")
    saved = {k: v for k, v in sys.modules.items() if k == PACKAGE or k.startswith(PACKAGE + ".")}
    for k in saved:
        del sys.modules[k]
    sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)  # stand-in, __init__ not run
    try:
        return importlib.import_module(MODULE)
    except ImportError as exc:
        raise FlexoptError(f"cannot import {MODULE} ({exc}); {INSTALL_HINT}") from exc
    finally:
        for k in [k for k in sys.modules if k == PACKAGE or k.startswith(PACKAGE + ".")]:
            del sys.modules[k]
        sys.modules.update(saved)


@functools.cache
def inception_class() -> type[torch.nn.Module]:
    """FeatureExtractorInceptionV3 whose constructor builds the layers but loads no weights."""
    mod = fidelity_inception_module()
    base: Any = mod.FeatureExtractorInceptionV3

    class _Inception(base):  # type: ignore[misc, valid-type]
        def load_state_dict(self, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
            if state_dict is _SKELETON:
                return None
            return super().load_state_dict(state_dict, *args, **kwargs)

    # The constructor fetches weights through this module-level name; our module copy is private.
    mod.load_state_dict_from_url = lambda *args, **kwargs: _SKELETON
    return _Inception


def build_inception(features: tuple[str, ...] = ("2048",)) -> torch.nn.Module:
    """The network on the meta device: shapes and names only, weights to be assigned."""
    with torch.device("meta"):
        return inception_class()("inception-v3-compat", list(features))


def weights_url() -> str:
    """torch-fidelity's download address of its converted TF 2015-12-05 weights."""
    return str(fidelity_inception_module().URL_INCEPTION_V3)

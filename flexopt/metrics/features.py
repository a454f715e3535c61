"""Inception pool features (2048-d) of generated images, the same way for teacher and candidates.

Images become uint8 exactly as diffusers saves them (`(x * 255).round()` of [0, 1] floats), so a
teacher image scores 0 against itself whether it was kept as floats or written to disk. The
network is torch-fidelity's FID Inception (TF-exact bilinear resize from uint8 to 299×299).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from flexopt.errors import FlexoptError
from flexopt.metrics import _fidelity
from flexopt.metrics.weights import (
    InceptionWeights,
    load_inception_state_dict,
    resolve_inception_weights,
)
from flexopt.run.batching import in_batches

FEATURE_DIM = 2048
DEFAULT_BATCH_SIZE = 64
# NHWC convolutions: 1.5x the images/s of the default layout on a 2-core CPU (5.9 → 9.0 img/s,
# batch 64) with features within 6e-6 of it; cuDNN prefers it too. See docs/performance.md.
MEMORY_FORMAT = torch.channels_last

_MODELS: dict[tuple[str, str], torch.nn.Module] = {}  # (weights sha256, device) → network


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_uint8(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """N×C×H×W (or N×H×W grayscale) uint8, or floats in [0, 1] → N×3×H×W uint8 (CPU tensor).

    Floats are cast to float32 and rounded like diffusers (`(x * 255).round()`, half to even), so
    the bytes equal the PNG diffusers would save; values clearly outside [0, 1] are an error rather
    than clipped, since they usually mean [-1, 1] images passed by mistake.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor):
        raise FlexoptError(f"images must be a tensor or numpy array, got {type(images).__name__}")
    x = x.detach()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise FlexoptError(f"images must be N×3×H×W or N×1×H×W, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise FlexoptError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
        x = x.float()
        if x.numel():
            lo, hi = float(x.min()), float(x.max())
            if lo < -0.5 / 255 or hi > 1 + 0.5 / 255:
                raise FlexoptError(
                    "float images must lie in [0, 1] (as diffusers outputs them), "
                    f"got [{lo:.3g}, {hi:.3g}]"
                )
        x = (x * 255).round().clamp_(0, 255).to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.cpu().contiguous()


@dataclass(frozen=True)
class InceptionExtractor:
    """A loaded FID network on one device; call it on images to get N×2048 float32 features."""

    model: torch.nn.Module
    device: torch.device
    weights: InceptionWeights
    batch_size: int = DEFAULT_BATCH_SIZE
    # None: float32, the features rFID is defined on. bfloat16 / float16: autocast, faster on
    # GPUs but not the same numbers (benchmarks/gpu_suite.py reports the rFID difference), so it
    # is only ever an explicit choice.
    dtype: torch.dtype | None = None

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor | np.ndarray, progress: bool = False) -> np.ndarray:
        """Features of all images; `progress` shows a bar (thousands of images take minutes
        on a CPU)."""
        if self.dtype is None:
            return self._features(images, progress)
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self._features(images, progress)

    def _features(self, images: torch.Tensor | np.ndarray, progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        x = to_uint8(images)
        out = np.empty((x.shape[0], FEATURE_DIM), dtype=np.float32)
        with tqdm(total=x.shape[0], disable=not progress, desc="inception features",
                  unit="img", leave=False) as bar:

            def batch(first: int, n: int) -> None:
                (feats,) = self.model(x[first : first + n].to(self.device, non_blocking=True))
                out[first : first + n] = feats.float().cpu().numpy()
                bar.update(n)

            for _ in in_batches(batch, x.shape[0], self.batch_size):  # halves on out-of-memory
                pass
        return out


def load_inception(
    weights: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allow_download: bool = True,
    dtype: torch.dtype | None = None,
) -> InceptionExtractor:
    """The FID network, built once per (weights sha256, device) in this process; `dtype`
    (bfloat16 / float16) runs it under autocast — not the float32 features rFID is defined on."""
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise FlexoptError(f"features dtype {dtype} is not supported; allowed: float32, "
                           "bfloat16, float16")
    dev = torch.device(device) if device is not None else default_device()
    found = resolve_inception_weights(weights, cache=cache_dir, allow_download=allow_download)
    key = (found.sha256, str(dev))
    model = _MODELS.get(key)
    if model is None:
        model = _build(load_inception_state_dict(found)).to(dev, memory_format=MEMORY_FORMAT)
        _MODELS.clear()  # one network at a time: each is ~90 MB
        _MODELS[key] = model
    return InceptionExtractor(model, dev, found, batch_size,
                              None if dtype == torch.float32 else dtype)


def inception_features(
    images: torch.Tensor | np.ndarray,
    *,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allow_download: bool = True,
) -> np.ndarray:
    """FID Inception pool features: uint8 (or [0, 1] float) N×3×H×W images → N×2048 float32."""
    extractor = load_inception(
        weights,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        allow_download=allow_download,
    )
    return extractor(images)


def _build(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = _fidelity.build_inception(("2048",))
    state = dict(state)
    if "fc.weight" not in state:  # TorchScript sources have no classifier; logits are never used
        state["fc.weight"] = torch.full((1008, FEATURE_DIM), float("nan"))
        state["fc.bias"] = torch.full((1008,), float("nan"))
    model.load_state_dict(state, strict=True, assign=True)
    return model.requires_grad_(False).eval()

"""The latency profile, measured once per model, device, dtype, batch and thread count, and cached.

Why cached and locked: a profile takes a minute of timed runs, and several workers of one study
start at the same second on one machine — if they all measured at once each would time the others'
load. So one worker measures under a file lock and writes the JSON atomically; the others wait and
read it. A file that does not parse, or whose key is not this run's, is measured again.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexopt.metrics.cachedir import atomic_write, cache_dir, file_lock
from flexopt.run.latency import LatencyProfile, latency_key, measure_latency, uses_guidance


@dataclass(frozen=True)
class CachedProfile:
    """A profile and where it came from ("cache" or "measured"), and its file."""

    profile: LatencyProfile
    source: str
    path: Path


def profile_path(key: dict[str, Any], directory: str | None = None) -> Path:
    """The cache file of a profile key: `<cache>/latency/<sha256 of the key, 20 hex>.json`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir(directory) / "latency" / f"{digest}.json"


def read_profile(path: Path, key: dict[str, Any]) -> LatencyProfile | None:
    """The cached profile at `path` if it is whole and was measured for `key`; else None (a
    corrupt file is reported and measured again)."""
    if not path.exists():
        return None
    try:
        profile = LatencyProfile.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        warnings.warn(f"latency profile {str(path)!r} is corrupt ({err}); measuring it again",
                      stacklevel=2)
        return None
    return profile if profile.key == key else None


def latency_profile(
    pipe: Any, *, sampler: str = "ddim", batch_size: int = 64, cache: str | None = None,
    refresh: bool = False, rounds: int = 5, warmup: int = 1, branches: Sequence[int] = (1, 2, 3),
    generate_kwargs: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CachedProfile:
    """The latency profile of `pipe` at `batch_size` with the current torch thread count: from
    the cache (`cache`: a cache directory, default `flexopt.metrics.cachedir.cache_dir()`) or
    measured now and cached (`refresh`: measure again even when cached)."""
    kwargs = dict(generate_kwargs or {})
    key = latency_key(pipe, sampler, batch_size, uses_guidance(kwargs), branches)
    path = profile_path(key, cache)
    with file_lock(path.with_suffix(".lock")):
        cached = None if refresh else read_profile(path, key)
        if cached is not None:
            return CachedProfile(cached, "cache", path)
        profile = measure_latency(pipe, sampler=sampler, batch_size=batch_size, rounds=rounds,
                                  warmup=warmup, branches=branches, generate_kwargs=kwargs,
                                  progress=progress)
        text = json.dumps(profile.to_json(), indent=1, sort_keys=True).encode()
        atomic_write(path, lambda f: f.write(text))
    return CachedProfile(profile, "measured", path)


DEFAULT_PROMPT = "a photograph"  # a text pipeline's profile: the prompt does not change the time


def profile_model(
    model: str, *, device: str | None = None, dtype: str = "float32", batch_size: int = 64,
    sampler: str = "ddim", branches: Sequence[int] = (1, 2, 3), rounds: int = 5,
    warmup: int = 1, cache: str | None = None, refresh: bool = False,
    guidance_scale: float = 7.5, class_labels: Sequence[int] = (),
    progress: Callable[[int, int], None] | None = None,
) -> CachedProfile:
    """`flexopt profile`: load MODEL and return its latency profile (cached or measured now).

    A text pipeline is timed with one prompt and `guidance_scale` (guidance doubles the U-Net's
    batch: a search with guidance > 1 reuses this profile); a class-conditional U-Net with
    `class_labels` (default: label 0). Pipelines that need input images are profiled by `flexopt
    search --cost latency`, which has their images."""
    from flexopt.errors import FlexoptError
    from flexopt.models.loading import load_pipeline, parse_device, parse_dtype
    from flexopt.run.pipeline import pipeline_kind

    pipe = load_pipeline(model, dtype=parse_dtype(dtype), device=parse_device(device))
    kind = pipeline_kind(pipe)
    if kind in ("image", "inpaint"):
        raise FlexoptError(f"{type(pipe).__name__} needs input images to run; allowed: profile "
                           "it with `flexopt search --cost latency --init-images DIR`, which "
                           "measures and caches the same profile")
    kwargs: dict[str, Any] = {}
    if kind == "text":
        kwargs = {"prompts": (DEFAULT_PROMPT,), "guidance_scale": guidance_scale}
    config = pipe.unet.config
    if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
        kwargs["class_labels"] = tuple(class_labels) or (0,)
    return latency_profile(pipe, sampler=sampler, batch_size=batch_size, cache=cache,
                           refresh=refresh, rounds=rounds, warmup=warmup, branches=branches,
                           generate_kwargs=kwargs, progress=progress)

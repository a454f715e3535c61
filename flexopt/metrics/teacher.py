"""The teacher cache: Inception statistics of the teacher's images, computed once, kept on disk.

rFID compares a candidate's images with the teacher's images from the same noises, so every
candidate of a study needs the same teacher statistics. Generating them costs `t_ref` full steps
per image, so they are stored, keyed by everything that determines them (`TeacherKey`): the
model's weights, the pipeline and scheduler config, the sampler and `t_ref`, the seeds, the image
count, prompts/labels, the dtype and the feature network. An entry is an `.npz` (no pickle) with
the statistics, the raw features and a few preview images, plus a JSON manifest holding the key
and the npz's sha256. A corrupt or mismatched entry is reported and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexopt.metrics.cachedir import atomic_write, cache_dir, file_lock, sha256_file
from flexopt.metrics.stats import FeatureStats

TEACHER_FORMAT = "flexopt.teacher/1"
PREVIEW_IMAGES = 16  # teacher images kept for sample grids (uint8)


def fingerprint_modules(modules: Mapping[str, Any]) -> str:
    """A hash of the weights of the named torch modules (a model's identity, wherever it came
    from: a hub id, a directory, or an object built in memory)."""
    import torch

    h = hashlib.blake2b(digest_size=20)
    for name in sorted(modules):
        module = modules[name]
        if not isinstance(module, torch.nn.Module):
            continue
        h.update(name.encode())
        for key, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class CacheKey:
    """A cache key dataclass: stored as JSON in the manifest, named by a hash of that JSON."""

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples become lists, as when read back

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class TeacherKey(CacheKey):
    """Everything that determines a teacher's images and features."""

    model: str  # weights fingerprint
    pipeline: str  # pipeline class name
    scheduler: str  # scheduler config, as canonical JSON
    sampler: str
    t_ref: int
    seed: int
    num_images: int
    prompts: tuple[str, ...] = ()
    guidance_scale: float | None = None
    dtype: str = "float32"
    features: str = ""  # sha256 of the Inception weights



@dataclass(frozen=True)
class TeacherEntry:
    stats: FeatureStats
    preview: np.ndarray  # uint8 N×C×H×W, the first few teacher images
    path: Path
    status: str  # "hit" | "built" | "rebuilt"
    problem: str | None = None  # why a "rebuilt" entry could not be used


@dataclass(frozen=True)
class ReferenceKey(CacheKey):
    """A real data set's images (for real FID): which set, split, size, count, feature network."""

    data: str  # a known data set name, or a folder's absolute path
    split: str
    image_size: int
    num_images: int
    features: str



@dataclass(frozen=True)
class ClipKey(CacheKey):
    """The teacher's per-image CLIP scores: its images (a `TeacherKey` digest) and the CLIP
    model (weights and preprocessing, `ClipScorer.fingerprint`)."""

    teacher: str
    clip: str


@dataclass(frozen=True)
class ScheduleKey(CacheKey):
    """A schedule's Inception features on a teacher's noises: the teacher's images (a
    `TeacherKey` digest: model, pipeline, scheduler, seeds, count, conditioning, dtype, feature
    network) and the schedule (its canonical JSON without `meta`, which does not change its
    images: an exported file and its trial share an entry; the key's own digest names the file)."""

    teacher: str
    schedule: str


class TeacherCache:
    """Feature statistics on disk under `<cache>/<kind>/<digest>.{npz,json}`: the teacher's
    (`kind="teacher"`, keyed by `TeacherKey`), a real data set's (`"reference"`), or any plain
    arrays (`*_arrays`: the teacher's CLIP scores, `"clip"`, keyed by `ClipKey`)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, kind: str = "teacher") -> None:
        self.dir = cache_dir(root) / kind

    def paths(self, key: CacheKey) -> tuple[Path, Path]:
        stem = self.dir / key.digest()
        return stem.with_suffix(".npz"), stem.with_suffix(".json")

    def load(self, key: CacheKey) -> tuple[TeacherEntry | None, str | None]:
        """(entry, None) on a hit; (None, None) when absent; (None, problem) when the entry is
        corrupt or does not match the key — the caller rebuilds it."""
        arrays, problem = self.load_arrays(key)
        if arrays is None:
            return None, problem
        npz = self.paths(key)[0]
        try:
            preview = arrays.pop("preview")
            stats = FeatureStats.from_arrays(arrays, source=str(npz))
        except Exception as err:  # any unreadable content is a corrupt entry
            return None, f"teacher cache {npz} is unreadable ({type(err).__name__}: {err})"
        return TeacherEntry(stats, preview, npz, "hit"), None

    def load_arrays(self, key: CacheKey) -> tuple[dict[str, np.ndarray] | None, str | None]:
        """The arrays of an entry (any kind), as `load` reports it."""
        npz, manifest = self.paths(key)
        if not npz.exists() and not manifest.exists():
            return None, None
        problem = self._check(key, npz, manifest)
        if problem is None:
            try:
                with np.load(npz, allow_pickle=False) as data:
                    return {k: data[k] for k in data.files}, None
            except Exception as err:  # any unreadable content is a corrupt entry
                problem = f"unreadable ({type(err).__name__}: {err})"
        return None, f"teacher cache {npz} is {problem}"

    @staticmethod
    def _check(key: CacheKey, npz: Path, manifest: Path) -> str | None:
        if not npz.exists() or not manifest.exists():
            return "incomplete (statistics or manifest missing)"
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            return "corrupt (manifest is not valid JSON)"
        if meta.get("format") != TEACHER_FORMAT:
            return f"of another format ({meta.get('format')!r})"
        if meta.get("key") != key.to_json():
            return "for another key (hash collision or edited manifest)"
        if meta.get("sha256") != sha256_file(npz):
            return "corrupt (checksum mismatch)"
        return None

    def store(self, key: CacheKey, stats: FeatureStats, preview: np.ndarray) -> Path:
        """Write the npz, then the manifest naming its checksum (both atomic)."""
        arrays = dict(stats.to_arrays(with_sqrt=False))
        arrays["preview"] = np.ascontiguousarray(preview, dtype=np.uint8)
        return self.store_arrays(key, arrays)

    def store_arrays(self, key: CacheKey, arrays: Mapping[str, np.ndarray]) -> Path:
        """Write any plain arrays as an entry: the npz, then its manifest (both atomic)."""
        npz, manifest = self.paths(key)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write(npz, lambda f: f.write(buf.getvalue()))
        meta = {"format": TEACHER_FORMAT, "key": key.to_json(), "sha256": sha256_file(npz)}
        atomic_write(manifest, lambda f: f.write(json.dumps(meta, indent=2).encode()))
        return npz

    def get_or_build(
        self, key: CacheKey, build: Callable[[], tuple[FeatureStats, np.ndarray]]
    ) -> TeacherEntry:
        """The cached entry, or `build()` (features of the teacher's images) stored and returned.

        A corrupt or mismatched entry is reported with a warning, rebuilt and replaced.
        """
        def build_arrays() -> dict[str, np.ndarray]:
            stats, preview = build()
            arrays = dict(stats.to_arrays(with_sqrt=False))
            arrays["preview"] = np.ascontiguousarray(preview[:PREVIEW_IMAGES], dtype=np.uint8)
            built.append(stats)
            return arrays

        built: list[FeatureStats] = []
        arrays, path, status, problem = self.get_or_build_arrays(key, build_arrays, self.load)
        if isinstance(arrays, TeacherEntry):
            return arrays
        return TeacherEntry(built[0], arrays["preview"], path, status, problem)

    def get_or_build_arrays(
        self, key: CacheKey, build: Callable[[], dict[str, np.ndarray]],
        load: Callable[[CacheKey], tuple[Any, str | None]] | None = None,
    ) -> tuple[Any, Path, str, str | None]:
        """(what `load` read or the arrays `build()` made, path, status, problem): a hit, or
        built and stored once however many workers ask at the same time (a file lock)."""
        load = load or self.load_arrays
        path = self.paths(key)[0]
        found, problem = load(key)
        if found is not None:
            return found, path, "hit", None
        # Workers started together on a fresh cache: one builds, the others wait and read it.
        with file_lock(path.with_suffix(".lock")):
            found, problem = load(key)
            if found is not None:
                return found, path, "hit", None
            if problem is not None:
                warnings.warn(f"{problem}; rebuilding it", stacklevel=3)
            arrays = build()
            self.store_arrays(key, arrays)
        return arrays, path, "rebuilt" if problem else "built", problem

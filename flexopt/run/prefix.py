"""Shared-prefix reuse: a candidate starts from the longest stored state of a schedule prefix.

Why it is exact: with fixed noises (image i: seed + i) and the same batches, two schedules whose
first `j` segments are equal make the same U-Net calls and updates up to slot `j·L`. That slot is
a full step, so nothing but the latents and the sampler's history (PLMS / DPM-Solver multistep)
carries over — no feature cache. `PrefixCache` keeps those states at segment boundaries, in CPU
memory, least recently used first out, within a byte budget; `PrefixReuse` hands each batch of
one generation its longest stored prefix and keeps the boundaries the batch reaches. The run
itself resumes inside the pipeline's own call (`FlexScheduler.resume_at`), not in a second loop.

What the key holds: `context` (model, pipeline, scheduler config, seed, conditioning, dtype,
device), the schedule's sampler, segment length and grid length (`N·L` slots spaced as the sampler
spaces them), the batch (first image, count) and the prefix's segments. Pipelines that mix extra
inputs into the latents or start late (img2img, inpainting, ControlNet) are not resumed: see
`REUSABLE_KINDS`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from flexopt.errors import FlexoptError
from flexopt.space.schedule import Schedule
from flexopt.space.steps import Segment

if TYPE_CHECKING:  # torch and diffusers stay unimported until something runs
    from flexopt.run.samplers import BoundaryFn, Resume

DEFAULT_PREFIX_CACHE_MB = 512.0
# Pipeline kinds (`flexopt.run.pipeline.pipeline_kind`) whose state at a boundary is the latents and
# sampler history alone: unconditional / class-conditional and text-to-image.
REUSABLE_KINDS = ("unconditional", "text")


def check_cache_mb(mb: float) -> float:
    """`mb` if it is a valid cache budget in MiB (0 disables), else a one-line error."""
    if isinstance(mb, bool) or not isinstance(mb, int | float) or not mb >= 0:
        raise FlexoptError(f"prefix cache size {mb!r} MB is invalid; allowed: a number >= 0 "
                           "(0 disables prefix reuse)")
    return float(mb)


@dataclass(frozen=True)
class PrefixKey:
    """Everything the state at a segment boundary depends on."""

    context: str  # the model, seed and conditioning (`ModelEvaluator.prefix_context`)
    grid: tuple[Any, ...]  # sampler, segment length, grid length, placed timesteps (or None)
    first: int  # the batch's first image index
    count: int  # the batch's image count
    segments: tuple[Segment, ...]  # the prefix: the segments done


class PrefixCache:
    """Boundary states (`Resume`) in CPU memory: least recently used out past `budget_mb` MiB."""

    def __init__(self, budget_mb: float = DEFAULT_PREFIX_CACHE_MB) -> None:
        self.budget_bytes = int(check_cache_mb(budget_mb) * 2**20)
        self._entries: OrderedDict[PrefixKey, Resume] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: PrefixKey) -> bool:
        return key in self._entries

    def get(self, key: PrefixKey) -> Resume | None:
        """The state stored for `key` (now the most recently used), or None."""
        state = self._entries.get(key)
        if state is not None:
            self._entries.move_to_end(key)
        return state

    def put(self, key: PrefixKey, state: Resume) -> None:
        """Keep a CPU copy of `state` (a live run's tensors), evicting the least recently used
        entries until the budget holds; a state larger than the whole budget is not kept."""
        if state.nbytes > self.budget_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._entries[key] = state.copy("cpu")
        self.nbytes += state.nbytes
        while self.nbytes > self.budget_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes

    def longest(self, key: PrefixKey) -> tuple[int, Resume] | None:
        """(j, state) for the longest stored proper prefix `key.segments[:j]`, or None."""
        for j in range(len(key.segments) - 1, 0, -1):
            state = self.get(replace(key, segments=key.segments[:j]))
            if state is not None:
                return j, state
        return None


@dataclass
class PrefixReuse:
    """One schedule's generation through a `PrefixCache`: per batch, where to start and what to
    keep; `skipped` counts the U-Net calls not made."""

    cache: PrefixCache
    context: str
    schedule: Schedule
    skipped: int = 0
    resumed: list[int] = field(default_factory=list)  # per batch: segments reused (0: none)

    def key(self, first: int, count: int) -> PrefixKey:
        """The key of the whole schedule for batch `first..first+count-1`."""
        s = self.schedule
        # a placed-step schedule has no segment boundaries: nothing is stored or found for it
        grid = (s.sampler, s.segment_length, s.grid_length, s.timesteps)
        return PrefixKey(self.context, grid, first, count, s.segments)

    def batch(self, first: int, count: int) -> tuple[Resume | None, BoundaryFn]:
        """(the state to start batch `first..first+count-1` from or None, the boundary keeper)."""
        key = self.key(first, count)
        found = self.cache.longest(key)
        j, resume = found if found is not None else (0, None)
        self.resumed.append(j)
        if resume is not None:
            self.skipped += resume.call
        return resume, self._keeper(key)

    def _keeper(self, key: PrefixKey) -> Callable[[int, Resume], None]:
        def keep(done: int, state: Resume) -> None:
            self.cache.put(replace(key, segments=key.segments[:done]), state)

        return keep

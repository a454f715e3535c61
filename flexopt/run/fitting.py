"""The space fitted to a budget.

Fitting picks the segment (or step) count choices whose cost range puts the budget inside it, so a
search neither starts with nothing feasible nor with a space the budget does not constrain.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flexopt.errors import FlexoptError
from flexopt.run.budget import format_macs
from flexopt.run.cost import candidate_avg_macs, placed_avg_macs, total_macs
from flexopt.space.segment import SearchSpace
from flexopt.space.steps import Candidate, Segment
from flexopt.space.timestep import TimestepSpace

if TYPE_CHECKING:
    from flexopt.run.cost import CostProfile


@dataclass(frozen=True)
class CostRange:
    """Avg MACs of a space's candidates: the cheapest, the median of uniform random draws, and
    the heaviest — what shows whether a budget sits inside the space."""

    cheapest: float
    median: float
    heaviest: float
    unit: str = "MACs"  # or "s": a latency profile's seconds per step

    def __str__(self) -> str:
        if self.unit == "s":
            return (f"cheapest {self.cheapest * 1e3:.3g} / median {self.median * 1e3:.3g} / "
                    f"heaviest {self.heaviest * 1e3:.3g} ms avg per step")
        return (f"cheapest {format_macs(self.cheapest)} / median {format_macs(self.median)} / "
                f"heaviest {format_macs(self.heaviest)} avg MACs")

    def fits(self, max_avg_macs: float) -> bool:
        """SPEC §1: the cheapest candidate is under the budget and the heaviest reaches 0.9x it."""
        return self.cheapest < max_avg_macs and self.heaviest >= 0.9 * max_avg_macs


def cost_range(space: SearchSpace, profile: CostProfile, draws: int = 2000) -> CostRange:
    """The space's cost range (a fixed-seed sample for the median, so it prints the same)."""
    # the costliest branch (the deepest for MACs; a measured profile may order them otherwise)
    heavy = Segment(max(space.branches, key=profile.partial_cost), space.intervals[-1])
    heaviest = Candidate((heavy,) * space.segments[-1])
    rng = random.Random(0)
    costs = sorted(candidate_avg_macs(space.sample(rng), profile, space.t_ref)
                   for _ in range(draws))
    return CostRange(candidate_avg_macs(space.lightest(), profile, space.t_ref),
                     costs[len(costs) // 2],
                     candidate_avg_macs(heaviest, profile, space.t_ref), profile.unit)


def fitted_segments(profile: CostProfile, t_ref: int, max_avg_macs: float,
                    branches: Sequence[int], intervals: Sequence[int]) -> tuple[int, ...]:
    """N-segment choices that put the budget inside the space's cost range.

    Every segment runs one full step, so the most segments a feasible candidate can have is the
    largest `N` whose lightest candidate is under the budget (with interval 1 a choice, that is
    the fewer-step teacher on the `N·L` grid). The fewest is the smallest `N` whose heaviest
    candidate (every segment at the largest interval and branch) still reaches 0.9x the budget:
    fewer segments could not spend it.
    Between them, candidates trade full steps for partial ones at every cost up to the budget.
    """
    total = max_avg_macs * t_ref

    def seg_cost(branch: int, interval: int) -> int:
        return total_macs((Segment(branch, interval),), profile)

    light = seg_cost(min(branches, key=profile.partial_cost), min(intervals))
    heavy = seg_cost(max(branches, key=profile.partial_cost), max(intervals))
    n_max = math.ceil(total / light) - 1
    if n_max < 1:
        raise FlexoptError(
            f"the budget {profile.describe(max_avg_macs)} affords not even one segment over "
            f"t_ref {t_ref} (the lightest costs {profile.describe(light / t_ref)}); allowed: a "
            "budget above that, or a larger t_ref")
    n_min = max(1, min(n_max, math.ceil(0.9 * total / heavy)))
    return tuple(range(n_min, n_max + 1))


@dataclass(frozen=True)
class SpaceFit:
    """A space for a budget and what it costs; `warning` when it cannot come near the budget."""

    space: SearchSpace | TimestepSpace
    costs: CostRange
    suggested: tuple[int, ...]  # the N-segment (or step-count) choices fitted to the budget
    warning: str | None = None


def fit_space(profile: CostProfile, t_ref: int, max_avg_macs: float,
              branches: Sequence[int] = (1, 2, 3), intervals: Sequence[int] = (1, 2, 3),
              segments: Sequence[int] | None = None) -> SpaceFit:
    """The space for a budget: `segments=None` derives the N-segment choices; explicit ones are
    kept and checked (a warning with the numbers and a suggested `--segments` when the heaviest
    candidate is under 0.9x the budget; an error when even the cheapest is at or over it)."""
    for b in branches:
        profile.partial_cost(b)  # a branch beyond the model: one clear error
    suggested = fitted_segments(profile, t_ref, max_avg_macs, branches, intervals)
    space = SearchSpace(tuple(segments) if segments else suggested, tuple(branches),
                        tuple(intervals), t_ref)
    costs = cost_range(space, profile)
    hint = f"--segments {suggested[0]}-{suggested[-1]}"
    if costs.cheapest >= max_avg_macs:
        raise FlexoptError(
            f"no candidate fits the budget: even the lightest ({space.lightest()}, "
            f"{profile.describe(costs.cheapest)}) is not under {profile.format(max_avg_macs)}; "
            f"raise the budget or use fewer segments, e.g. {hint}")
    warning = None
    if costs.heaviest < 0.9 * max_avg_macs:
        warning = (
            f"the space cannot come near the budget: its heaviest candidate costs "
            f"{profile.describe(costs.heaviest)}, under 0.9x the budget "
            f"{profile.format(max_avg_macs)}, so the search cannot spend it; try {hint}")
    return SpaceFit(space, costs, suggested, warning)


def fitted_steps(profile: CostProfile, t_ref: int, max_avg_macs: float, kind: str,
                 branches: Sequence[int] = ()) -> tuple[int, ...]:
    """Step-count choices K for a timestep or hybrid space under a budget.

    All-full K steps cost `K · M_full / t_ref`: `K_full`, the most full steps under the budget,
    is what the budget affords. The timestep space places `K_full - 2 … K_full` steps (fewer
    full steps are rarely better; the search may still take them). The hybrid adds cheap partial
    steps between full ones: from `K_full` up to the teacher's `t_ref` U-Net calls, or fewer
    when even the lightest candidate of that many steps (one full step, the rest partial with
    the smallest branch) is at the budget.
    """
    total = max_avg_macs * t_ref
    k_full = math.ceil(total / profile.full) - 1
    if k_full < 1:
        raise FlexoptError(
            f"the budget {profile.describe(max_avg_macs)} affords not even one full step over "
            f"t_ref {t_ref} (a full step costs {profile.describe(profile.full / t_ref)}); allowed: "
            "a budget above that, or a larger t_ref")
    if kind == "timesteps":
        return tuple(range(max(1, k_full - 2), k_full + 1))
    light = min(profile.partial_cost(b) for b in branches)
    k_light = math.ceil((total - profile.full) / light) if light else t_ref
    upper = max(k_full, min(t_ref, k_light))
    return tuple(range(k_full, upper + 1))


def fit_placed(profile: CostProfile, t_ref: int, max_avg_macs: float, kind: str,
               branches: Sequence[int] = (), steps: Sequence[int] | None = None,
               train_timesteps: int = 1000, offset: int = 0, draws: int = 500) -> SpaceFit:
    """`fit_space` for the timestep and hybrid spaces: `steps=None` derives the K choices
    (`fitted_steps`); explicit ones are kept and checked like explicit N-segment choices."""
    hybrid = kind == "hybrid"
    for b in branches if hybrid else ():
        profile.partial_cost(b)  # a branch beyond the model: one clear error
    suggested = fitted_steps(profile, t_ref, max_avg_macs, kind, branches)
    if suggested[-1] > train_timesteps:
        raise FlexoptError(f"{suggested[-1]} steps exceed the model's {train_timesteps} training "
                           "timesteps; allowed: a smaller t_ref or budget")
    space = TimestepSpace(tuple(steps) if steps else suggested,
                          tuple(branches) if hybrid else (), t_ref, train_timesteps, offset)
    rng = random.Random(0)
    costs = sorted(placed_avg_macs(space, space.sample(rng), profile) for _ in range(draws))
    k_max = space.steps[-1]
    heaviest = k_max * profile.full / t_ref
    cheapest = placed_avg_macs(space, space.lightest(), profile)
    costs_ = CostRange(cheapest, costs[len(costs) // 2], heaviest, profile.unit)
    hint = f"--steps {suggested[0]}-{suggested[-1]}"
    if cheapest >= max_avg_macs:
        raise FlexoptError(
            f"no candidate fits the budget: even the lightest ({space.lightest()}, "
            f"{profile.describe(cheapest)}) is not under {profile.format(max_avg_macs)}; "
            f"raise the budget or place fewer steps, e.g. {hint}")
    warning = None
    if heaviest < 0.9 * max_avg_macs:
        warning = (f"the space cannot come near the budget: its heaviest candidate costs "
                   f"{profile.describe(heaviest)}, under 0.9x the budget "
                   f"{profile.format(max_avg_macs)}; try {hint}")
    return SpaceFit(space, costs_, suggested, warning)

"""How `FlexEvolutionSampler` makes candidates, one strategy each (as Optuna's
`samplers/nsgaii/_child_generation_strategy.py` does): random feasible draws spread up to the
budget (the first population), Flexiffusion's mutation children of a tournament's parent (Alg. 1)
and AutoDiffusion's crossover and mutation children of the top-k. Each is a function of the space,
the sampler's random generator and a feasibility check; the sampler keeps Optuna's protocol and
the population.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from flexopt.errors import FlexoptError
from flexopt.space.segment import Mutation, SearchSpace
from flexopt.space.steps import Candidate
from flexopt.space.timestep import Placement, StepMutation, TimestepSpace

AnySpace = SearchSpace | TimestepSpace
AnyCandidate = Candidate | Placement
Feasible = Callable[[Any], bool]


@dataclass(frozen=True)
class CostLimit:
    """A feasibility check that also knows the cost: `candidate -> cost(candidate) < limit`.

    Passed as the sampler's `feasible`, it lets the first population spread over costs up to the
    budget (where good candidates are) instead of piling at the space's median cost.
    """

    cost: Callable[[Any], float]
    limit: float | None = None

    def __call__(self, candidate: AnyCandidate) -> bool:
        return self.limit is None or self.cost(candidate) < self.limit


def candidate_key(space: AnySpace, candidate: AnyCandidate) -> str:
    """A string naming the steps a candidate runs (equal for equivalent candidates)."""
    return str(space.canonical(candidate))


Children = list[tuple[Any, dict[str, Any]]]  # (candidate, the trial's user attrs), first to run


def child_attrs(parent: FrozenTrial, record: Sequence[Mutation | StepMutation]) -> dict[str, Any]:
    """A mutation child's provenance: its parent trial and what changed."""
    return {"origin": "mutation", "parent": parent.number, "mutation": [str(m) for m in record]}


def mutation_children(space: AnySpace, parent_trial: FrozenTrial, parent: AnyCandidate,
                      rng: random.Random, feasible: Feasible, seen: set[str], *, n_c: int,
                      n_m: int, max_tries: int) -> Children:
    """Alg. 1's children: up to `n_c` new feasible mutations of `parent` (`n_m` segments
    changed each) within `max_tries` attempts; none when its neighbourhood is exhausted."""
    children: Children = []
    keys = set(seen)
    for _ in range(max_tries):
        if len(children) >= n_c:
            break
        child, record = space.mutate(parent, rng, n_m)
        key = candidate_key(space, child)
        if key in keys or not feasible(child):
            continue
        keys.add(key)
        children.append((child, child_attrs(parent_trial, record)))
    return children


def fill_child(space: TimestepSpace, parent: Placement, rng: random.Random,
               feasible: Feasible) -> tuple[Placement, list[StepMutation]] | None:
    """A child that spends `parent`'s room under the budget on partial steps of one random
    branch (`TimestepSpace.fill`): between half and all of the most that fit, in a run of
    consecutive gaps that starts at the noisy end, ends at the clean end, or lies anywhere
    (one chance in three each: a long run drawn anywhere nearly always covers the middle).
    None when not one more partial step fits.

    Why: on the embedded model the fewer-step teacher plus 8 partial steps at the low-noise end
    beats the teacher by rFID, while each single step's gain is below a search's noise
    (docs/search-quality.md), so a mutation adding one step at a time never finds it.
    """
    gaps = space.fill_gaps(parent)
    if not space.branches or not gaps:
        return None
    branch = rng.choice(space.branches)
    # partial steps cost the same wherever they are, so the first m gaps say whether m fit, and
    # once m do not, more do not either (a parent at the budget costs one check, not one per gap)
    fits: list[int] = []
    for m in range(1, len(gaps) + 1):
        if parent.k + m not in space.steps:
            continue
        if not feasible(space.fill(parent, branch, gaps[:m])[0]):
            break
        fits.append(m)
    if not fits:
        return None
    m = rng.choice([m for m in fits if m >= (fits[-1] + 1) // 2])
    start = rng.choice((0, len(gaps) - m, rng.randrange(len(gaps) - m + 1)))
    child, record = space.fill(parent, branch, gaps[start:start + m])
    return (child, record) if feasible(child) else None


def autodiffusion_children(space: TimestepSpace, parents: Sequence[tuple[FrozenTrial, Placement]],
                           rng: random.Random, feasible: Feasible, seen: set[str], *, n_c: int,
                           n_m: int, max_tries: int, crossover_prob: float,
                           mutation_prob: float, fill_prob: float = 0.0) -> Children:
    """AutoDiffusion's iteration: each child is, with probability `crossover_prob`, the
    crossover of two of the top-k `parents`, else the mutation of one (each timestep moves with
    `mutation_prob`). Over a hybrid space a child is first, with probability `fill_prob`, a
    `fill_child` of the best parent that has room for one more partial step (origin "fill"):
    a fill refines the incumbent, where a run of small gains counts."""
    children: Children = []
    keys = set(seen)
    for _ in range(max_tries):
        if len(children) >= n_c:
            break
        if fill_prob and space.branches and rng.random() < fill_prob:
            found = next(((tp, made) for tp, p in parents  # best first
                          if (made := fill_child(space, p, rng, feasible)) is not None), None)
            if found is None:
                continue
            tp, (child, record) = found
            attrs = child_attrs(tp, record) | {"origin": "fill"}
        elif len(parents) >= 2 and rng.random() < crossover_prob:
            (ta, a), (tb, b) = rng.sample(parents, 2)
            child = space.crossover(a, b, rng)
            attrs: dict[str, Any] = {"origin": "crossover", "parents": [ta.number, tb.number]}
        else:
            tp, p = rng.choice(parents)
            child, record = space.mutate(p, rng, n_m, prob=mutation_prob)
            attrs = child_attrs(tp, record)
        key = candidate_key(space, child)
        if key in keys or not feasible(child):
            continue
        keys.add(key)
        children.append((child, attrs))
    return children


@dataclass
class RandomDraws:
    """Random feasible candidates: the first population, and the way out of an exhausted
    neighbourhood. With a `CostLimit` they spread over costs up to the budget."""

    space: AnySpace
    feasible: Feasible
    rng: random.Random
    max_tries: int

    def spread(self, i: int) -> float | None:
        """The avg-MACs target of the `i`-th random member: spread evenly (a golden-ratio
        sequence, so any prefix is spread too) from 0.6x the budget up to the budget."""
        limit = getattr(self.feasible, "limit", None)
        if limit is None:
            return None
        lo = max(self.feasible.cost(self.space.lightest()), 0.6 * limit)
        return lo + (limit - lo) * ((0.5 + i * 0.6180339887498949) % 1.0)

    def near_cost(self, target: float, seen: set[str] = frozenset()) -> AnyCandidate | None:
        """A new feasible candidate whose cost is near `target` (at most the budget).

        Draws the size (N-segment, or K) uniformly (a uniform draw over candidates nearly
        always takes the largest), then makes the draw lighter or heavier one mutation at a
        time towards the target. None when no new feasible candidate was found.
        """
        cost, limit = self.feasible.cost, self.feasible.limit
        best: tuple[float, AnyCandidate] | None = None
        for _ in range(self.max_tries // 10 or 1):
            cand = self.space.sample(self.rng, self.rng.choice(self.space.sizes))
            for _ in range(4 * self.space.sizes[-1]):
                c = cost(cand)
                if c < limit and abs(c - target) <= 0.03 * limit:
                    break
                mode = "lighter" if c >= limit or c > target else "heavier"
                try:
                    cand, _ = self.space.mutate(cand, self.rng, 1, modes=(mode,))
                except FlexoptError:  # already the lightest / heaviest
                    break
            c = cost(cand)
            if c < limit and candidate_key(self.space, cand) not in seen:
                if best is None or abs(c - target) < best[0]:
                    best = (abs(c - target), cand)
                if best[0] <= 0.03 * limit:
                    break
        return None if best is None else best[1]

    def random_feasible(self, seen: set[str] = frozenset(),
                        target: float | None = None) -> AnyCandidate:
        """A random feasible candidate, new if possible; near `target` avg MACs when given (and
        the sampler's `feasible` is a `CostLimit`).

        Uniform draws first; if the budget rejects them all, a draw is made lighter one random
        mutation at a time until it fits (so tight budgets still get varied candidates).
        """
        if target is not None and isinstance(self.feasible, CostLimit):
            near = self.near_cost(target, seen)
            if near is not None:
                return near
        best_seen = None
        for _ in range(self.max_tries):
            cand = self.space.sample(self.rng)
            if self.feasible(cand):
                if candidate_key(self.space, cand) not in seen:
                    return cand
                best_seen = best_seen or cand
        lightest = self.space.lightest()
        if not self.feasible(lightest):
            raise FlexoptError(
                "no candidate of the search space fits the budget: even the lightest "
                f"({lightest}) is over it; raise the budget or allow fewer/lighter segments"
            )
        for _ in range(self.max_tries):
            cand = self.space.sample(self.rng)
            while not self.feasible(cand):
                cand, _ = self.space.mutate(cand, self.rng, 1, modes=("lighter",))
            if candidate_key(self.space, cand) not in seen:
                return cand
            best_seen = best_seen or cand
        return best_seen or lightest

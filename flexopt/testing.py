"""Synthetic search problems with a known optimum, for testing and benchmarking samplers.

Scoring a real candidate means generating images; these stand-ins score a candidate in
microseconds, so a sampler's behaviour (does it find the optimum, how fast) can be checked alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import optuna

from flexopt.space.segment import SearchSpace
from flexopt.space.steps import Candidate
from flexopt.space.timestep import Placement, TimestepSpace


@dataclass(frozen=True)
class SyntheticProblem:
    """Minimise the distance to a hidden target candidate under a cost budget.

    Score: `|N - N*| · 4` plus, per segment position, the index distance of branch and interval
    choices to the target's (positions past the shorter candidate count as fully wrong). The
    target is feasible by construction, and the score is 0 exactly at the target.
    """

    space: SearchSpace
    target: Candidate
    budget: float  # maximum cost (same units as `cost`)

    @classmethod
    def make(cls, space: SearchSpace, seed: int, slack: float = 1.05) -> SyntheticProblem:
        target = space.sample(random.Random(seed))
        problem = cls(space, target, 0.0)
        return cls(space, target, problem.cost(target) * slack)

    def cost(self, c: Candidate) -> float:
        """A MACs-like cost: full steps cost 1, partial steps 0.2 · branch / max branch."""
        bmax = self.space.branches[-1]
        return sum(1 + (s.interval - 1) * 0.2 * s.branch / bmax for s in c.segments)

    def feasible(self, c: Candidate) -> bool:
        return self.cost(c) <= self.budget

    def score(self, c: Candidate) -> float:
        sp, t = self.space, self.target
        d = 4.0 * abs(sp.segments.index(c.n_segments) - sp.segments.index(t.n_segments))
        wrong = len(sp.branches) + len(sp.intervals)
        for i in range(max(c.n_segments, t.n_segments)):
            if i >= c.n_segments or i >= t.n_segments:
                d += wrong
                continue
            a, b = c.segments[i], t.segments[i]
            d += abs(sp.branches.index(a.branch) - sp.branches.index(b.branch)) * (b.interval > 1)
            d += abs(sp.intervals.index(a.interval) - sp.intervals.index(b.interval))
        return float(d)

    def objective(self, trial: optuna.Trial) -> float:
        """An Optuna objective over this space's trial params."""
        c = self.space.suggest(trial)
        trial.set_user_attr("cost", self.cost(c))
        return self.score(c)


@dataclass(frozen=True)
class SyntheticPlacementProblem:
    """`SyntheticProblem` for a `TimestepSpace`: minimise the distance to a hidden target.

    Score: `|K - K*| · 60` plus, step by step (first with first), `|t - t*| / 10` and 5 per
    differing step type. 0 exactly at the
    target, which is feasible by construction.
    """

    space: TimestepSpace
    target: Placement
    budget: float

    @classmethod
    def make(
        cls, space: TimestepSpace, seed: int, slack: float = 1.05
    ) -> SyntheticPlacementProblem:
        target = space.sample(random.Random(seed))
        return cls(space, target, cls(space, target, 0.0).cost(target) * slack)

    def cost(self, c: Placement) -> float:
        """Full steps cost 1, partial steps 0.2 · branch / max branch."""
        bmax = self.space.branches[-1] if self.space.branches else 1
        return sum(1.0 if b == 0 else 0.2 * b / bmax for b in c.branches)

    def feasible(self, c: Placement) -> bool:
        return self.cost(c) <= self.budget

    def score(self, c: Placement) -> float:
        t = self.target
        d = 60.0 * abs(c.k - t.k)
        for a, b in zip(c.steps, t.steps, strict=False):
            d += abs(a.timestep - b.timestep) / 10 + 5.0 * (a.branch != b.branch)
        return d

    def objective(self, trial: optuna.Trial) -> float:
        c = self.space.suggest(trial)
        trial.set_user_attr("cost", self.cost(c))
        return self.score(c)

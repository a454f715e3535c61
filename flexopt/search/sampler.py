"""`FlexEvolutionSampler`: the paper's segment-wise evolutionary search (Alg. 1) for Optuna.

The search space is dynamic (`seg_{i}_*` exist only for `i < n_segments`), which Optuna's relative
sampling cannot express; so the sampler proposes a whole candidate in `before_trial`, stores it on
the trial, and `sample_independent` hands out its parameters one by one. Everything the algorithm
needs (population, parents, children still to evaluate) lives in the study's storage: several
workers share one study, and an interrupted search resumes where it stopped.

One iteration of Alg. 1 picks a parent by tournament (the best of `n_p` random members of the
population, the best `n_u` complete trials) and makes up to `n_c` feasible children within
`max_tries` mutations. The first child is proposed to the asking trial; the others are enqueued
(`study.enqueue_trial`) with their parent and mutation recorded, so any worker evaluates them next.

Over a `TimestepSpace` (issue 16) an iteration is AutoDiffusion's instead (seed 004, Alg. 1): the
parents are the population's top `top_k`; each child is, with probability `crossover_prob`, the
crossover of two of them, else the mutation of one (each timestep moves with `mutation_prob`).
The strategies themselves are in `flexopt.search.strategies`.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from flexopt.errors import FlexoptError
from flexopt.search.strategies import (
    AnyCandidate,
    AnySpace,
    CostLimit,
    Feasible,
    RandomDraws,
    autodiffusion_children,
    candidate_key,
    mutation_children,
)

PROPOSAL_ATTR = "flexopt:params"  # system attr: the candidate proposed for a trial
KEY_ATTR = "flexopt:key"  # system attr: canonical candidate key, for duplicate detection

def _whole_study(study: Study) -> Study:
    """The study itself: under `HyperbandPruner` a sampler is handed a view of one bracket's
    trials, which cannot enqueue; the evolution's population is the whole study's."""
    return study._study if hasattr(study, "_bracket_id") else study  # type: ignore[attr-defined]


def _pareto_ranks(values: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting rank (0 = Pareto front) of minimisation vectors."""
    n = len(values)
    ranks = [-1] * n
    remaining = set(range(n))
    rank = 0
    while remaining:
        front = {
            i for i in remaining
            if not any(
                all(a <= b for a, b in zip(values[j], values[i], strict=True))
                and any(a < b for a, b in zip(values[j], values[i], strict=True))
                for j in remaining if j != i
            )
        }
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


class FlexEvolutionSampler(BaseSampler):
    """Flexiffusion's evolutionary search over a `SearchSpace` (or AutoDiffusion's over a
    `TimestepSpace`), under a feasibility check.

    Args:
        space: the segment-wise or a timestep search space.
        feasible: `candidate -> bool`, True when the candidate is under the MACs budget. Only
            feasible candidates are ever proposed (checked before any evaluation).
        population_size: random feasible candidates that start the search.
        n_p, n_c, n_u: tournament size, children per parent, population kept (paper: 25, 5, 300).
        n_m: segments changed per mutation (over a `TimestepSpace`: the fewest changes).
        max_tries: mutation attempts per parent to find `n_c` new feasible children.
        seed: seed of this worker's random generator.
        seeds: candidates that open the first population before the random ones, by name
            (recorded as the trial's `baseline` user attr). Default: the baselines the space runs
            exactly (`SearchSpace.baselines`), the heaviest feasible of each family, so the
            search starts at least as good as the fewer-step teacher and DeepCache-uniform
            (DDIM with uniform and quadratic spacing over a `TimestepSpace`). `{}`: none.
        top_k, crossover_prob, mutation_prob: AutoDiffusion's parents (the population's best
            `top_k`), share of crossover children, per-timestep move probability; used over a
            space with `crossover` (a `TimestepSpace`). Defaults: AutoDiffusion's released
            search (10 parents, 25 crossover + 25 mutation children, p = 0.1).
        fill_prob: over a hybrid space, the share of children that spend a parent's room under
            the budget on a run of partial steps (`strategies.fill_child`); the rest are
            AutoDiffusion's. Default 0.25; 0 is AutoDiffusion's iteration alone.
    """

    def __init__(
        self,
        space: AnySpace,
        feasible: Feasible | None = None,
        *,
        population_size: int = 50,
        n_p: int = 25,
        n_c: int = 5,
        n_u: int = 300,
        n_m: int = 1,
        max_tries: int = 200,
        seed: int | None = None,
        seeds: Mapping[str, AnyCandidate] | None = None,
        top_k: int = 10,
        crossover_prob: float = 0.5,
        mutation_prob: float = 0.1,
        fill_prob: float = 0.25,
    ) -> None:
        for name, v in (("population_size", population_size), ("n_p", n_p), ("n_c", n_c),
                        ("n_u", n_u), ("n_m", n_m), ("max_tries", max_tries), ("top_k", top_k)):
            if v < 1:
                raise FlexoptError(f"{name} {v} is invalid; allowed: an integer >= 1")
        for name, p in (("crossover_prob", crossover_prob), ("mutation_prob", mutation_prob),
                        ("fill_prob", fill_prob)):
            if not 0.0 <= p <= 1.0:
                raise FlexoptError(f"{name} {p} is invalid; allowed: a number in 0..1")
        self.top_k, self.crossover_prob, self.mutation_prob = top_k, crossover_prob, mutation_prob
        self.fill_prob = fill_prob
        self.space = space
        self.feasible: Feasible = feasible or (lambda c: True)
        self.population_size = population_size
        self.n_p, self.n_c, self.n_u, self.n_m = n_p, n_c, n_u, n_m
        self.max_tries = max_tries
        self._rng = random.Random(seed)
        self._fallback = RandomSampler(seed=seed)
        self._dists = space.distributions()
        self._proposals: dict[int, dict[str, int]] = {}
        self.seeds = dict(self.default_seeds() if seeds is None else seeds)
        for name, cand in self.seeds.items():
            space.check(cand)
            if not self.feasible(cand):
                raise FlexoptError(f"seed candidate {name!r} ({cand}) is not feasible")

    def default_seeds(self) -> dict[str, AnyCandidate]:
        """The heaviest feasible baseline of each family the space runs exactly (a family: the
        baselines' names up to the first space, "teacher", "deepcache", "ddim-quad")."""
        out: dict[str, AnyCandidate] = {}
        baselines = self.space.baselines()
        for family in dict.fromkeys(n.split(" ")[0] for n in baselines):
            fits = [(n, c) for n, c in baselines.items()
                    if n.split(" ")[0] == family and self.feasible(c)]
            cost = getattr(self.feasible, "cost", None)
            if fits:
                name, cand = max(fits, key=lambda nc: cost(nc[1]) if cost else nc[1].nfe)
                out[name] = cand
        return out

    # ------------------------------------------------------------------ BaseSampler API
    def reseed_rng(self) -> None:
        self._rng = random.Random()
        self._fallback.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        study = _whole_study(study)
        if "fixed_params" in trial.system_attrs:
            return  # enqueued (a user's trial, a baseline or one of our children): respect it
        if PROPOSAL_ATTR in trial.system_attrs:  # a retried trial keeps its candidate
            self._proposals[trial._trial_id] = trial.system_attrs[PROPOSAL_ATTR]
            return
        trials = study.get_trials(deepcopy=False)
        candidate, attrs = self._propose(study, trials, trial)
        params = self.space.to_params(candidate)
        storage = study._storage
        storage.set_trial_system_attr(trial._trial_id, PROPOSAL_ATTR, params)
        key = candidate_key(self.space, candidate)
        storage.set_trial_system_attr(trial._trial_id, KEY_ATTR, key)
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
            trial.user_attrs[key] = value
        trial.system_attrs[PROPOSAL_ATTR] = params
        self._proposals[trial._trial_id] = params

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        proposal = self._proposals.get(trial._trial_id) or trial.system_attrs.get(PROPOSAL_ATTR)
        ours = self._dists.get(param_name) == param_distribution
        if proposal and param_name in proposal and ours:
            return proposal[param_name]
        # A parameter outside the segment-wise space (or asked for by another objective).
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._proposals.pop(trial._trial_id, None)

    # ---------------------------------------------------------------------- algorithm
    def _decode(self, trial: FrozenTrial) -> AnyCandidate | None:
        try:
            return self.space.from_params(trial.params)
        except FlexoptError:
            return None  # a baseline or another trial that is not in this space

    def _seen_keys(self, trials: Sequence[FrozenTrial]) -> set[str]:
        keys = set()
        for t in trials:
            if KEY_ATTR in t.system_attrs:
                keys.add(t.system_attrs[KEY_ATTR])
                continue
            params = t.params or t.system_attrs.get("fixed_params") or {}
            with contextlib.suppress(FlexoptError):  # not a candidate of this space
                keys.add(candidate_key(self.space, self.space.from_params(params)))
        return keys

    def population(self, study: Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The best `n_u` complete feasible trials of this space, one per distinct candidate, best
        first."""
        directions = study.directions
        done: dict[str, FrozenTrial] = {}
        for t in trials:
            if t.state != TrialState.COMPLETE or t.values is None:
                continue
            if any(math.isnan(v) for v in t.values):
                continue
            if any(c > 0 for c in t.constraints.values()):  # an over-budget baseline
                continue
            cand = self._decode(t)
            if cand is None:
                continue
            done.setdefault(candidate_key(self.space, cand), t)
        members = list(done.values())
        signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in directions]
        vectors = [[s * v for s, v in zip(signs, t.values, strict=True)] for t in members]
        if len(directions) == 1:
            order = sorted(range(len(members)), key=lambda i: (vectors[i][0], members[i].number))
        else:
            ranks = _pareto_ranks(vectors)
            order = sorted(range(len(members)), key=lambda i: (ranks[i], members[i].number))
        return [members[i] for i in order[: self.n_u]]

    def _propose(
        self, study: Study, trials: Sequence[FrozenTrial], current: FrozenTrial
    ) -> tuple[AnyCandidate, dict[str, Any]]:
        seen = self._seen_keys([t for t in trials if t.number != current.number])
        population = self.population(study, trials)
        proposed = sum(
            1 for t in trials
            if t.number != current.number and t.user_attrs.get("origin") in ("random", "seed")
        )
        if proposed < self.population_size or len(population) < 2:
            for name, cand in self.seeds.items():
                if candidate_key(self.space, cand) not in seen:
                    return cand, {"origin": "seed", "baseline": name}
            return self.random_feasible(seen, self._spread(proposed)), {"origin": "random"}
        if hasattr(self.space, "crossover"):  # AutoDiffusion's iteration over a TimestepSpace
            parents = [(t, self._decode(t)) for t in population[: self.top_k]]
            stalled = parents[0][0]
            children = autodiffusion_children(
                self.space, parents, self._rng, self.feasible, seen, n_c=self.n_c, n_m=self.n_m,
                max_tries=self.max_tries, crossover_prob=self.crossover_prob,
                mutation_prob=self.mutation_prob, fill_prob=self.fill_prob)
        else:  # Alg. 1: tournament, the best of n_p random members is the parent
            contenders = self._rng.sample(range(len(population)), min(self.n_p, len(population)))
            stalled = population[min(contenders)]  # population is sorted best first
            children = mutation_children(self.space, stalled, self._decode(stalled), self._rng,
                                         self.feasible, seen, n_c=self.n_c, n_m=self.n_m,
                                         max_tries=self.max_tries)
        if not children:  # the parents' neighbourhood is exhausted: explore elsewhere
            return self.random_feasible(seen), {"origin": "random",
                                                "stalled_parent": stalled.number}
        for child, attrs in children[1:]:
            study.enqueue_trial(self.space.to_params(child), user_attrs=attrs)
        return children[0]

    def _spread(self, i: int) -> float | None:
        """The avg-MACs target of the `i`-th random member of the first population."""
        return self._draws().spread(i)

    def near_cost(self, target: float, seen: set[str] = frozenset()) -> AnyCandidate | None:
        """A new feasible candidate whose cost is near `target` (`RandomDraws.near_cost`)."""
        return self._draws().near_cost(target, seen)

    def random_feasible(self, seen: set[str] = frozenset(),
                        target: float | None = None) -> AnyCandidate:
        """A random feasible candidate, new if possible (`RandomDraws.random_feasible`)."""
        return self._draws().random_feasible(seen, target)

    def _draws(self) -> RandomDraws:
        return RandomDraws(self.space, self.feasible, self._rng, self.max_tries)

__all__ = ["CostLimit", "FlexEvolutionSampler", "candidate_key"]

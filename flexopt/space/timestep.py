"""The timestep search spaces of issue 16: AutoDiffusion's timestep placement, and the hybrid.

A candidate (`Placement`) is `K` of the model's training timesteps `0..T-1`, strictly decreasing,
`K` from a set of choices; every step is one U-Net call. *timesteps* (AutoDiffusion, seed 004):
every step is full. *hybrid*: each step is also full or partial with a branch `b` (DeepCache's
reuse of the deep features of the last full step, so the first step is always full).

`TimestepSpace` offers the methods of the segment-wise `SearchSpace` with the same meaning
(`check`, `sample`, `mutate`, `baselines`, the Optuna encoding, ...), so the sampler and the
study are written once over both, plus AutoDiffusion's `crossover`.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from flexopt.errors import FlexoptError
from flexopt.space.schedule import PlacedStep, spaced_timesteps
from flexopt.space.segment import parse_choices

if TYPE_CHECKING:
    from flexopt.space.schedule import Schedule

N_STEPS_PARAM = "n_steps"
FULL = 0  # the branch value of a full step


def timestep_param(i: int) -> str:
    """Optuna param name of step `i`'s timestep (0-based `i`)."""
    return f"step_{i}_t"


def step_branch_param(i: int) -> str:
    """Optuna param name of step `i`'s branch in the hybrid space (0 = full)."""
    return f"step_{i}_branch"


def _step(s: Any) -> PlacedStep:
    if isinstance(s, PlacedStep):
        return s
    if isinstance(s, int) and not isinstance(s, bool):
        return PlacedStep(s)
    return PlacedStep(*s)


def _type_str(branch: int) -> str:
    return PlacedStep(0, branch).label()


@dataclass(frozen=True)
class Placement:
    """A timestep candidate: its steps, first (noisiest) first. Validated by its space."""

    steps: tuple[PlacedStep, ...]

    def __post_init__(self) -> None:
        # Accept lists, (timestep, branch) pairs and bare timesteps (full steps).
        object.__setattr__(self, "steps", tuple(_step(s) for s in self.steps))

    @property
    def k(self) -> int:
        return len(self.steps)

    @property
    def timesteps(self) -> tuple[int, ...]:
        return tuple(s.timestep for s in self.steps)

    @property
    def branches(self) -> tuple[int, ...]:
        """Branch of each step (0: full)."""
        return tuple(s.branch for s in self.steps)

    @property
    def nfe(self) -> int:
        """Number of U-Net calls: every placed step is one."""
        return len(self.steps)

    def __str__(self) -> str:
        # "999F 950P2 ...": unique per candidate, it is also the duplicate key (`candidate_key`).
        return " ".join(map(str, self.steps))


@dataclass(frozen=True)
class StepMutation:
    """One applied change, recorded so a child can be explained against its parent."""

    index: int  # position of the step in the candidate when the change was made
    mode: str  # "move" | "heavier" | "lighter" | "fill"
    dimension: str  # "timestep" | "type" | "n_steps"
    old: int
    new: int
    timestep: int | None = None  # the timestep added or removed by an n_steps change
    branch: int | None = None  # the added step's branch (a fill)

    def __str__(self) -> str:
        if self.dimension == "n_steps":
            sign = "+" if self.new > self.old else "-"
            added = self.timestep if self.branch is None else PlacedStep(self.timestep, self.branch)
            return f"K {self.old}->{self.new} ({sign}{added})"
        if self.dimension == "type":
            return f"step {self.index} type {_type_str(self.old)}->{_type_str(self.new)}"
        return f"step {self.index} t {self.old}->{self.new}"


def _spaced(k: int, train_timesteps: int, spacing: str, offset: int) -> tuple[int, ...]:

    return tuple(int(t) for t in spaced_timesteps(k, train_timesteps, spacing, offset))


@dataclass(frozen=True)
class TimestepSpace:
    """Choices for the step count `K` and (hybrid) the partial-step branches.

    `t_ref`: the teacher's step count (avg MACs are divided by it); `train_timesteps`: the
    model's `T`; `offset`: the scheduler's `steps_offset`, for the DDIM baselines.
    """

    steps: tuple[int, ...]
    branches: tuple[int, ...] = ()
    t_ref: int = 100
    train_timesteps: int = 1000
    offset: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", parse_choices("step count K", self.steps))
        branches = tuple(self.branches)
        if branches:
            branches = parse_choices("branch", branches)
        object.__setattr__(self, "branches", branches)
        for name in ("t_ref", "train_timesteps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FlexoptError(f"{name} {v!r} is invalid; allowed: an integer >= 1")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise FlexoptError(f"offset {self.offset!r} is invalid; allowed: an integer >= 0")
        if self.steps[-1] > self.train_timesteps:
            raise FlexoptError(
                f"step count K {self.steps[-1]} exceeds the model's {self.train_timesteps} "
                f"training timesteps; allowed: 1..{self.train_timesteps}"
            )

    # ----------------------------------------------------------------------------- shape
    @property
    def kind(self) -> str:
        return "hybrid" if self.branches else "timesteps"

    @property
    def sizes(self) -> tuple[int, ...]:
        """The candidate-size choices (here `K`), what the sampler draws a size from."""
        return self.steps

    @property
    def types(self) -> tuple[int, ...]:
        """Step types, lightest first: partial with each branch, then full (0)."""
        return (*self.branches, FULL)

    @property
    def size(self) -> int:
        """Exact candidate count: Σ_K C(T, K)·(1 + |branches|)^(K-1), a Python int."""
        n = len(self.types)
        return sum(math.comb(self.train_timesteps, k) * n ** (k - 1) for k in self.steps)

    # ------------------------------------------------------------------------ membership
    def check(self, candidate: Placement) -> None:
        """Raise `FlexoptError` if `candidate` is not in this space."""
        if candidate.k not in self.steps:
            raise FlexoptError(
                f"candidate has {candidate.k} steps; allowed: {_fmt(self.steps)}"
            )
        prev = self.train_timesteps
        for i, s in enumerate(candidate.steps):
            t = s.timestep
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.train_timesteps:
                raise FlexoptError(
                    f"step {i} timestep {t!r} is out of range; allowed: integers "
                    f"0..{self.train_timesteps - 1}"
                )
            if t >= prev:
                raise FlexoptError(
                    f"step {i} timestep {t} is not below the previous step's {prev}; "
                    "allowed: strictly decreasing timesteps"
                )
            prev = t
            if s.branch not in self.types:
                allowed = "0 (full) or " + _fmt(self.branches) if self.branches else "0 (full)"
                raise FlexoptError(f"step {i} branch {s.branch!r} is not a choice; "
                                   f"allowed: {allowed}")
        if candidate.steps[0].branch != FULL:
            raise FlexoptError(
                f"step 0 branch {candidate.steps[0].branch} is partial; allowed: 0 (the first "
                "step must be full: a partial step reuses the features of the last full step)"
            )

    def contains(self, candidate: Placement) -> bool:
        try:
            self.check(candidate)
        except FlexoptError:
            return False
        return True

    def canonical(self, candidate: Placement) -> Placement:
        """Identity: two different placements never run the same steps."""
        return candidate

    def lightest(self) -> Placement:
        """The cheapest candidate: fewest steps, all but the first partial with the smallest
        branch (its timesteps: uniform spacing; timesteps do not change the cost)."""
        k = self.steps[0]
        b = self.types[0]
        ts = [i * (self.train_timesteps // k) for i in range(k - 1, -1, -1)]
        return Placement(tuple(PlacedStep(t, FULL if i == 0 else b) for i, t in enumerate(ts)))

    # -------------------------------------------------------------------------- sampling
    def sample(self, rng: random.Random, size: int | None = None) -> Placement:
        """A candidate drawn uniformly from the whole space (exact, via a big-int draw), or
        from its candidates with `size` steps."""
        if size is None:
            n = len(self.types)
            index = rng.randrange(self.size)
            for k in self.steps:
                block = math.comb(self.train_timesteps, k) * n ** (k - 1)
                if index < block:
                    size = k
                    break
                index -= block
        elif size not in self.steps:
            raise FlexoptError(f"step count K {size} is not a choice; allowed: "
                               f"{_fmt(self.steps)}")
        ts = sorted(rng.sample(range(self.train_timesteps), size), reverse=True)
        return Placement(tuple(
            PlacedStep(t, FULL if i == 0 else rng.choice(self.types)) for i, t in enumerate(ts)
        ))

    def baselines(self) -> dict[str, Placement]:
        """DDIM with uniform ("leading": the fewer-step teacher) and quadratic spacing, all full,
        for each `K` choice, by name, lightest first per family (the sampler's seeds take the
        heaviest feasible)."""
        out: dict[str, Placement] = {}
        # named as `flexopt.search.baselines.baseline_schedules` names them (the uniform one is the
        # fewer-step teacher), so a baseline enqueued by the search and a seed are one trial
        for family, spacing in (("teacher", "uniform"), ("ddim-quad", "quadratic")):
            for k in self.steps:
                try:
                    cand = Placement(_spaced(k, self.train_timesteps, spacing, self.offset))
                except (FlexoptError, ValueError):
                    continue
                if self.contains(cand):
                    out[f"{family} T={k}"] = cand
        return out

    # -------------------------------------------------------------------------- mutation
    def mutate(
        self,
        candidate: Placement,
        rng: random.Random,
        n_mutations: int = 1,
        modes: Sequence[str] = ("heavier", "lighter"),
        prob: float = 0.1,
    ) -> tuple[Placement, list[StepMutation]]:
        """A different candidate of this space, and what changed.

        Both modes (the search's mutation, AutoDiffusion's): each timestep moves with
        probability `prob` to a random value strictly between its neighbours; with `prob` per
        step (hybrid) a step's type changes and with `prob` `K` changes to a neighbouring choice
        (timesteps added at random free values, or removed); at least `n_mutations` changes.
        `("lighter",)` / `("heavier",)`: `n_mutations` changes that only make the candidate
        cheaper / dearer (fewer/more steps, a lighter/heavier step type); the sampler uses them
        to walk a candidate to a cost.
        """
        self.check(candidate)
        if n_mutations < 1:
            raise FlexoptError(f"n_mutations {n_mutations} is invalid; allowed: an integer >= 1")
        if not 0.0 <= prob <= 1.0:
            raise FlexoptError(f"mutation probability {prob} is invalid; allowed: 0..1")
        modes = tuple(modes)
        if modes in (("lighter",), ("heavier",)):
            return self._directed(candidate, rng, n_mutations, modes[0])
        fallback: tuple[Placement, list[StepMutation]] | None = None
        for _ in range(100):
            steps = list(candidate.steps)
            record: list[StepMutation] = []
            ops = self._general_ops(steps)
            if not ops:
                break
            chosen = [op for op in ops if rng.random() < prob]
            if len(chosen) < n_mutations:  # at least n_mutations changes
                rest = [op for op in ops if op not in chosen]
                chosen += rng.sample(rest, min(len(rest), n_mutations - len(chosen)))
            # moves and type changes first: a change of K shifts the positions after it
            for op in sorted(chosen, key=lambda op: op[0] == "n_steps"):
                self._apply(steps, op, rng, record)
            child = Placement(tuple(steps))
            if record and child != candidate:
                if len(record) >= n_mutations:
                    return child, record
                fallback = fallback or (child, record)  # an earlier move took a later's room
        if fallback is not None:
            return fallback
        raise FlexoptError("the search space has a single candidate; nothing to mutate")

    def _general_ops(self, steps: list[PlacedStep]) -> list[tuple[str, int]]:
        """The possible changes of a candidate: (kind, step index)."""
        ops: list[tuple[str, int]] = []
        bounds = [self.train_timesteps, *(s.timestep for s in steps), -1]
        for i in range(len(steps)):
            if bounds[i] - bounds[i + 2] > 2:  # a free value strictly between the neighbours
                ops.append(("move", i))
            if i > 0 and len(self.types) > 1:
                ops.append(("type", i))
        if len(self.steps) > 1:
            ops.append(("n_steps", -1))
        return ops

    def _apply(self, steps: list[PlacedStep], op: tuple[str, int], rng: random.Random,
               record: list[StepMutation]) -> None:
        kind, i = op
        if kind == "move":
            hi = steps[i - 1].timestep if i > 0 else self.train_timesteps
            lo = steps[i + 1].timestep if i + 1 < len(steps) else -1
            old = steps[i].timestep
            if hi - lo < 3:  # no free value: an earlier move took the room
                return
            new = rng.randrange(lo + 1, hi - 1)
            new += new >= old
            steps[i] = PlacedStep(new, steps[i].branch)
            record.append(StepMutation(i, "move", "timestep", old, new))
        elif kind == "type":
            old = steps[i].branch
            new = rng.choice([b for b in self.types if b != old])
            steps[i] = PlacedStep(steps[i].timestep, new)
            record.append(StepMutation(i, "move", "type", old, new))
        else:
            j = self.steps.index(len(steps))
            options = [k for k in (self.steps[j - 1] if j else None,
                                   self.steps[j + 1] if j + 1 < len(self.steps) else None)
                       if k is not None]
            new_k = rng.choice(options)
            self._resize(steps, new_k, rng, record, "heavier" if new_k > len(steps) else "lighter",
                         random_types=True)

    def _resize(self, steps: list[PlacedStep], new_k: int, rng: random.Random,
                record: list[StepMutation], mode: str, random_types: bool) -> None:
        """Add (full, or random types) or remove random timesteps until there are `new_k`."""
        old_k = len(steps)
        if new_k > old_k:
            used = {s.timestep for s in steps}
            free = [t for t in range(self.train_timesteps) if t not in used]
            for t in rng.sample(free, new_k - old_k):
                ts = [-s.timestep for s in steps]
                pos = bisect.bisect(ts, -t)
                b = rng.choice(self.types) if random_types and pos > 0 else FULL
                steps.insert(pos, PlacedStep(t, b))
                record.append(StepMutation(pos, mode, "n_steps", old_k, new_k, t))
        else:
            for _ in range(old_k - new_k):
                pos = rng.randrange(len(steps))
                gone = steps.pop(pos)
                if pos == 0 and steps[0].branch != FULL:  # the new first step must be full
                    steps[0] = PlacedStep(steps[0].timestep, FULL)
                record.append(StepMutation(pos, mode, "n_steps", old_k, new_k, gone.timestep))

    def _directed(self, candidate: Placement, rng: random.Random, n_mutations: int,
                  mode: str) -> tuple[Placement, list[StepMutation]]:
        """Changes that only lighten (or only weigh down) the candidate: `K` to the next
        smaller (larger) choice, or one step's type to the next lighter (heavier) one."""
        steps = list(candidate.steps)
        record: list[StepMutation] = []
        delta = -1 if mode == "lighter" else 1
        for _ in range(n_mutations):
            j = self.steps.index(len(steps)) + delta
            ops: list[tuple[str, int]] = []
            if 0 <= j < len(self.steps):
                ops.append(("n_steps", self.steps[j]))
            for i in range(1, len(steps)):
                t = self.types.index(steps[i].branch) + delta
                if 0 <= t < len(self.types):
                    ops.append(("type", i))
            if not ops:
                break
            kind, arg = rng.choice(ops)
            if kind == "n_steps":
                self._resize(steps, arg, rng, record, mode, random_types=False)
            else:
                old = steps[arg].branch
                new = self.types[self.types.index(old) + delta]
                steps[arg] = PlacedStep(steps[arg].timestep, new)
                record.append(StepMutation(arg, mode, "type", old, new))
        if not record:
            which = "lightest" if mode == "lighter" else "heaviest"
            raise FlexoptError(f"the candidate is already the {which} of its search space")
        return Placement(tuple(steps)), record

    def fill_gaps(self, candidate: Placement) -> list[int]:
        """Where `fill` can add a step: the gaps `i` (between step `i` and step `i + 1`, the last
        one down to t = 0) with a free timestep strictly inside, noisiest first."""
        bounds = [*candidate.timesteps, -1]
        return [i for i in range(candidate.k) if bounds[i] - bounds[i + 1] >= 2]

    def fill(self, candidate: Placement, branch: int,
             gaps: Sequence[int]) -> tuple[Placement, list[StepMutation]]:
        """`candidate` with a partial step of `branch` at the midpoint of each of `gaps` (see
        `fill_gaps`), and what changed.

        The hybrid's way to spend a parent's room under the budget on many partial steps at
        once: one added step changes rFID by less than a search's few images resolve, several
        in a row do not (docs/search-quality.md, "Why, measured").
        """
        self.check(candidate)
        if branch not in self.branches:
            raise FlexoptError(f"fill branch {branch!r} is not a partial-step choice; allowed: "
                               f"{_fmt(self.branches) or 'none (not a hybrid space)'}")
        gaps = list(gaps)
        k = candidate.k + len(gaps)
        if not gaps or k not in self.steps:
            raise FlexoptError(f"filling {len(gaps)} gaps makes {k} steps; allowed: 1 or more "
                               f"gaps, up to {self.steps[-1]} steps")
        room = self.fill_gaps(candidate)
        if len(set(gaps)) != len(gaps) or any(g not in room for g in gaps):
            raise FlexoptError(f"fill gaps {_fmt(gaps)} are invalid; allowed: distinct gaps "
                               f"with a free timestep, {_fmt(room)}")
        bounds = [*candidate.timesteps, -1]
        added = {(bounds[g] + bounds[g + 1]) // 2 for g in gaps}
        steps = sorted((*candidate.steps, *(PlacedStep(t, branch) for t in added)),
                       key=lambda s: -s.timestep)
        record = [StepMutation(i, "fill", "n_steps", candidate.k, k, s.timestep, branch)
                  for i, s in enumerate(steps) if s.timestep in added]
        return Placement(tuple(steps)), record

    def crossover(self, a: Placement, b: Placement, rng: random.Random) -> Placement:
        """AutoDiffusion's crossover: `K` of one parent (at random), the timesteps a random
        `K`-subset of both parents' timesteps; each step keeps the type of the parent it came
        from (a random one's where both have it) and the first step is made full."""
        self.check(a)
        self.check(b)
        k = rng.choice((a.k, b.k))
        pool: dict[int, list[int]] = {}
        for s in (*a.steps, *b.steps):
            pool.setdefault(s.timestep, []).append(s.branch)
        ts = sorted(rng.sample(sorted(pool), k), reverse=True)
        steps = [PlacedStep(t, rng.choice(pool[t])) for t in ts]
        steps[0] = PlacedStep(steps[0].timestep, FULL)
        return Placement(tuple(steps))

    # ---------------------------------------------------------------------- Optuna params
    def distributions(self) -> dict[str, BaseDistribution]:
        """Every param a trial of this space may have, each with a fixed distribution."""
        dists: dict[str, BaseDistribution] = {
            N_STEPS_PARAM: CategoricalDistribution(list(self.steps))
        }
        for i in range(self.steps[-1]):
            dists[timestep_param(i)] = IntDistribution(0, self.train_timesteps - 1)
            if self.branches:
                dists[step_branch_param(i)] = CategoricalDistribution([FULL, *self.branches])
        return dists

    def suggest(self, trial: Any) -> Placement:
        """Ask an Optuna trial for a candidate (`step_{i}_*` exist only for `i < n_steps`)."""
        dists = self.distributions()
        k = trial.suggest_categorical(N_STEPS_PARAM, dists[N_STEPS_PARAM].choices)
        params: dict[str, Any] = {N_STEPS_PARAM: k}
        for i in range(k):
            params[timestep_param(i)] = trial.suggest_int(
                timestep_param(i), 0, self.train_timesteps - 1)
            if self.branches:
                name = step_branch_param(i)
                params[name] = trial.suggest_categorical(name, dists[name].choices)
        return self.from_params(params)

    def to_params(self, candidate: Placement) -> dict[str, int]:
        """Optuna trial params: `n_steps`, `step_{i}_t` and (hybrid) `step_{i}_branch`."""
        self.check(candidate)
        params = {N_STEPS_PARAM: candidate.k}
        for i, s in enumerate(candidate.steps):
            params[timestep_param(i)] = s.timestep
            if self.branches:
                params[step_branch_param(i)] = s.branch
        return params

    def from_params(self, params: Mapping[str, Any]) -> Placement:
        """Inverse of `to_params`; raises `FlexoptError` on a missing or out-of-space value."""
        if N_STEPS_PARAM not in params:
            raise FlexoptError(f"trial params lack {N_STEPS_PARAM!r}")
        k = _int(N_STEPS_PARAM, params[N_STEPS_PARAM])
        if k not in self.steps:
            raise FlexoptError(f"n_steps {k!r} is not a choice; allowed: {_fmt(self.steps)}")
        steps = []
        for i in range(k):
            try:
                t = params[timestep_param(i)]
                b = params[step_branch_param(i)] if self.branches else FULL
            except KeyError as err:
                raise FlexoptError(f"trial params lack {err.args[0]!r} for n_steps={k}") from None
            steps.append(PlacedStep(_int(timestep_param(i), t), _int(step_branch_param(i), b)))
        candidate = Placement(tuple(steps))
        self.check(candidate)
        return candidate

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (what `flexopt space` prints)."""
        return {
            "kind": self.kind,
            "steps": list(self.steps),
            "branches": list(self.branches),
            "t_ref": self.t_ref,
            "train_timesteps": self.train_timesteps,
            "offset": self.offset,
            "size": self.size,
        }

    # -------------------------------------------------------------------------- schedules
    def schedule(self, candidate: Placement, sampler: str = "ddim", **meta: Any) -> Schedule:
        """The runnable schedule of a candidate (`flexopt.schedule/2`)."""
        from flexopt.space.schedule import Schedule

        self.check(candidate)
        return Schedule.placed(sampler, self.t_ref, candidate.steps, **meta)

    def represent(self, schedule: Schedule) -> Placement | None:
        """The candidate that runs exactly `schedule`'s steps, if this space has one (a
        placed schedule with this `t_ref` whose steps are in the space)."""
        steps = getattr(schedule, "steps", None)
        if steps is None or schedule.t_ref != self.t_ref:
            return None
        cand = Placement(tuple(steps))
        return cand if self.contains(cand) else None


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise FlexoptError(f"{name} {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise FlexoptError(f"{name} {value!r} is not an integer")


def _fmt(values: Iterable[int]) -> str:
    return ",".join(map(str, values))


__all__ = ["Placement", "StepMutation", "TimestepSpace"]

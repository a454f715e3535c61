"""The segment-wise search space of Flexiffusion (SPEC §1, §2).

A candidate cuts the denoising schedule into `N` segments of `L` base-grid slots each
(`L` = the largest interval choice). Segment `i` with `(branch b, interval k)` runs one full step,
`k - 1` partial steps with branch `b`, and `L - k` null steps. This module holds the space: its
exact size, uniform sampling, the paper's segment-wise mutation (Alg. 2) and the encoding to
Optuna trial params; the value types are in `flexopt.space.steps`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import CategoricalDistribution

from flexopt.errors import FlexoptError
from flexopt.space.schedule import Schedule
from flexopt.space.steps import Candidate, Segment

N_SEGMENTS_PARAM = "n_segments"
GRID_TAG = " (grid "  # in "teacher T=16 (grid 48)": the fewer-step teacher on this space's grid


def branch_param(i: int) -> str:
    """Optuna param name of segment `i`'s branch (0-based `i`)."""
    return f"seg_{i}_branch"


def interval_param(i: int) -> str:
    """Optuna param name of segment `i`'s interval (0-based `i`)."""
    return f"seg_{i}_interval"


@dataclass(frozen=True)
class Mutation:
    """One applied mutation, recorded so a child can be explained against its parent."""

    segment: int  # 0-based index of the segment in the parent
    mode: str  # "heavier" | "lighter"
    dimension: str  # "branch" | "interval" | "n_segments"
    old: int
    new: int

    def __str__(self) -> str:
        if self.dimension == "n_segments":
            verb = "split" if self.new > self.old else "merge"
            return f"seg {self.segment} {verb} (N {self.old}->{self.new})"
        return f"seg {self.segment} {self.dimension} {self.old}->{self.new}"


def parse_choices(name: str, values: Iterable[Any], minimum: int = 1) -> tuple[int, ...]:
    """Validate a choice list: non-empty, integers ≥ `minimum`, strictly increasing."""
    vals = list(values)
    if not vals:
        raise FlexoptError(f"{name} choices are empty; give at least one integer >= {minimum}")
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, int):
            try:
                iv = int(str(v).strip())
            except ValueError:
                raise FlexoptError(
                    f"{name} choice {v!r} is not an integer; allowed: integers >= {minimum}"
                ) from None
        else:
            iv = v
        if iv < minimum:
            raise FlexoptError(
                f"{name} choice {iv} is below {minimum}; allowed: integers >= {minimum}"
            )
        out.append(iv)
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise FlexoptError(
            f"{name} choices {','.join(map(str, out))} must be sorted ascending without repeats"
        )
    return tuple(out)


def _neighbour(choices: Sequence[int], value: int, step: int) -> int | None:
    """The next larger (`step=+1`) or smaller (`-1`) choice than `value`, if any."""
    i = choices.index(value) + step
    return choices[i] if 0 <= i < len(choices) else None


@dataclass(frozen=True)
class SearchSpace:
    """Choices for N-segment, branch and interval, plus the teacher's step count `t_ref`."""

    segments: tuple[int, ...]
    branches: tuple[int, ...]
    intervals: tuple[int, ...]
    t_ref: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", parse_choices("N-segment", self.segments))
        object.__setattr__(self, "branches", parse_choices("branch", self.branches))
        object.__setattr__(self, "intervals", parse_choices("interval", self.intervals))
        if isinstance(self.t_ref, bool) or not isinstance(self.t_ref, int) or self.t_ref < 1:
            raise FlexoptError(f"t_ref {self.t_ref!r} is invalid; allowed: an integer >= 1")

    # ----------------------------------------------------------------------------- shape
    @property
    def kind(self) -> str:
        return "segments"

    @property
    def sizes(self) -> tuple[int, ...]:
        """The candidate-size choices (here N-segment), what the sampler draws a size from;
        `TimestepSpace.sizes` are its step counts."""
        return self.segments

    @property
    def segment_length(self) -> int:
        """`L`: the largest interval choice; every segment spans `L` base-grid slots."""
        return self.intervals[-1]

    @property
    def grid_lengths(self) -> dict[int, int]:
        """Base-grid length `N · L` for each N-segment choice."""
        return {n: n * self.segment_length for n in self.segments}

    @property
    def per_segment(self) -> int:
        """Settings one segment can take."""
        return len(self.branches) * len(self.intervals)

    @property
    def size(self) -> int:
        """Exact candidate count: Σ_N (|branches| · |intervals|)^N, a Python int (no overflow)."""
        return sum(self.per_segment**n for n in self.segments)

    # ------------------------------------------------------------------------ membership
    def check(self, candidate: Candidate) -> None:
        """Raise `FlexoptError` if `candidate` is not in this space."""
        if candidate.n_segments not in self.segments:
            raise FlexoptError(
                f"candidate has {candidate.n_segments} segments; allowed: {_fmt(self.segments)}"
            )
        for i, s in enumerate(candidate.segments):
            if s.branch not in self.branches:
                raise FlexoptError(
                    f"segment {i} branch {s.branch} is not a choice; allowed: {_fmt(self.branches)}"
                )
            if s.interval not in self.intervals:
                raise FlexoptError(
                    f"segment {i} interval {s.interval} is not a choice; "
                    f"allowed: {_fmt(self.intervals)}"
                )

    def contains(self, candidate: Candidate) -> bool:
        try:
            self.check(candidate)
        except FlexoptError:
            return False
        return True

    def canonical(self, candidate: Candidate) -> Candidate:
        """The same schedule with the smallest branch wherever the branch has no effect.

        A segment of interval 1 has no partial step, so its branch changes nothing; candidates
        that differ only there run the same steps and must be scored once.
        """
        b0 = self.branches[0]
        return Candidate(
            tuple(Segment(b0, 1) if s.interval == 1 else s for s in candidate.segments)
        )

    def lightest(self) -> Candidate:
        """The cheapest candidate: fewest segments, smallest branch and interval everywhere."""
        return Candidate((Segment(self.branches[0], self.intervals[0]),) * self.segments[0])

    # -------------------------------------------------------------------------- sampling
    def candidate_at(self, index: int) -> Candidate:
        """The `index`-th candidate (0 ≤ index < size) in a fixed enumeration of the space."""
        if not 0 <= index < self.size:
            raise FlexoptError(f"candidate index {index} outside 0..{self.size - 1}")
        for n in self.segments:
            block = self.per_segment**n
            if index < block:
                segs = []
                for _ in range(n):
                    index, digit = divmod(index, self.per_segment)
                    bi, ii = divmod(digit, len(self.intervals))
                    segs.append(Segment(self.branches[bi], self.intervals[ii]))
                return Candidate(tuple(segs))
            index -= block
        raise AssertionError("unreachable")

    def sample(self, rng: random.Random, n_segments: int | None = None) -> Candidate:
        """A candidate drawn uniformly from the whole space (exact, via a big-int index), or
        from its candidates with `n_segments` segments."""
        if n_segments is None:
            return self.candidate_at(rng.randrange(self.size))
        if n_segments not in self.segments:
            raise FlexoptError(f"n_segments {n_segments} is not a choice; allowed: "
                               f"{_fmt(self.segments)}")
        return Candidate(tuple(Segment(rng.choice(self.branches), rng.choice(self.intervals))
                               for _ in range(n_segments)))

    def baselines(self) -> dict[str, Candidate]:
        """The baselines this space can run exactly, by name, lightest first per family.

        A fewer-step teacher is `N` segments of interval 1: `N` full steps on the `N·L` grid.
        DeepCache-uniform with interval `n` and branch `b` is `t_ref / n` segments of `(b, n)`,
        in the space when `n = L` and `t_ref / n` is an N-segment choice.
        """
        b0, L = self.branches[0], self.segment_length
        out = {f"teacher T={n}" + (f"{GRID_TAG}{n * L})" if L > 1 else ""):
               Candidate((Segment(b0, 1),) * n) for n in self.segments
               if self.intervals[0] == 1}  # without interval 1 no candidate is all-full
        if self.t_ref % L == 0 and self.t_ref // L in self.segments and L > 1:
            for b in self.branches:
                out[f"deepcache n={L} b={b}"] = Candidate((Segment(b, L),) * (self.t_ref // L))
        return out

    # -------------------------------------------------------------------------- mutation
    def mutate(
        self,
        candidate: Candidate,
        rng: random.Random,
        n_mutations: int = 1,
        modes: Sequence[str] = ("heavier", "lighter"),
    ) -> tuple[Candidate, list[Mutation]]:
        """The paper's segment-wise mutation (Alg. 2): a different candidate of this space.

        Picks `n_mutations` distinct segments; each becomes heavier or lighter along one of
        branch, interval or N-segment (split into / merge with a neighbour). A direction that is
        already at the end of its choices is replaced by one that is not. Children whose steps
        are the same as the parent's (see `canonical`) are re-drawn. `modes=("lighter",)`
        only makes the candidate cheaper (used to bring a candidate under a budget).
        """
        self.check(candidate)
        if n_mutations < 1:
            raise FlexoptError(f"n_mutations {n_mutations} is invalid; allowed: an integer >= 1")
        parent_key = self.canonical(candidate)
        fallback: tuple[Candidate, list[Mutation]] | None = None
        for _ in range(100):
            child, record = self._mutate_once(candidate, rng, n_mutations, modes)
            if record and self.canonical(child) != parent_key:
                return child, record
            if record and child != candidate and fallback is None:
                fallback = (child, record)
        if fallback is not None:
            return fallback
        if tuple(modes) == ("lighter",):
            raise FlexoptError("the candidate is already the lightest of its search space")
        if tuple(modes) == ("heavier",):
            raise FlexoptError("the candidate is already the heaviest of its search space")
        raise FlexoptError("the search space has a single candidate; nothing to mutate")

    def _mutate_once(
        self, candidate: Candidate, rng: random.Random, n_mutations: int, modes: Sequence[str]
    ) -> tuple[Candidate, list[Mutation]]:
        # Segments carry a stable id so positions can shift under split/merge.
        segs: list[tuple[int, Segment]] = list(enumerate(candidate.segments))
        # Draw among segments that can move in an allowed mode, so a rare legal move is found.
        movable = [
            i for i, s in enumerate(candidate.segments)
            if any(m in modes for m, _ in self._options(s, len(segs)))
        ]
        chosen = rng.sample(movable, min(n_mutations, len(movable)))
        record: list[Mutation] = []
        n_step = 0  # direction of an N-segment move already made: the opposite would undo it
        for seg_id in chosen:
            pos = next((p for p, (sid, _) in enumerate(segs) if sid == seg_id), None)
            if pos is None:  # merged away by an earlier mutation
                continue
            seg = segs[pos][1]
            options = {
                (mode, dim)
                for mode, dim in self._options(seg, len(segs))
                if mode in modes
                and (dim != "n_segments" or n_step != (-1 if mode == "heavier" else 1))
            }
            if not options:
                continue
            mode = rng.choice(list(modes))
            dim = rng.choice(["branch", "interval", "n_segments"])
            if (mode, dim) not in options:
                mode, dim = rng.choice(sorted(options))
            step = 1 if mode == "heavier" else -1
            if dim == "branch":
                new = _neighbour(self.branches, seg.branch, step)
                segs[pos] = (seg_id, Segment(new, seg.interval))
                record.append(Mutation(seg_id, mode, dim, seg.branch, new))
            elif dim == "interval":
                new = _neighbour(self.intervals, seg.interval, step)
                segs[pos] = (seg_id, Segment(seg.branch, new))
                record.append(Mutation(seg_id, mode, dim, seg.interval, new))
            else:
                n_old, n_step = len(segs), step
                n_new = _neighbour(self.segments, n_old, step)
                if step > 0:  # split: the segment becomes n_new - n_old + 1 copies
                    for _ in range(n_new - n_old):
                        segs.insert(pos + 1, (-1, seg))
                else:  # merge: absorb neighbours (right first, then left), keep this setting
                    for _ in range(n_old - n_new):
                        pos = next(p for p, (sid, _) in enumerate(segs) if sid == seg_id)
                        j = pos + 1 if pos + 1 < len(segs) and rng.random() < 0.5 else pos - 1
                        if j < 0:
                            j = pos + 1
                        del segs[j]
                record.append(Mutation(seg_id, mode, dim, n_old, n_new))
        return Candidate(tuple(s for _, s in segs)), record

    def _options(self, seg: Segment, n: int) -> set[tuple[str, str]]:
        """The (mode, dimension) moves that stay inside the choices for this segment."""
        opts: set[tuple[str, str]] = set()
        for mode, step in (("heavier", 1), ("lighter", -1)):
            # A branch change on an interval-1 segment runs the same steps: not a real move.
            if seg.interval > 1 and _neighbour(self.branches, seg.branch, step) is not None:
                opts.add((mode, "branch"))
            if _neighbour(self.intervals, seg.interval, step) is not None:
                opts.add((mode, "interval"))
            if _neighbour(self.segments, n, step) is not None:
                opts.add((mode, "n_segments"))
        if not opts and len(self.branches) > 1:  # only a no-op branch move is left
            for mode, step in (("heavier", 1), ("lighter", -1)):
                if _neighbour(self.branches, seg.branch, step) is not None:
                    opts.add((mode, "branch"))
        return opts

    # ---------------------------------------------------------------------- Optuna params
    def distributions(self) -> dict[str, CategoricalDistribution]:
        """Every param a trial of this space may have, with a fixed choice list each."""
        dists: dict[str, CategoricalDistribution] = {
            N_SEGMENTS_PARAM: CategoricalDistribution(list(self.segments))
        }
        for i in range(self.segments[-1]):
            dists[branch_param(i)] = CategoricalDistribution(list(self.branches))
            dists[interval_param(i)] = CategoricalDistribution(list(self.intervals))
        return dists

    def suggest(self, trial: Any) -> Candidate:
        """Ask an Optuna trial for a candidate, one categorical param at a time (the dynamic
        `seg_{i}_*` params exist only for `i < n_segments`)."""
        dists = self.distributions()
        n = trial.suggest_categorical(N_SEGMENTS_PARAM, dists[N_SEGMENTS_PARAM].choices)
        params: dict[str, Any] = {N_SEGMENTS_PARAM: n}
        for i in range(n):
            for name in (branch_param(i), interval_param(i)):
                params[name] = trial.suggest_categorical(name, dists[name].choices)
        return self.from_params(params)

    def to_params(self, candidate: Candidate) -> dict[str, int]:
        """Optuna trial params: `n_segments`, `seg_{i}_branch`, `seg_{i}_interval`."""
        self.check(candidate)
        params = {N_SEGMENTS_PARAM: candidate.n_segments}
        for i, s in enumerate(candidate.segments):
            params[branch_param(i)] = s.branch
            params[interval_param(i)] = s.interval
        return params

    def from_params(self, params: Mapping[str, Any]) -> Candidate:
        """Inverse of `to_params`; raises `FlexoptError` on a missing or out-of-space value."""
        if N_SEGMENTS_PARAM not in params:
            raise FlexoptError(f"trial params lack {N_SEGMENTS_PARAM!r}")
        n = int(params[N_SEGMENTS_PARAM])
        segs = []
        for i in range(n):
            try:
                segs.append(Segment(int(params[branch_param(i)]), int(params[interval_param(i)])))
            except KeyError as err:
                raise FlexoptError(
                    f"trial params lack {err.args[0]!r} for n_segments={n}"
                ) from None
        candidate = Candidate(tuple(segs))
        self.check(candidate)
        return candidate

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (what `flexopt space` prints)."""
        return {
            "segments": list(self.segments),
            "branches": list(self.branches),
            "intervals": list(self.intervals),
            "t_ref": self.t_ref,
            "segment_length": self.segment_length,
            "grid_length": self.grid_lengths,
            "size": self.size,
        }


    # -------------------------------------------------------------------------- schedules
    def schedule(self, candidate: Candidate, sampler: str = "ddim", **meta: Any) -> Schedule:
        """The runnable schedule of a candidate."""
        return Schedule.from_candidate(candidate, self, sampler, **meta)

    def represent(self, schedule: Schedule) -> Candidate | None:
        """The candidate of this space that runs exactly `schedule`'s steps, if there is one."""
        if getattr(schedule, "steps", None) is not None:  # a placed (schedule/2) schedule
            return None
        if schedule.segment_length != self.segment_length or schedule.t_ref != self.t_ref:
            return None
        cand = schedule.candidate
        return cand if self.contains(cand) else None


def _fmt(values: Sequence[int]) -> str:
    return ",".join(map(str, values))

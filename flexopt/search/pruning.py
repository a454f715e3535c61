"""Multi-fidelity search: score a candidate on a growing number of images and stop the hopeless.

A candidate's rFID on its first 8 or 16 images already ranks it well against the others
(docs/search-quality.md measures how well), so most candidates that end far behind can be stopped
there. Each rung is an image count; after it the objective reports the metric of the first n
images against the teacher's first n (`trial.report(value, step=n)`) and asks Optuna's pruner
(`trial.should_prune()`). The value at a rung is biased upwards at small n, but every candidate
at that rung carries the same bias (same n, same teacher images, same noises), and the pruners
only compare trials at the same step, so it ranks them fairly.

Pruned trials are PRUNED with their intermediate values (optuna-dashboard plots them). The
evolutionary sampler never takes one as a parent and never proposes its candidate again.
Baselines report their rungs too (they fill the rungs' statistics) but are never pruned.

Optuna's median and halving pruners compare a candidate with *every* earlier one at its rung. In
an evolutionary search the earlier ones are the worse ones (the first, random population and the
baselines), so they stop almost no child (docs/search-quality.md). `PopulationPruner` compares a
child with what it must beat to matter: its best parent, on the same images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from flexopt.errors import FlexoptError

PRUNERS = ("none", "population", "median", "halving", "hyperband")
# docs/search-quality.md, "Pruning and samplers at equal wall-clock": on the demo's 6-minute
# searches the population pruner evaluated 2.0-2.8x the candidates of no pruning (3 search seeds)
# and found better winners on unseen seeds; halving and median added 4-8 %, within the noise.
DEFAULT_PRUNER = "population"
MIN_RUNG = 8  # the first rung: rFID of 8 images, the fewest the default rungs use
REDUCTION = 2  # each rung doubles the images; halving keeps the best half


def default_rungs(num_images: int, pruner: str | None = None) -> tuple[int, ...]:
    """8, 16, 32, … below `num_images` (none when `num_images` <= 8). For the `population`
    pruner one rung, 8: a child that passes makes the rest of its images in one piece (batches
    of 8 cost more per image than one batch of the rest)."""
    if pruner == "population":
        return (MIN_RUNG,) if num_images > MIN_RUNG else ()
    out, n = [], MIN_RUNG
    while n < num_images:
        out.append(n)
        n *= REDUCTION
    return tuple(out)


def check_rungs(rungs: Sequence[int], num_images: int) -> tuple[int, ...]:
    """Rung image counts: increasing integers >= 2 and below `num_images` (a covariance needs
    two images; the last rung is the whole set, implied)."""
    out = tuple(int(n) for n in rungs)
    if any(n < 2 or n >= num_images for n in out) or list(out) != sorted(set(out)):
        raise FlexoptError(f"rungs {','.join(map(str, out))} are invalid for {num_images} images "
                           f"per candidate; allowed: increasing image counts from 2 to "
                           f"{num_images - 1}")
    return out


def parse_rungs(value: str | Sequence[int] | None, num_images: int,
                pruner: str | None = None) -> tuple[int, ...]:
    """Rung image counts from "8,16,32" or a list; None or "auto": `default_rungs` (for
    `pruner`)."""
    if value is None or value == "auto":
        return default_rungs(num_images, pruner)
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise FlexoptError(f"rungs {value!r} are invalid; allowed: image counts like "
                               "8,16,32, or auto") from None
    return check_rungs(value, num_images)


def check_pruner(name: str) -> str:
    if name not in PRUNERS:
        raise FlexoptError(f"pruner {name!r} is invalid; allowed: {', '.join(PRUNERS)}")
    return name


class PopulationPruner(optuna.pruners.BasePruner):
    """Stop a candidate at a rung when it is worse there than what it must beat to matter.

    - A child (user attr `parent`, or `parents` for a crossover) must be no worse than its best
      parent at the rung: otherwise that parent already scores better, so the child cannot be
      the search's winner. The comparison is paired (the same noises, the same teacher images),
      so it is sharper than one against other candidates. (Requiring a child to be among the
      best `size` as well stopped fewer candidates per minute in the one search it was tried
      on: docs/search-quality.md.)
    - A candidate without parents (the random first population, a random restart) must be among
      the best `size` complete candidates at the rung; nothing is stopped until `size` have
      completed. Complete feasible trials count, baselines among them; pruned ones do not, nor do
      candidates over a constraint (an over-budget baseline). A parent that is not among them
      (pruned, infeasible): the child is judged as one without parents.

    Why not Optuna's median or halving pruner: they compare a candidate with every earlier one at
    its rung, and in an evolutionary search the earlier ones are the worse ones (the random
    population, the baselines), so they stop almost no child (docs/search-quality.md). Ties go on.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise FlexoptError(f"population pruner size {size} is invalid; allowed: >= 1")
        self.size = size

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
        done = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if step in t.intermediate_values and not math.isnan(t.intermediate_values[step])
                and all(c <= 0 for c in t.constraints.values())}
        parents = [done[n] for n in _parents(trial) if n in done]
        if parents:
            return sign * value > min(sign * t.intermediate_values[step] for t in parents)
        others = sorted(sign * t.intermediate_values[step] for t in done.values())
        return len(others) >= self.size and sign * value > others[self.size - 1]


def _parents(trial: FrozenTrial) -> list[int]:
    """The trial numbers of a child's parents (the evolutionary sampler's user attrs)."""
    attrs = trial.user_attrs
    if "parents" in attrs:
        return [int(n) for n in attrs["parents"]]
    return [int(attrs["parent"])] if "parent" in attrs else []


def make_pruner(name: str, rungs: Sequence[int], num_images: int,
                population: int = 10) -> optuna.pruners.BasePruner:
    """Optuna's pruner `name` over image-count steps (`none`: `NopPruner`).

    - `population`: `PopulationPruner(population)`: a child goes on only if it is no worse than
      its best parent at the rung; a candidate without parents only if it is among the best
      `population` complete candidates there (the evolution's population size).
    - `median`: stop a candidate whose rung value is worse than the median of the earlier
      candidates at that rung (after 5 candidates have reached it).
    - `halving`: asynchronous successive halving with rungs at `rungs[0]`·2^k images: a
      candidate goes on only if it is in the best half of those that reached its rung.
    - `hyperband`: several halving brackets from `rungs[0]` up to `num_images` images.
    """
    check_pruner(name)
    if name == "none" or not rungs:
        return optuna.pruners.NopPruner()
    if name == "population":
        return PopulationPruner(population)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=rungs[0], reduction_factor=REDUCTION, min_early_stopping_rate=0)
    return optuna.pruners.HyperbandPruner(min_resource=rungs[0], max_resource=num_images,
                                          reduction_factor=REDUCTION)


__all__ = ["DEFAULT_PRUNER", "PRUNERS", "PopulationPruner", "check_pruner", "check_rungs",
           "default_rungs", "make_pruner", "parse_rungs"]

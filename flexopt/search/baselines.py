"""The baselines a search result must beat (SPEC §3), enqueued once into the study.

DeepCache-uniform at each interval, the fewer-step teacher and DDIM-quadratic at each step count:
by default only those under the budget (`feasible`); `all` adds the over-budget ones for the
report's plot. They run in addition to the searched candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna

from flexopt.errors import FlexoptError
from flexopt.search.sampler import KEY_ATTR, candidate_key
from flexopt.search.storage import StudyLock
from flexopt.search.study import SCHEDULE_ATTR
from flexopt.space.schedule import Schedule

if TYPE_CHECKING:
    from flexopt.search.config import Space

BASELINE_MODES = ("feasible", "all", "best", "none")  # the first is the default
BASELINE_INTERVALS = (2, 3, 5, 10)


def baseline_schedules(
    space: Space, sampler: str, full_macs: float, avg_macs: Callable[[Schedule], float],
    max_avg_macs: float | None, mode: str = "feasible", train_timesteps: int | None = None,
    offset: int = 0,
) -> list[tuple[str, Schedule]]:
    """DeepCache uniform (the space's branches × intervals 2, 3, 5, 10) and fewer-step teachers.

    A fewer-step teacher runs `T' < t_ref` full steps; one is made at the MACs of each DeepCache
    baseline and one at the budget, so every baseline has a plain-DDIM/PLMS counterpart. With the
    model's `train_timesteps` (and `steps_offset`), the `T'` at the budget (every `T'` without a
    budget) also gets DDIM's quadratic spacing (`ddim-quad T=…`, the DDIM paper's CIFAR-10
    choice). In a timestep / hybrid space the
    teachers are placed-step schedules on the same timesteps (they then join its population).
    `mode="feasible"` (the default): those under the budget, heaviest first (what the search is
    judged against); `"all"`: these, then the ones over the budget (they are evaluated, for the
    report's plot, but can never win); `"best"`: only the heaviest under the budget of each kind
    (fewer-step teacher, DeepCache-uniform, DDIM-quadratic); `"none"`: no baseline.
    """
    if mode not in BASELINE_MODES:
        raise FlexoptError(f"baselines mode {mode!r} is invalid; allowed: "
                           f"{', '.join(BASELINE_MODES)}")
    if mode == "none":
        return []
    out = _baseline_candidates(space, sampler, full_macs, avg_macs, max_avg_macs,
                               train_timesteps, offset)
    limit = math.inf if max_avg_macs is None else max_avg_macs
    under = sorted((b for b in out if avg_macs(b[1]) < limit), key=lambda b: -avg_macs(b[1]))
    over = sorted((b for b in out if avg_macs(b[1]) >= limit), key=lambda b: avg_macs(b[1]))
    if mode == "best":
        kinds = {name.split()[0]: (name, s) for name, s in reversed(under)}
        return sorted(kinds.values(), key=lambda b: -avg_macs(b[1]))
    return under + over if mode == "all" else under


def _baseline_candidates(
    space: Space, sampler: str, full_macs: float, avg_macs: Callable[[Schedule], float],
    max_avg_macs: float | None, train_timesteps: int | None = None, offset: int = 0,
) -> list[tuple[str, Schedule]]:
    out: list[tuple[str, Schedule]] = []
    t_ref = space.t_ref
    for n in BASELINE_INTERVALS:
        if n >= t_ref or t_ref % n:
            continue
        for b in space.branches:
            out.append((f"deepcache n={n} b={b}", Schedule.uniform(t_ref, n, b, sampler=sampler)))
    steps = {max(1, round(avg_macs(s) * t_ref / full_macs)) for _, s in out}
    under = None
    if max_avg_macs is not None:
        under = math.ceil(max_avg_macs * t_ref / full_macs) - 1  # largest T' strictly under
        if under >= 1:
            steps.add(under)
    placed = space.kind != "segments" and train_timesteps is not None
    for t in sorted(steps):
        if t >= t_ref:
            continue
        if placed:
            out.append((f"teacher T={t}", Schedule.spaced(t_ref, t, "uniform", sampler,
                                                          train_timesteps, offset)))
        else:
            out.append((f"teacher T={t}", Schedule(sampler, t_ref, 1, ((1, 1),) * t)))
        if train_timesteps is not None and t > 1 and (t == under or max_avg_macs is None):
            out.append((f"ddim-quad T={t}", Schedule.spaced(t_ref, t, "quadratic", sampler,
                                                            train_timesteps, offset)))
    return out


def enqueue_baselines(study: optuna.Study, baselines: Sequence[tuple[str, Schedule]],
                      space: Space | None = None) -> int:
    """Enqueue baselines not yet in the study (so re-running never duplicates them).

    A baseline the space runs exactly (same sampler grid: its segment length is the space's `L`
    and its segments are choices) is enqueued as that candidate's params: it then joins the
    evolutionary population like any candidate, and the search can only improve on it.
    """
    trials = study.get_trials(deepcopy=False)
    present = {t.user_attrs.get("baseline") for t in trials}
    keys = {t.system_attrs.get(KEY_ATTR) for t in trials}
    n = 0
    for name, schedule in baselines:
        if name in present:
            continue
        cand = representable(space, schedule)
        if cand is None:
            study.enqueue_trial({}, user_attrs={"baseline": name,
                                                SCHEDULE_ATTR: schedule.to_dict()})
        elif candidate_key(space, cand) not in keys:
            study.enqueue_trial(space.to_params(cand), user_attrs={"baseline": name,
                                                                   "origin": "seed"})
        else:
            continue  # the sampler already ran it as one of its seeds
        n += 1
    return n


def representable(space: Space | None, schedule: Schedule) -> Any:
    """The candidate of `space` that runs exactly `schedule`'s steps, if there is one."""
    return None if space is None else space.represent(schedule)


BASELINES_ATTR = "flexopt:baselines"  # study system attr: the baselines were enqueued (names)


def enqueue_baselines_once(study: optuna.Study, lock: StudyLock,
                           baselines: list[tuple[str, Any]], space: Space | None = None
                           ) -> int:
    """Enqueue the baselines once per study, whichever worker comes first.

    Under the study lock, the first worker enqueues them and marks the study; the others see the
    mark. Baselines added later (a resumed study with a larger space) are enqueued then.
    """
    names = [name for name, _ in baselines]
    with lock():
        done = study._storage.get_study_system_attrs(study._study_id).get(BASELINES_ATTR, [])
        if set(names) <= set(done):
            return 0
        added = enqueue_baselines(study, baselines, space)
        study._storage.set_study_system_attr(study._study_id, BASELINES_ATTR,
                                             sorted(set(done) | set(names)))
    return added

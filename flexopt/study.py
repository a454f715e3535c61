"""The search as an Optuna study: settings, the trial objective, baselines, feasibility.

The worker loop and the whole command are in `flexopt.search`, storage URLs in `flexopt.storage`.

Data flows one way: trial params → candidate → schedule → cost check (over budget: recorded as
a violated constraint and pruned, never evaluated) → score (rFID of generated images) → Optuna.
How a schedule is costed and scored is injected (`ScheduleEvaluator`), so this module is the same
for a real diffusion model and for a synthetic test problem.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from flexopt.config import Budget, EvolutionConfig, format_macs
from flexopt.errors import FlexoptError
from flexopt.sampler import KEY_ATTR, CostLimit, FlexEvolutionSampler, candidate_key
from flexopt.schedule import Schedule
from flexopt.space import Candidate, SearchSpace

if TYPE_CHECKING:
    from flexopt.config import Space
from flexopt.storage import make_storage, mask_url, storage_error, study_names

SAMPLER_NAMES = ("evo", "random", "tpe", "nsga2")
BASELINE_MODES = ("feasible", "all", "best", "none")  # the first is the default
BASELINE_INTERVALS = (2, 3, 5, 10)
CONSTRAINT_NAME = "avg_macs"
CONSTRAINTS_ATTR = "constraints"  # trial system attr: the constraint values, as a list
PRUNED_AT_ATTR = "pruned_at"  # user attr: the rung (image count) a pruner stopped a trial at
SCHEDULE_ATTR = "schedule"  # user attr holding a baseline's whole schedule (not in the space)
_SETTINGS_ATTR = "flexopt:settings"


class ScheduleEvaluator(Protocol):
    """What the objective needs from a model: the cost of a schedule and its score.

    An evaluator may also report extra scores of the last schedule (`last_scores`, e.g.
    `clip_score`) and the teacher's values of them (`teacher_scores()`), which guards use.
    """

    full_macs: float

    def avg_macs(self, schedule: Schedule) -> float: ...

    def score(self, schedule: Schedule) -> float: ...


@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a study: resuming with different values is refused."""

    space: Space
    sampler: str = "ddim"  # the diffusion sampler of the schedules
    budget: Budget | None = None
    multi_objective: bool = False
    metric: str = "rfid"
    model: str | None = None
    num_images: int = 0
    seed: int = 0
    conditioning: str | None = None  # EvalSettings.conditioning(): prompts, class labels
    clip_model: str | None = None  # trials also record their CLIP score
    clip_guard: float | None = None  # CLIP score at least the teacher's minus this

    def identity(self) -> dict[str, Any]:
        """The values stored on the study and compared when it is resumed (a segment-wise
        study's as before timestep spaces existed, so old studies still resume)."""
        sp = self.space
        if sp.kind == "segments":
            shape: dict[str, Any] = {"segments": list(sp.segments), "branches": list(sp.branches),
                                     "intervals": list(sp.intervals)}
        else:
            shape = {"space": sp.kind, "steps": list(sp.steps), "branches": list(sp.branches),
                     "train_timesteps": sp.train_timesteps, "offset": sp.offset}
        return {
            **shape,
            "t_ref": sp.t_ref,
            "sampler": self.sampler,
            "budget": (
                {"macs": self.budget.macs, "speedup": self.budget.speedup} if self.budget else None
            ),
            "multi_objective": self.multi_objective,
            "metric": self.metric,
            "model": self.model,
            "num_images": self.num_images,
            "seed": self.seed,
            # only when set, so studies of unconditional models made before it still resume
            **({"conditioning": self.conditioning} if self.conditioning else {}),
            **({"clip_model": self.clip_model} if self.clip_model else {}),
            **({"clip_guard": self.clip_guard} if self.clip_guard is not None else {}),
        }


def default_storage(study_name: str) -> str:
    """A SQLite file in the working directory, named after the study."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in study_name)
    return f"sqlite:///{safe}.db"


def load_study(storage: str, study_name: str | None) -> optuna.Study:
    """Load a study for reading; a user's mistake (typo, empty storage) is one clear error.

    `study_name` may be None when the storage holds exactly one study.
    """
    names = study_names(storage)
    if not names:
        raise FlexoptError(f"storage {mask_url(storage)!r} holds no study; run a search first")
    if study_name is None:
        if len(names) > 1:
            raise FlexoptError(
                f"storage {mask_url(storage)!r} holds several studies; pick one with --study-name: "
                f"{', '.join(sorted(names))}"
            )
        study_name = names[0]
    if study_name not in names:
        raise FlexoptError(
            f"study {study_name!r} is not in {mask_url(storage)!r}; studies there: "
            f"{', '.join(sorted(names))}"
        )
    study = optuna.load_study(study_name=study_name,
                              storage=make_storage(storage, heartbeat=None))
    settings_of(study)  # raises if the study was not made by flexopt
    return study


def make_sampler(
    name: str,
    space: Space,
    feasible: Callable[[Candidate], bool],
    evolution: EvolutionConfig,
    seed: int | None,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called `name` (evo is Flexiffusion's; the others are for comparison)."""
    if name == "evo":
        return FlexEvolutionSampler(
            space, feasible, population_size=evolution.population, n_p=evolution.n_p,
            n_c=evolution.n_c, n_u=evolution.n_u, n_m=evolution.n_m,
            max_tries=evolution.max_tries, seed=seed, top_k=evolution.top_k,
            crossover_prob=evolution.crossover_prob, mutation_prob=evolution.mutation_prob,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise FlexoptError(f"sampler {name!r} is not supported; allowed: {', '.join(SAMPLER_NAMES)}")


def open_study(
    storage: str | optuna.storages.BaseStorage,
    study_name: str,
    settings: SearchSettings,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or load it if it exists — checking it was made with the same settings.
    `pruner`: Optuna's, for an objective with rungs (`flexopt.pruning.make_pruner`)."""
    directions = ["minimize", "minimize"] if settings.multi_objective else ["minimize"]
    where = mask_url(getattr(storage, "url", storage))  # an RDBStorage object, or a URL
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, sampler=sampler, pruner=pruner,
            directions=directions, load_if_exists=True,
        )
    except ValueError as err:  # e.g. directions differ from the stored study
        raise FlexoptError(f"study {study_name!r} in {where}: {err}") from None
    except Exception as err:  # SQLAlchemy's errors for an unreachable or malformed URL
        raise (storage_error(str(where), err) or err) from None
    claim_settings(study, settings, where)
    return study


def claim_settings(study: optuna.Study, settings: SearchSettings, where: str) -> None:
    """Record `settings` on the study, or check they are the ones it was created with."""
    stored = study.user_attrs.get(_SETTINGS_ATTR)
    mine = settings.identity()
    # a study without trials was made by a run that stopped at once (e.g. a bad flag): nothing to
    # lose, so it takes the settings given now
    if stored is None or (stored != mine and not study.get_trials(deepcopy=False)):
        study.set_user_attr(_SETTINGS_ATTR, mine)
        with warnings.catch_warnings():  # experimental in Optuna, but what the dashboard shows
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(
                [settings.metric] + (["avg_macs"] if settings.multi_objective else [])
            )
    elif stored != mine:
        diff = ", ".join(
            f"{k}: stored {stored.get(k)!r}, given {v!r}"
            for k, v in mine.items() if stored.get(k) != v
        )
        raise FlexoptError(
            f"study {study.study_name!r} in {where} was created with other settings ({diff}); "
            "use the same settings to resume it, or a new --study-name"
        )


def settings_of(study: optuna.Study) -> dict[str, Any]:
    """The settings a study was created with (for `export`, `report`)."""
    stored = study.user_attrs.get(_SETTINGS_ATTR)
    if stored is None:
        raise FlexoptError(f"study {study.study_name!r} was not created by flexopt search")
    return stored


def space_of(study: optuna.Study) -> Space:
    """The search space a study was made with (any kind)."""
    return space_from_identity(settings_of(study))


def space_from_identity(s: dict[str, Any]) -> Space:
    """Inverse of the space part of `SearchSettings.identity`."""
    kind = s.get("space", "segments")
    if kind == "segments":
        return SearchSpace(tuple(s["segments"]), tuple(s["branches"]), tuple(s["intervals"]),
                           s["t_ref"])
    from flexopt.timestep_space import TimestepSpace

    return TimestepSpace(tuple(s["steps"]), tuple(s["branches"]), s["t_ref"],
                         s["train_timesteps"], s["offset"])


def trial_schedule(study: optuna.Study, trial: FrozenTrial) -> Schedule:
    """The schedule a (finished) trial ran: its params decoded, or a baseline's stored schedule."""
    return schedule_of(trial, space_of(study), settings_of(study)["sampler"])


def schedule_of(trial: FrozenTrial, space: Space, sampler: str) -> Schedule:
    """The schedule of a trial of `space`: a baseline's stored one, else its params decoded."""
    if SCHEDULE_ATTR in trial.user_attrs:
        return Schedule.from_dict(trial.user_attrs[SCHEDULE_ATTR], source=f"trial {trial.number}")
    return space.schedule(space.from_params(trial.params), sampler)


# --------------------------------------------------------------------------------- baselines
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


# --------------------------------------------------------------------------------- objective
@dataclass(frozen=True)
class Guard:
    """Keep an extra score (higher is better) within `margin` of the teacher's: a trial scoring
    under `teacher - margin` is infeasible, an Optuna constraint named after the score, like
    the budget. It stays in the study (the report plots it) but is never a parent nor a best.

    The budget is checked before a candidate runs; a guard only after, from its images.
    """

    score: str  # a name in the evaluator's `last_scores`, e.g. "clip_score"
    margin: float

    def minimum(self, teacher_scores: dict[str, float]) -> float:
        return teacher_scores[self.score] - self.margin


@dataclass
class Objective:
    """Optuna objective: params → schedule → cost check → score (→ guards)."""

    space: Space
    evaluator: ScheduleEvaluator
    sampler: str = "ddim"
    max_avg_macs: float | None = None
    multi_objective: bool = False
    # Called with (trial, the evaluator's last images) after scoring, e.g. to upload a sample
    # grid as an Optuna artifact (`flexopt.artifacts.SampleGridUploader`).
    sample_grids: Callable[[optuna.Trial, Any], object] | None = None
    guards: tuple[Guard, ...] = ()
    # Image counts after which a candidate reports its score and the study's pruner may stop
    # it (`flexopt.pruning`); () scores every candidate on all its images.
    rungs: tuple[int, ...] = ()
    _teacher_scores: dict[str, float] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rungs and self.multi_objective:
            raise FlexoptError("pruning at rungs needs one objective (Optuna's pruners do not "
                               "support multi-objective studies); allowed: --pruner none with "
                               "--multi-objective")

    def teacher_scores(self) -> dict[str, float]:
        """The teacher's values of the guarded scores (its images scored once, then cached)."""
        if not self.guards:
            return {}
        if self._teacher_scores is None:
            self._teacher_scores = self.evaluator.teacher_scores()  # type: ignore[attr-defined]
        return self._teacher_scores

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        # a baseline is evaluated even over the budget (the report plots it; it cannot win)
        baseline = "baseline" in trial.user_attrs
        if SCHEDULE_ATTR in trial.user_attrs:
            schedule = Schedule.from_dict(trial.user_attrs[SCHEDULE_ATTR], source="baseline")
            key = None
        else:
            candidate = self.space.suggest(trial)
            schedule = self.space.schedule(candidate, self.sampler)
            key = candidate_key(self.space, candidate)
            trial.storage.set_trial_system_attr(trial._trial_id, KEY_ATTR, key)
        avg = self.evaluator.avg_macs(schedule)
        trial.set_user_attr("avg_macs", avg)
        trial.set_user_attr("nfe", schedule.nfe)
        trial.set_user_attr("speedup", self.evaluator.full_macs / avg)
        trial.set_user_attr("step_types", schedule.step_string())
        constraints: dict[str, float] = {}
        if self.max_avg_macs is not None:
            violation = avg / self.max_avg_macs - 1.0
            if avg >= self.max_avg_macs:
                violation = max(violation, 1e-12)  # "at or over the budget" is infeasible
            record_constraints(trial, constraints, CONSTRAINT_NAME, violation)
            if violation > 0 and not baseline:
                raise optuna.TrialPruned(
                    f"avg MACs {format_macs(avg)} at or over the budget "
                    f"{format_macs(self.max_avg_macs)}"
                )
        floors = {g.score: g.minimum(self.teacher_scores()) for g in self.guards}
        if key is not None:
            dup = find_duplicate(trial.study, key, trial.number)
            if dup is not None:
                trial.set_user_attr("duplicate_of", dup.number)
                self._guard(trial, constraints, floors, dup.user_attrs)
                return _values(dup.values, self.multi_objective)
        t0 = time.perf_counter()
        try:
            if self.rungs:
                score = float(self.evaluator.score(  # type: ignore[call-arg]
                    schedule, self.rungs, self._rung_reporter(trial, baseline)))
            else:
                score = float(self.evaluator.score(schedule))
        finally:  # a pruned trial records what it cost, too
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            for stage, seconds in getattr(self.evaluator, "last_timings", {}).items():
                trial.set_user_attr(f"seconds_{stage}", seconds)
            for name, count in getattr(self.evaluator, "last_counts", {}).items():
                trial.set_user_attr(name, count)  # unet_calls, unet_calls_skipped (prefix reuse)
        extra = dict(getattr(self.evaluator, "last_scores", {}))
        for name, value in extra.items():
            trial.set_user_attr(name, value)  # clip_score
        self._guard(trial, constraints, floors, extra)
        if self.sample_grids is not None:
            self.sample_grids(trial, getattr(self.evaluator, "last_images", None))
        return (score, avg) if self.multi_objective else score

    @staticmethod
    def _rung_reporter(trial: optuna.Trial, baseline: bool) -> Callable[[int, float], None]:
        """Report a rung's value to Optuna; stop the trial where the pruner says (a baseline
        reports, and is asked, so the rungs compare candidates with it, but always runs to the
        end: successive halving records a trial's rung only when it is asked)."""
        def on_rung(n_images: int, value: float) -> None:
            trial.report(value, n_images)
            if trial.should_prune() and not baseline:
                trial.set_user_attr(PRUNED_AT_ATTR, n_images)
                raise optuna.TrialPruned(f"score {value:.4g} on {n_images} images")
        return on_rung

    def _guard(self, trial: optuna.Trial, constraints: dict[str, float],
               floors: dict[str, float], scores: dict[str, Any]) -> None:
        """Record each guard's constraint: positive (infeasible) below its floor."""
        for name, floor in floors.items():
            if name not in scores:
                raise FlexoptError(f"the {name} guard needs the evaluator to report {name}; "
                                   "it reported " + (", ".join(scores) or "nothing"))
            trial.set_user_attr(name, scores[name])
            trial.set_user_attr(f"{name}_floor", floor)
            record_constraints(trial, constraints, name, floor - float(scores[name]))


def record_constraints(trial: optuna.Trial, constraints: dict[str, float], name: str,
                       violation: float) -> None:
    """Add constraint `name` (> 0: violated) to the trial's `constraints`, written where Optuna 5
    and optuna-dashboard 0.21 both read them."""
    constraints[name] = violation
    trial.set_constraint(name, violation)
    # optuna-dashboard 0.21 (and Optuna's own samplers' `constraints_func`) read this list.
    trial.storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_ATTR,
                                        list(constraints.values()))


def find_duplicate(study: optuna.Study, key: str, number: int) -> FrozenTrial | None:
    """An earlier complete trial of the same candidate, whose result can be reused."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != number and t.system_attrs.get(KEY_ATTR) == key and t.values:
            return t
    return None


def _values(values: Sequence[float], multi: bool) -> float | tuple[float, ...]:
    return tuple(values) if multi else values[0]


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials under the budget (baselines included), best first by the first value."""
    out = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and all(c <= 0 for c in t.constraints.values())
    ]
    return sorted(out, key=lambda t: (t.values[0], t.number))


# ------------------------------------------------------------------------------------ running
def feasibility(
    space: Space, sampler: str, evaluator: ScheduleEvaluator, max_avg_macs: float | None
) -> CostLimit:
    """`candidate -> bool`: strictly under the avg-MACs budget (always True without one); it
    carries the cost, so the sampler can spread its first population up to the budget."""

    def cost(c: Candidate) -> float:
        return evaluator.avg_macs(space.schedule(c, sampler))

    return CostLimit(cost, max_avg_macs)


def check_space_fits(space: Space, sampler: str, evaluator: ScheduleEvaluator,
                     max_avg_macs: float | None, total: int | None = None) -> None:
    """Refuse, before a study is made or a teacher built, a space the model cannot run (`total`:
    its training timesteps) or the budget cannot afford: one line now, not failed trials later."""
    if total is not None and space.kind != "segments":
        if space.train_timesteps != total or space.steps[-1] > total:
            raise FlexoptError(f"the space places steps among {space.train_timesteps} training "
                               f"timesteps, up to {space.steps[-1]} of them; the model has "
                               f"{total}; allowed: a space built for this model")
    elif total is not None:
        longest = max(space.grid_lengths.values())
        if space.t_ref > total:
            raise FlexoptError(f"t_ref {space.t_ref} exceeds the model's {total} training "
                               f"timesteps; allowed: t_ref <= {total}")
        if longest > total:
            raise FlexoptError(
                f"the longest base grid, {max(space.segments)} segments x L={space.segment_length}"
                f" = {longest} steps, exceeds the model's {total} training timesteps; allowed: "
                f"segments x L <= {total}")
    if max_avg_macs is not None:
        lightest = evaluator.avg_macs(space.schedule(space.lightest(), sampler))
        if lightest >= max_avg_macs:
            fewer = "segments" if space.kind == "segments" else "steps"
            raise FlexoptError(
                f"no candidate fits the budget: even the lightest ({space.lightest()}, "
                f"{format_macs(lightest)} avg MACs) is not under {format_macs(max_avg_macs)}; "
                f"raise the budget or allow fewer/lighter {fewer}")


def is_baseline(t: FrozenTrial) -> bool:
    """A baseline (DeepCache-uniform, fewer-step teacher, DDIM-quadratic), enqueued or a seed of
    the sampler's first population: it runs in addition to the searched candidates."""
    return "baseline" in t.user_attrs


def pruned_at_rung(t: FrozenTrial) -> bool:
    """Evaluated on some images, then stopped by the pruner (PRUNED with `pruned_at`); a PRUNED
    trial without it was rejected by the budget before any image was made."""
    return t.state == TrialState.PRUNED and PRUNED_AT_ATTR in t.user_attrs


@dataclass(frozen=True)
class TrialCounts:
    """A study's trials as a search counts them. `--n-trials` is the number of searched
    candidates evaluated (to the end or to a rung); baselines and candidates rejected by the
    budget (never evaluated) come in addition."""

    searched: int  # searched candidates evaluated: complete + pruned at a rung
    pruned: int  # of which stopped at a rung
    baselines: int  # baselines evaluated
    rejected: int  # searched candidates over the budget: never evaluated
    running_searched: int = 0
    waiting_baselines: int = 0

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> TrialCounts:
        searched = pruned = baselines = rejected = running = waiting = 0
        for t in trials:
            base = is_baseline(t)
            if t.state == TrialState.COMPLETE:
                baselines += base
                searched += not base
            elif t.state == TrialState.PRUNED:
                at_rung = pruned_at_rung(t)
                pruned += at_rung and not base
                searched += at_rung and not base
                rejected += not at_rung and not base
                baselines += base
            elif t.state == TrialState.RUNNING:
                running += not base
            elif t.state == TrialState.WAITING:
                waiting += base
        return cls(searched, pruned, baselines, rejected, running, waiting)

    @classmethod
    def of_study(cls, study: optuna.Study) -> TrialCounts:
        return cls.of(study.get_trials(deepcopy=False))

    def line(self) -> str:
        """"40 searched candidates (12 stopped at a rung), 5 baselines, 3 over the budget"."""
        parts = [f"{self.searched} searched candidates"
                 + (f" ({self.pruned} stopped at a rung)" if self.pruned else ""),
                 f"{self.baselines} baselines"]
        if self.rejected:
            parts.append(f"{self.rejected} over the budget (never evaluated)")
        return ", ".join(parts)


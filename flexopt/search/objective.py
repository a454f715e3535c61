"""The Optuna objective of a search: one `Objective`, from trial params to a score.

`Objective` is what `study.optimize` calls: trial params → candidate → budget check (over it: a
violated constraint, pruned unevaluated) → score (rFID of generated images; at rungs for a
pruner) → guards (the CLIP score) → Optuna. It also carries what the rest of a search needs from
the model — the feasibility check for `FlexEvolutionSampler`, the budget in avg MACs, the schedule
of a finished trial — so a Python search is `create_study` + `optimize` with nothing from
flexopt's internals. On its first trial it records its settings on the study, so `flexopt
report`/`export` read the study like a CLI one.

How a schedule is costed and scored is injected (`ScheduleEvaluator`): the same class runs a real
diffusion model (`from_pipeline`, `from_model`) and a synthetic test problem.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from flexopt.errors import FlexoptError
from flexopt.run.budget import Budget, format_macs
from flexopt.search.config import SpaceChoices, check_cost
from flexopt.search.sampler import KEY_ATTR, CostLimit, candidate_key
from flexopt.search.study import (
    CONSTRAINT_NAME,
    CONSTRAINTS_ATTR,
    LATENCY_ATTR,
    PRUNED_AT_ATTR,
    SCHEDULE_ATTR,
    SearchSettings,
    claim_settings,
    schedule_of,
)
from flexopt.space.schedule import Schedule
from flexopt.space.steps import Candidate

if TYPE_CHECKING:
    from flexopt.search.config import Space


class ScheduleEvaluator(Protocol):
    """What the objective needs from a model: the cost of a schedule and its score.

    An evaluator may also report extra scores of the last schedule (`last_scores`, e.g.
    `clip_score`) and the teacher's values of them (`teacher_scores()`), which guards use.
    """

    full_macs: float

    def avg_macs(self, schedule: Schedule) -> float: ...

    def score(self, schedule: Schedule) -> float: ...


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


def avg_cost(evaluator: ScheduleEvaluator, schedule: Schedule) -> float:
    """What the budget prices of a schedule, per teacher step: avg MACs, or predicted seconds
    when the evaluator has a latency profile."""
    latency = getattr(evaluator, "latency", None)
    if latency is None:
        return evaluator.avg_macs(schedule)
    from flexopt.run.cost import schedule_cost

    return schedule_cost(schedule, latency).avg_macs


def full_cost(evaluator: ScheduleEvaluator) -> float:
    """What the budget prices of a full step: MACs, or seconds with a latency profile."""
    latency = getattr(evaluator, "latency", None)
    return evaluator.full_macs if latency is None else latency.full


def describe_cost(evaluator: ScheduleEvaluator, avg: float) -> str:
    """An avg cost in words, in the budget's unit."""
    latency = getattr(evaluator, "latency", None)
    return f"avg MACs {format_macs(avg)}" if latency is None else latency.describe(avg)


def as_budget(budget: Budget | str | float | None) -> Budget | None:
    """A `Budget` from `Budget`, text such as "3G" / "2.5x", or a number of avg MACs."""
    return budget if budget is None or isinstance(budget, Budget) else Budget.parse(budget)


@dataclass
class Objective:
    """Flexiffusion's objective: the rFID of a trial's schedule, under an avg-MACs budget.

    Build one with `from_pipeline` (a loaded diffusers pipeline) or `from_model` (a directory,
    hub id or `flexopt:NAME`), then hand `objective.feasible` to `FlexEvolutionSampler`; or
    build it directly from a space and any `ScheduleEvaluator` (a synthetic problem in tests).
    """

    space: Space
    evaluator: ScheduleEvaluator
    sampler: str = "ddim"
    max_avg_macs: float | None = None
    multi_objective: bool = False
    # Called with (trial, the evaluator's last images) after scoring, e.g. to upload a sample
    # grid as an Optuna artifact (`flexopt.search.artifacts.SampleGridUploader`).
    sample_grids: Callable[[optuna.Trial, Any], object] | None = None
    guards: tuple[Guard, ...] = ()
    # Image counts after which a candidate reports its score and the study's pruner may stop
    # it (`flexopt.search.pruning`); () scores every candidate on all its images.
    rungs: tuple[int, ...] = ()
    # Recorded on the study at the first trial (from_pipeline / from_model set them).
    settings: SearchSettings | None = None
    space_fit: Any = None  # flexopt.run.fitting.SpaceFit: the space's cost range against the budget
    _teacher_scores: dict[str, float] | None = field(default=None, init=False, repr=False)
    _claimed: set[int] = field(default_factory=set, init=False, repr=False)

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

    # ---------------------------------------------------------------------------- building
    @classmethod
    def from_model(cls, model: str, space: Space | SpaceChoices,
                   budget: Budget | str | float | None, *,
                   device: str | None = None, dtype: str = "float32", **kwargs: Any) -> Objective:
        """Load `model` on `device` (default: cuda when available) and build the objective."""
        from flexopt.models.loading import load_pipeline, parse_device, parse_dtype

        pipe = load_pipeline(model, dtype=parse_dtype(dtype), device=parse_device(device))
        return cls.from_pipeline(pipe, space, budget, model=model, **kwargs)

    @classmethod
    def from_pipeline(
        cls, pipe: Any, space: Space | SpaceChoices, budget: Budget | str | float | None, *,
        num_images: int = 1000, seed: int = 0, sampler: str = "ddim", batch_size: int = 64,
        metric: str = "rfid", prompts: tuple[str, ...] = (), guidance_scale: float | None = None,
        class_labels: tuple[int, ...] = (), multi_objective: bool = False,
        cache_dir: str | None = None, inception_weights: str | None = None,
        progress: bool = False, model: str | None = None,
        prefix_cache_mb: float | None = None, clip_model: str | None = None,
        clip_guard: float | None = None, rungs: Sequence[int] | str | None = (),
        cost: str = "macs", latency_rounds: int = 5,
        latency_progress: Callable[[int, int], None] | None = None,
        latency_profile: Any = None, reference: str | None = None,
        reference_split: str = "test", reference_images: int | None = None,
    ) -> Objective:
        """The objective for a loaded pipeline: its teacher is `sampler` with `space.t_ref` full
        steps, and a candidate scores the rFID of `num_images` images (image i: seed + i).

        `space` may be `SpaceChoices` with `segments=None`: the N-segment choices are then fitted
        to the budget (`flexopt.run.fitting.fit_space`); `SpaceChoices(kind="timesteps" | "hybrid")`
        searches placed steps (K choices fitted when `steps` is None, `fit_placed`), as does a
        `TimestepSpace`. `objective.space` is the space searched and
        `objective.space_fit` its cost range against the budget. `prefix_cache_mb`: CPU memory
        for shared-prefix reuse (default `flexopt.run.prefix.DEFAULT_PREFIX_CACHE_MB`; 0: off).
        `clip_model` (a `transformers` CLIP id or directory): every trial also records its CLIP
        score; `clip_guard` D: a trial whose CLIP score is under the teacher's minus D is
        infeasible (default model then `flexopt.metrics.clip.DEFAULT_CLIP_MODEL`).
        `rungs` (image counts, e.g. (8, 16); "auto": `flexopt.search.pruning.default_rungs`): each
        candidate reports its score after each rung, so the study's pruner
        (`optuna.create_study(pruner=flexopt.search.pruning.make_pruner(...))`) can stop it
        there. `cost="latency"`: the budget is wall-clock on this device (a speedup over the
        teacher, or seconds per batch), priced by the pipeline's latency profile at `batch_size`
        (cached; measured with `latency_rounds` rounds when not, `flexopt.metrics.latency`), or
        by `latency_profile` (a `LatencyProfile`: the study's, which every worker shares).
        `metric="fid"` scores candidates by FID against a data set instead of the teacher: the
        first `reference_images` (default: all) of `reference`'s `reference_split`
        (fashion-mnist, digits, or a folder of images)."""
        from flexopt.models.conditioning import DEFAULT_GUIDANCE
        from flexopt.run.fitting import fit_space
        from flexopt.run.prefix import DEFAULT_PREFIX_CACHE_MB
        from flexopt.search.evaluator import EvalSettings, ModelEvaluator
        from flexopt.search.pruning import parse_rungs

        settings = EvalSettings(
            num_images, seed, batch_size, metric, tuple(prompts),
            DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale, tuple(class_labels),
            reference=reference, reference_split=reference_split,
            reference_images=reference_images)
        rungs_ = parse_rungs(rungs, num_images)
        check_cost(cost)
        clip = load_clip(pipe, settings, clip_model, clip_guard)
        ev = ModelEvaluator(pipe, sampler, space.t_ref, settings, cache_dir, inception_weights,
                            progress, DEFAULT_PREFIX_CACHE_MB if prefix_cache_mb is None
                            else prefix_cache_mb, clip)
        budget_ = as_budget(budget)
        if budget_ is None and not multi_objective:
            raise FlexoptError("no budget: give one (e.g. 3G or 2.5x), or multi_objective=True")
        if budget_ is not None:
            budget_.check_unit(cost)  # before a latency profile is measured
        if cost == "latency":
            branches = () if getattr(space, "kind", "segments") == "timesteps" else space.branches
            ev.use_latency(branches, rounds=latency_rounds, progress=latency_progress,
                           profile=latency_profile)
        limit = ev.cost_profile.ceiling(budget_, space.t_ref) if budget_ else None
        fit = None
        if getattr(space, "kind", "segments") != "segments":
            space, fit = _placed_space(ev, pipe, space, limit)
            check_model(ev, space, sampler, budget_, limit)
            return cls._build(pipe, ev, space, sampler, budget_, limit, fit, multi_objective,
                              metric, model, num_images, seed, settings, clip_guard, rungs_)
        auto = getattr(space, "auto", False)
        if not auto:  # explicit: grid, branches and budget checked first, in one line each
            space = space.space() if isinstance(space, SpaceChoices) else space
            check_model(ev, space, sampler, budget_, limit)
        if limit is not None:
            fit = fit_space(ev.cost_profile, space.t_ref, limit, space.branches,
                            space.intervals, None if auto else space.segments)
            space = fit.space
        elif auto:
            space = space.space()  # auto segments without a budget: one clear error
        if auto:
            check_model(ev, space, sampler, budget_, limit)
        return cls._build(pipe, ev, space, sampler, budget_, limit, fit, multi_objective, metric,
                          model, num_images, seed, settings, clip_guard, rungs_)

    @classmethod
    def _build(cls, pipe: Any, ev: Any, space: Space, sampler: str, budget: Budget | None,
               limit: float | None, fit: Any, multi_objective: bool, metric: str,
               model: str | None, num_images: int, seed: int, settings: Any,
               clip_guard: float | None = None, rungs: tuple[int, ...] = ()) -> Objective:
        name = model or getattr(pipe, "name_or_path", None) or type(pipe).__name__
        clip = ev.clip
        search = SearchSettings(space, sampler, budget, multi_objective, metric, name,
                                num_images, seed, settings.conditioning(),
                                clip.name if clip is not None else None, clip_guard,
                                ev.cost_profile.name, settings.reference_text())
        guards = () if clip_guard is None else (Guard("clip_score", clip_guard),)
        return cls(space, ev, sampler, limit, multi_objective, guards=guards, rungs=rungs,
                   settings=search, space_fit=fit)

    # --------------------------------------------------------------------------- queries
    @property
    def feasible(self) -> CostLimit:
        """`candidate -> bool`, strictly under the avg-MACs budget (always True without one): the
        sampler's check. It carries the cost, so the sampler spreads its first population up to
        the budget."""
        return feasibility(self.space, self.sampler, self.evaluator, self.max_avg_macs)

    def schedule(self, trial: FrozenTrial) -> Schedule:
        """The schedule a trial ran (a searched candidate or a baseline)."""
        return schedule_of(trial, self.space, self.sampler)

    def teacher(self) -> Any:
        """Build or reuse the teacher's cached statistics (one worker builds, the others wait),
        its guarded scores (the CLIP score) with them, and the reference data set's statistics
        when the objective scores against one."""
        entry = self.evaluator.teacher()
        self.teacher_scores()
        if self.evaluator.settings.reference:
            self.evaluator.reference()
        return entry

    # ---------------------------------------------------------------------------- running
    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        """Params → schedule → cost check → score (→ guards), recorded on the trial."""
        if self.settings is not None and trial.study._study_id not in self._claimed:
            claim_settings(trial.study, self.settings, where="its storage")
            latency = getattr(self.evaluator, "latency", None)
            if latency is not None and LATENCY_ATTR not in trial.study.user_attrs:
                trial.study.set_user_attr(LATENCY_ATTR, latency.to_json())  # for `report`
            self._claimed.add(trial.study._study_id)
        # a baseline is evaluated even over the budget (the report plots it; it cannot win)
        baseline = "baseline" in trial.user_attrs
        schedule, key = self._trial_schedule(trial)
        avg = self._record_cost(trial, schedule)
        constraints: dict[str, float] = {}
        self._check_budget(trial, constraints, avg, baseline)
        floors = {g.score: g.minimum(self.teacher_scores()) for g in self.guards}
        if key is not None:
            dup = find_duplicate(trial.study, key, trial.number)
            if dup is not None:
                trial.set_user_attr("duplicate_of", dup.number)
                self._guard(trial, constraints, floors, dup.user_attrs)
                return _values(dup.values, self.multi_objective)
        score = self._score(trial, schedule, baseline)
        extra = dict(getattr(self.evaluator, "last_scores", {}))
        for name, value in extra.items():
            trial.set_user_attr(name, value)  # clip_score
        self._guard(trial, constraints, floors, extra)
        if self.sample_grids is not None:
            self.sample_grids(trial, getattr(self.evaluator, "last_images", None))
        return (score, avg) if self.multi_objective else score

    def _trial_schedule(self, trial: optuna.Trial) -> tuple[Schedule, str | None]:
        """The trial's schedule, and its candidate key (None for a baseline's stored schedule)."""
        if SCHEDULE_ATTR in trial.user_attrs:
            return Schedule.from_dict(trial.user_attrs[SCHEDULE_ATTR], source="baseline"), None
        candidate = self.space.suggest(trial)
        key = candidate_key(self.space, candidate)
        trial.storage.set_trial_system_attr(trial._trial_id, KEY_ATTR, key)
        return self.space.schedule(candidate, self.sampler), key

    def _record_cost(self, trial: optuna.Trial, schedule: Schedule) -> float:
        """Record the MACs (always) and, with a latency profile, the predicted seconds of a
        batch and the predicted wall-clock speedup; return what the budget prices."""
        ev = self.evaluator
        macs = ev.avg_macs(schedule)
        trial.set_user_attr("avg_macs", macs)
        trial.set_user_attr("nfe", schedule.nfe)
        trial.set_user_attr("speedup", ev.full_macs / macs)
        trial.set_user_attr("step_types", schedule.step_string())
        latency = getattr(ev, "latency", None)
        if latency is None:
            return macs
        avg = avg_cost(ev, schedule)
        trial.set_user_attr("predicted_seconds", latency.seconds(avg * schedule.t_ref))
        trial.set_user_attr("predicted_speedup", latency.speedup(avg, schedule.t_ref))
        return avg

    def _check_budget(self, trial: optuna.Trial, constraints: dict[str, float], avg: float,
                      baseline: bool) -> None:
        """Record the budget constraint; a searched candidate over it is pruned unevaluated."""
        if self.max_avg_macs is None:
            return
        violation = avg / self.max_avg_macs - 1.0
        if avg >= self.max_avg_macs:
            violation = max(violation, 1e-12)  # "at or over the budget" is infeasible
        record_constraints(trial, constraints, CONSTRAINT_NAME, violation)
        if violation > 0 and not baseline:
            raise optuna.TrialPruned(
                f"{describe_cost(self.evaluator, avg)} at or over the budget "
                f"{describe_cost(self.evaluator, self.max_avg_macs)}"
            )

    def _score(self, trial: optuna.Trial, schedule: Schedule, baseline: bool) -> float:
        """The evaluator's score, at rungs when there are; what it cost is recorded either way."""
        t0 = time.perf_counter()
        try:
            if self.rungs:
                return float(self.evaluator.score(  # type: ignore[call-arg]
                    schedule, self.rungs, self._rung_reporter(trial, baseline)))
            return float(self.evaluator.score(schedule))
        finally:  # a pruned trial records what it cost, too
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            for stage, seconds in getattr(self.evaluator, "last_timings", {}).items():
                trial.set_user_attr(f"seconds_{stage}", seconds)
            for name, count in getattr(self.evaluator, "last_counts", {}).items():
                trial.set_user_attr(name, count)  # unet_calls, unet_calls_skipped (prefix reuse)
            measured = getattr(self.evaluator, "last_batch_seconds", None)
            if getattr(self.evaluator, "latency", None) is not None and measured is not None:
                trial.set_user_attr("measured_seconds", measured)  # per batch, as predicted

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
    # a trial interrupted and requeued (same trial, same candidate) has it already; Optuna keeps
    # the first value and warns on a second ("constraints:NAME" is where Optuna 5 keeps it)
    if f"{CONSTRAINTS_ATTR}:{name}" not in trial.storage.get_trial_system_attrs(trial._trial_id):
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


def feasibility(
    space: Space, sampler: str, evaluator: ScheduleEvaluator, max_avg_macs: float | None
) -> CostLimit:
    """`candidate -> bool`: strictly under the avg-MACs budget (always True without one); it
    carries the cost, so the sampler can spread its first population up to the budget."""

    def cost(c: Candidate) -> float:
        return avg_cost(evaluator, space.schedule(c, sampler))

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
        lightest = avg_cost(evaluator, space.schedule(space.lightest(), sampler))
        if lightest >= max_avg_macs:
            fewer = "segments" if space.kind == "segments" else "steps"
            raise FlexoptError(
                f"no candidate fits the budget: even the lightest ({space.lightest()}, "
                f"{describe_cost(evaluator, lightest)}) is not under "
                f"{describe_cost(evaluator, max_avg_macs)}; raise the budget or allow "
                f"fewer/lighter {fewer}")


def load_clip(pipe: Any, settings: Any, clip_model: str | None,
              clip_guard: float | None) -> Any:
    """The CLIP scorer a search uses (None: no CLIP score), checked against the pipeline and
    prompts before any model is loaded."""
    if clip_model is None and clip_guard is None:
        return None
    from flexopt.metrics.clip import DEFAULT_CLIP_MODEL, ClipScorer
    from flexopt.search.evaluator import check_clip

    if clip_guard is not None and not (isinstance(clip_guard, int | float) and clip_guard >= 0):
        raise FlexoptError(f"CLIP guard {clip_guard!r} is invalid; allowed: a number >= 0 "
                           "(CLIP-score points below the teacher's)")
    check_clip(pipe, settings)
    return ClipScorer.load(clip_model or DEFAULT_CLIP_MODEL, pipe._execution_device,
                           settings.batch_size)


def noise_schedule(pipe: Any) -> tuple[int, int]:
    """(training timesteps, steps_offset) of a pipeline's scheduler: where placed steps go."""
    config = pipe.scheduler.config
    return int(config.get("num_train_timesteps", 1000)), int(config.get("steps_offset", 0) or 0)


def _placed_space(ev: Any, pipe: Any, choices: Any, limit: float | None) -> tuple[Space, Any]:
    """A timestep / hybrid space for this model: K choices fitted to the budget when "auto"."""
    from flexopt.run.fitting import fit_placed

    total, offset = noise_schedule(pipe)
    if not isinstance(choices, SpaceChoices):  # a TimestepSpace built by the caller
        return choices, None
    if limit is None:
        return choices.space(total, offset), None
    fit = fit_placed(ev.cost_profile, choices.t_ref, limit, choices.kind, choices.branches,
                     choices.steps, total, offset)
    return fit.space, fit


def check_model(ev: ScheduleEvaluator, space: Space, sampler: str, budget: Budget | None,
                limit: float | None) -> None:
    """Refuse, before anything runs, a space or budget this model cannot serve: one line."""
    profile = getattr(ev, "profile", None)
    if profile is not None:
        bad = [b for b in space.branches if b > profile.max_branch]
        if bad:
            raise FlexoptError(f"branch choice {bad[0]} is beyond this model; allowed: "
                               f"1..{profile.max_branch}")
    if budget is not None and budget.macs is not None and budget.macs < 1e3:
        raise FlexoptError(  # `--budget 2.5`: a forgotten unit or x, not 2.5 MACs
            f"budget {budget.macs:g} means {budget.macs:g} avg MACs, far below a step of this "
            f"model ({format_macs(ev.full_macs)}); allowed: avg MACs such as 3G or 250M, or a "
            f"speedup such as {budget.macs:g}x")
    pipe = getattr(ev, "pipe", None)
    total = pipe.scheduler.config.get("num_train_timesteps") if pipe is not None else None
    check_space_fits(space, sampler, ev, limit, total)

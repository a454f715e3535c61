"""The Optuna objective of a search, as a library object: built from a pipeline or a model id.

`Objective` is what `study.optimize` calls: trial params → candidate → budget check → rFID. It
also carries what the rest of a search needs from the model — the feasibility check for
`FlexEvolutionSampler`, the budget in avg MACs, the schedule of a finished trial — so a Python
search is `create_study` + `optimize` with nothing from flexopt's internals. On its first trial it
records its settings on the study, so `flexopt report`/`export` read the study like a CLI one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from flexopt.config import Budget, SpaceChoices, format_macs
from flexopt.errors import FlexoptError
from flexopt.sampler import CostLimit
from flexopt.schedule import Schedule

if TYPE_CHECKING:
    from flexopt.config import Space
from flexopt.study import (
    Guard,
    ScheduleEvaluator,
    SearchSettings,
    check_space_fits,
    claim_settings,
    feasibility,
    schedule_of,
)
from flexopt.study import Objective as TrialObjective


def as_budget(budget: Budget | str | float | None) -> Budget | None:
    """A `Budget` from `Budget`, text such as "3G" / "2.5x", or a number of avg MACs."""
    return budget if budget is None or isinstance(budget, Budget) else Budget.parse(budget)


@dataclass
class Objective(TrialObjective):
    """Flexiffusion's objective: the rFID of a trial's schedule, under an avg-MACs budget.

    Build one with `from_pipeline` (a loaded diffusers pipeline) or `from_model` (a directory,
    hub id or `flexopt:NAME`), then hand `objective.feasible` to `FlexEvolutionSampler`.
    """

    settings: SearchSettings | None = None
    space_fit: Any = None  # flexopt.cost.SpaceFit: the space's cost range against the budget
    _claimed: set[int] = field(default_factory=set, init=False, repr=False)

    # ---------------------------------------------------------------------------- building
    @classmethod
    def from_model(cls, model: str, space: Space | SpaceChoices,
                   budget: Budget | str | float | None, *,
                   device: str | None = None, dtype: str = "float32", **kwargs: Any) -> Objective:
        """Load `model` on `device` (default: cuda when available) and build the objective."""
        from flexopt.models import load_pipeline, parse_device, parse_dtype

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
    ) -> Objective:
        """The objective for a loaded pipeline: its teacher is `sampler` with `space.t_ref` full
        steps, and a candidate scores the rFID of `num_images` images (image i: seed + i).

        `space` may be `SpaceChoices` with `segments=None`: the N-segment choices are then fitted
        to the budget (`flexopt.cost.fit_space`); `SpaceChoices(kind="timesteps" | "hybrid")`
        searches placed steps (K choices fitted when `steps` is None, `fit_placed`), as does a
        `TimestepSpace`. `objective.space` is the space searched and
        `objective.space_fit` its cost range against the budget. `prefix_cache_mb`: CPU memory
        for shared-prefix reuse (default `flexopt.prefix.DEFAULT_PREFIX_CACHE_MB`; 0: off).
        `clip_model` (a `transformers` CLIP id or directory): every trial also records its CLIP
        score; `clip_guard` D: a trial whose CLIP score is under the teacher's minus D is
        infeasible (default model then `flexopt.metrics.clip.DEFAULT_CLIP_MODEL`).
        `rungs` (image counts, e.g. (8, 16); "auto": `flexopt.pruning.default_rungs`): each
        candidate reports its score after each rung, so the study's pruner
        (`optuna.create_study(pruner=flexopt.pruning.make_pruner(...))`) can stop it there."""
        from flexopt.conditioning import DEFAULT_GUIDANCE
        from flexopt.cost import fit_space
        from flexopt.evaluator import EvalSettings, ModelEvaluator
        from flexopt.prefix import DEFAULT_PREFIX_CACHE_MB
        from flexopt.pruning import parse_rungs

        settings = EvalSettings(
            num_images, seed, batch_size, metric, tuple(prompts),
            DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale, tuple(class_labels))
        rungs_ = parse_rungs(rungs, num_images)
        clip = load_clip(pipe, settings, clip_model, clip_guard)
        ev = ModelEvaluator(pipe, sampler, space.t_ref, settings, cache_dir, inception_weights,
                            progress, DEFAULT_PREFIX_CACHE_MB if prefix_cache_mb is None
                            else prefix_cache_mb, clip)
        budget_ = as_budget(budget)
        if budget_ is None and not multi_objective:
            raise FlexoptError("no budget: give one (e.g. 3G or 2.5x), or multi_objective=True")
        limit = budget_.max_avg_macs(ev.full_macs) if budget_ else None
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
            fit = fit_space(ev.profile, space.t_ref, limit, space.branches, space.intervals,
                            None if auto else space.segments)
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
                                clip.name if clip is not None else None, clip_guard)
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
        and its guarded scores (the CLIP score) with them."""
        entry = self.evaluator.teacher()
        self.teacher_scores()
        return entry

    # ---------------------------------------------------------------------------- running
    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        study = trial.study
        if self.settings is not None and study._study_id not in self._claimed:
            claim_settings(study, self.settings, where="its storage")
            self._claimed.add(study._study_id)
        return super().__call__(trial)


def load_clip(pipe: Any, settings: Any, clip_model: str | None,
              clip_guard: float | None) -> Any:
    """The CLIP scorer a search uses (None: no CLIP score), checked against the pipeline and
    prompts before any model is loaded."""
    if clip_model is None and clip_guard is None:
        return None
    from flexopt.evaluator import check_clip
    from flexopt.metrics.clip import DEFAULT_CLIP_MODEL, ClipScorer

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
    from flexopt.cost import fit_placed

    total, offset = noise_schedule(pipe)
    if not isinstance(choices, SpaceChoices):  # a TimestepSpace built by the caller
        return choices, None
    if limit is None:
        return choices.space(total, offset), None
    fit = fit_placed(ev.profile, choices.t_ref, limit, choices.kind, choices.branches,
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

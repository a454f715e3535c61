"""What `flexopt space` shows: a space's size and shape, random candidates from it, and its cost
against a budget.

Built here as a value, so the command only prints it (text lines or JSON). The model's MACs are
counted (from its config, no weights) only when a budget asks for them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from flexopt.errors import FlexoptError
from flexopt.models.loading import load_scheduler_config, load_unet_config
from flexopt.run.budget import Budget, format_macs
from flexopt.run.cost import count_macs
from flexopt.run.fitting import SpaceFit, fit_placed, fit_space

if TYPE_CHECKING:
    from flexopt.search.config import Space, SpaceChoices, StudyConfig

NEEDS_MODEL = ("--budget needs a model to cost the space: give --model (or a CONFIG with "
               "`model = ...`)")


class Line(NamedTuple):
    """One printed line; `err`: it goes to standard error (a warning)."""

    text: str
    err: bool = False


@dataclass(frozen=True)
class BudgetFit:
    """The space fitted to (or checked against) a budget on a model's MACs."""

    budget: Budget
    max_avg_macs: float  # in the cost's unit: MACs, or seconds per step (a latency cost)
    full_macs: float  # the model's full step (MACs, or seconds)
    fit: SpaceFit
    profile: Any = None  # what priced it: a MacsProfile or a LatencyProfile

    @property
    def latency(self) -> bool:
        return self.fit.costs.unit == "s"

    def describe(self, avg: float) -> str:
        return self.profile.describe(avg) if self.profile is not None else \
            f"{format_macs(avg)} avg MACs"

    def to_json(self, suggested: str) -> dict[str, Any]:
        """The `budget` part of `flexopt space --json` (`_avg_seconds` keys for a latency cost:
        seconds per teacher step)."""
        fit, unit = self.fit, "seconds" if self.latency else "macs"
        costs = {k: v for k, v in vars(fit.costs).items() if k != "unit"}
        return {f"max_avg_{unit}": self.max_avg_macs, "cost": "latency" if self.latency
                else "macs", "fits": fit.costs.fits(self.max_avg_macs),
                "warning": fit.warning, suggested: list(fit.suggested),
                **{f"{k}_avg_{unit}": v for k, v in costs.items()}}


@dataclass(frozen=True)
class SpaceSummary:
    """A space, `samples` drawn from it, and (with a budget) its fit; `fitted`: its N-segment or
    step-count choices were derived from the budget ("auto")."""

    space: Space
    samples: list[Any]
    config_source: str | None = None
    model: str | None = None
    budget: BudgetFit | None = None
    fitted: bool = False

    @property
    def placed(self) -> bool:
        return self.space.kind != "segments"

    def to_json(self) -> dict[str, Any]:
        sp, data = self.space, self.space.describe()
        if self.placed:
            data["samples"] = [sp.schedule(c).to_dict() for c in self.samples]
        else:
            data["grid_length"] = {str(k): v for k, v in data["grid_length"].items()}
            data["samples"] = [
                {"n_segments": c.n_segments, "nfe": c.nfe,
                 "segments": [{"branch": s.branch, "interval": s.interval} for s in c.segments],
                 "steps": c.step_string(sp.segment_length)}
                for c in self.samples
            ]
        if self.budget is not None:
            data["budget"] = self.budget.to_json(
                "suggested_steps" if self.placed else "suggested_segments")
        return data

    def lines(self) -> list[Line]:
        """The text `flexopt space` prints."""
        out = [] if self.config_source is None else [Line(f"study config: {self.config_source}")]
        out += self._placed_lines() if self.placed else self._segment_lines()
        return out

    def _budget_lines(self, fitted_what: str) -> list[Line]:
        b = self.budget
        if b is None:
            return []
        out = [Line(f"budget            : under {b.describe(b.max_avg_macs)} ({b.budget}"
                    + (", latency profile" if b.latency else "") + ")"
                    + (f" — {fitted_what} fitted to it" if self.fitted else "")),
               Line(f"space cost        : {b.fit.costs}")]
        return out + ([Line(f"warning: {b.fit.warning}", err=True)] if b.fit.warning else [])

    def _segment_lines(self) -> list[Line]:
        sp, L = self.space, self.space.segment_length
        grid = " / ".join(f"{g} (N={n})" for n, g in sp.grid_lengths.items())
        out = [Line(f"N-segment choices : {','.join(map(str, sp.segments))}"),
               Line(f"branch choices    : {','.join(map(str, sp.branches))}"),
               Line(f"interval choices  : {','.join(map(str, sp.intervals))}"),
               Line(f"t_ref             : {sp.t_ref}"),
               Line(f"segment length L  : {L}"),
               Line(f"base grid slots   : {grid}"),
               Line(f"candidates        : {sp.size:,} (~{float(sp.size):.3e})")]
        if self.budget is not None:
            full = (f"{self.budget.full_macs * 1e3:.3g} ms" if self.budget.latency
                    else f"{format_macs(self.budget.full_macs)} MACs")
            out.append(Line(f"model             : {self.model}, full step {full}"))
        out += self._budget_lines("N-segment choices")
        for i, c in enumerate(self.samples, 1):
            out += [Line(f"\nsample {i}: N={c.n_segments} NFE={c.nfe}"),
                    Line(f"  segments (branch/interval): {c}"),
                    Line(f"  steps: {c.step_string(L)}")]
        return out

    def _placed_lines(self) -> list[Line]:
        sp = self.space
        out = [Line(f"space             : {sp.kind}"),
               Line(f"step-count choices: {','.join(map(str, sp.steps))}")]
        if sp.branches:
            out.append(Line(f"branch choices    : {','.join(map(str, sp.branches))} "
                            "(partial steps)"))
        out += [Line(f"t_ref             : {sp.t_ref}"),
                Line(f"timesteps         : 0..{sp.train_timesteps - 1} (the model's training "
                     "steps)"),
                Line(f"candidates        : ~{float(sp.size):.3e}")]
        out += self._budget_lines("step counts")
        for i, c in enumerate(self.samples, 1):
            schedule = sp.schedule(c)
            out += [Line(f"\nsample {i}: K={schedule.nfe}"),
                    Line(f"  steps: {schedule.step_string()}")]
        return out


def _timesteps(model: str) -> tuple[int, int]:
    """The model's training timesteps and `steps_offset` (a placed space needs them)."""
    sched = load_scheduler_config(model)
    return int(sched.get("num_train_timesteps", 1000)), int(sched.get("steps_offset", 0) or 0)


def fit_budget(choices: SpaceChoices, budget: Budget, model: str, train_timesteps: int = 1000,
               offset: int = 0, profile: Any = None) -> BudgetFit:
    """The space of `choices` for `budget` on `model`'s MACs (its config only; no weights), or
    on `profile` (a `LatencyProfile`: a wall-clock budget)."""
    profile = profile or count_macs(load_unet_config(model))
    limit = profile.ceiling(budget, choices.t_ref)
    if choices.kind == "segments":
        fit = fit_space(profile, choices.t_ref, limit, choices.branches, choices.intervals,
                        choices.segments)
    else:
        fit = fit_placed(profile, choices.t_ref, limit, choices.kind, choices.branches,
                         choices.steps, train_timesteps, offset)
    return BudgetFit(budget, limit, profile.full, fit, profile)


def summarize_space(config: StudyConfig | None, choices: SpaceChoices, n_samples: int = 0,
                    seed: int = 0, budget: str | None = None, model: str | None = None,
                    cost: str | None = None, batch_size: int = 64, device: str | None = None,
                    ) -> SpaceSummary:
    """The summary of `choices`, with `n_samples` candidates drawn uniformly (seeded).

    The cost range needs the model's MACs, so it is computed only when asked (`budget`, e.g.
    "3G" or "2.5x") or needed (auto choices take the config's budget); `model` overrides the
    config's. A placed (timestep / hybrid) space reads the model's scheduler config for its
    timesteps whenever a model is known. `cost` "latency" (default: the config's `cost`) prices
    it by the model's latency profile at `batch_size` on `device` (cached, else measured: the
    model is loaded then).
    """
    from flexopt.search.config import check_cost

    cost = check_cost(cost or (config.cost if config else None) or "macs")
    budget_ = Budget.parse(budget) if budget else (
        config.budget if config and choices.auto else None)
    model = model or (config.model if config else None)
    placed = choices.kind != "segments"
    total, offset = _timesteps(model) if placed and model else (1000, 0)
    fit = None
    if budget_ is not None:
        if not model:
            raise FlexoptError(NEEDS_MODEL)
        budget_.check_unit(cost)
        profile = None
        if cost == "latency":
            from flexopt.metrics.latency import profile_model

            guidance = config.guidance_scale if config and config.guidance_scale else 7.5
            profile = profile_model(
                model, device=device, batch_size=batch_size,
                sampler=config.sampler if config else "ddim", guidance_scale=guidance,
                branches=() if choices.kind == "timesteps" else choices.branches).profile
        fit = fit_budget(choices, budget_, model, total, offset, profile)
        space = fit.fit.space
    else:
        space = choices.space(total, offset)
    rng = random.Random(seed)
    samples = [space.sample(rng) for _ in range(n_samples)]
    source = None if config is None else f"{config.source}"
    return SpaceSummary(space, samples, source, model, fit, choices.auto)

"""DDIM, PLMS and DPM-Solver++ over any subsequence of a base timestep grid.

Why our own update rules: null steps make the active timesteps non-uniform, and diffusers'
`DDIMScheduler` / `PNDMScheduler` only step on their own uniform grid (SPEC §1). The rules here are
diffusers' formulas, written once over explicit noise levels, so that on the all-full grid they
reproduce the diffusers schedulers exactly.

The grid of `n` slots is whatever the sampler's diffusers scheduler, built from the pipeline's
scheduler config, uses for `n` inference steps (`grid`): its timesteps, and the noise level where a
step from each slot lands. A step from active slot `i` whose next active slot is `j` lands where the
step from slot `j - 1` would have landed, i.e. it jumps over the null slots in between.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from flexopt.errors import FlexoptError
from flexopt.schedule import SAMPLERS, Schedule
from flexopt.space import StepType

# Scheduler classes whose config describes a discrete variance-preserving noise schedule
# (betas over `num_train_timesteps`): we read the noise schedule from it and sample our own way.
SUPPORTED_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "LMSDiscreteScheduler",
    "UniPCMultistepScheduler",
)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True, eq=False)
class Grid:
    """The base grid: each slot's model timestep, noise level, and where a step from it lands.

    Levels are 0-d float32 tensors: `alpha_bar` for DDIM/PLMS, `sigma` for DPM-Solver.
    """

    timesteps: tuple[int, ...]
    starts: tuple[torch.Tensor, ...]
    ends: tuple[torch.Tensor, ...]

    def __len__(self) -> int:
        return len(self.timesteps)


@dataclass(frozen=True, eq=False)
class Step:
    """One U-Net call of a schedule on the grid.

    `branch`: for a partial step, its branch; for a full step, the branch the following partial
    steps use (the executor keeps that feature), or None. `order`: the DPM-Solver order (the
    segment's interval).
    """

    slot: int
    timestep: int
    start: torch.Tensor
    end: torch.Tensor
    kind: StepType
    branch: int | None = None
    order: int = 1


ModelFn = Callable[[torch.Tensor, Step], torch.Tensor]


def check_scheduler(scheduler: Any) -> Mapping[str, Any]:
    """The config of a supported scheduler (or a config mapping); raise naming the allowed ones."""
    config = getattr(scheduler, "config", scheduler)
    name = type(scheduler).__name__ if hasattr(scheduler, "config") else config.get("_class_name")
    if name is not None and name not in SUPPORTED_SCHEDULERS:
        raise FlexoptError(
            f"scheduler type {name} is not supported; allowed: {', '.join(SUPPORTED_SCHEDULERS)}"
        )
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        allowed = ", ".join(PREDICTION_TYPES)
        raise FlexoptError(f"prediction_type {prediction!r} is not supported; allowed: {allowed}")
    if config.get("thresholding", False):
        raise FlexoptError("scheduler thresholding=True is not supported; allowed: False")
    return config


def plan(grid: Grid, schedule: Schedule) -> list[Step]:
    """The U-Net calls of `schedule` on `grid` (null slots are jumped over)."""
    if len(grid) != schedule.grid_length:
        raise ValueError(f"grid has {len(grid)} slots, schedule needs {schedule.grid_length}")
    kinds = schedule.step_types()
    branches = schedule.slot_branches()
    L = schedule.segment_length
    active = [i for i, k in enumerate(kinds) if k != StepType.NULL]
    steps = []
    for n, i in enumerate(active):
        nxt = active[n + 1] if n + 1 < len(active) else len(grid)
        if kinds[i] == StepType.FULL:
            follows = i + 1 < len(kinds) and kinds[i + 1] == StepType.PARTIAL
            branch = branches[i + 1] if follows else None
        else:
            branch = branches[i]
        steps.append(
            Step(
                slot=i,
                timestep=grid.timesteps[i],
                start=grid.starts[i],
                end=grid.ends[nxt - 1],
                kind=kinds[i],
                branch=branch,
                order=schedule.segments[i // L].interval,
            )
        )
    return steps


def _alpha_schedule(scheduler: Any, n: int) -> Grid:
    """Grid of DDIM/PNDM: their timesteps; a step lands at `t - T // n` (diffusers' rule)."""
    try:
        scheduler.set_timesteps(n)
    except ValueError as err:
        raise FlexoptError(f"cannot space {n} steps: {err}") from None
    timesteps = list(dict.fromkeys(int(t) for t in scheduler.timesteps))  # PLMS repeats one
    ratio = scheduler.config.num_train_timesteps // n
    ac, final = scheduler.alphas_cumprod, scheduler.final_alpha_cumprod
    starts = tuple(ac[t] for t in timesteps)
    ends = tuple(ac[t - ratio] if t - ratio >= 0 else final for t in timesteps)
    return Grid(tuple(timesteps), starts, ends)


class DDIMSampler:
    """Deterministic DDIM (eta 0), as `DDIMScheduler.step`, between arbitrary grid points."""

    name = "ddim"

    def __init__(self, config: Mapping[str, Any]) -> None:
        from diffusers import DDIMScheduler

        self.scheduler = DDIMScheduler.from_config(config)
        self.prediction_type = self.scheduler.config.prediction_type
        self.clip = self.scheduler.config.clip_sample
        self.clip_range = self.scheduler.config.clip_sample_range

    def grid(self, n: int) -> Grid:
        return _alpha_schedule(self.scheduler, n)

    def update(
        self, x: torch.Tensor, out: torch.Tensor, a_t: torch.Tensor, a_prev: torch.Tensor
    ) -> torch.Tensor:
        beta_t = 1 - a_t
        if self.prediction_type == "epsilon":
            x0 = (x - beta_t ** (0.5) * out) / a_t ** (0.5)
            eps = out
        elif self.prediction_type == "sample":
            x0 = out
            eps = (x - a_t ** (0.5) * x0) / beta_t ** (0.5)
        else:  # v_prediction
            x0 = (a_t**0.5) * x - (beta_t**0.5) * out
            eps = (a_t**0.5) * out + (beta_t**0.5) * x
        if self.clip:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        return a_prev ** (0.5) * x0 + (1 - a_prev) ** (0.5) * eps

    def run(self, x: torch.Tensor, steps: Sequence[Step], model: ModelFn) -> torch.Tensor:
        for step in steps:
            x = self.update(x, model(x, step), step.start, step.end)
        return x


class PLMSSampler:
    """PLMS as diffusers' `PNDMScheduler(skip_prk_steps=True)`: a Heun-like first step, then
    linear multistep of order up to 4 on the active steps' outputs.

    The first step's second model call (the corrector) is made at the next active step's timestep
    with that step's type, as DeepCache does (it indexes calls by timestep).
    """

    name = "plms"

    def __init__(self, config: Mapping[str, Any]) -> None:
        from diffusers import PNDMScheduler

        self.scheduler = PNDMScheduler.from_config(config, skip_prk_steps=True)
        self.prediction_type = self.scheduler.config.prediction_type

    def grid(self, n: int) -> Grid:
        return _alpha_schedule(self.scheduler, n)

    def update(
        self, x: torch.Tensor, out: torch.Tensor, a_t: torch.Tensor, a_prev: torch.Tensor
    ) -> torch.Tensor:
        """`PNDMScheduler._get_prev_sample` (formula (9) of the PNDM paper)."""
        beta_t, beta_prev = 1 - a_t, 1 - a_prev
        if self.prediction_type == "v_prediction":
            out = (a_t**0.5) * out + (beta_t**0.5) * x
        elif self.prediction_type == "sample":
            out = (x - a_t**0.5 * out) / beta_t**0.5
        sample_coeff = (a_prev / a_t) ** (0.5)
        denom = a_t * beta_prev ** (0.5) + (a_t * beta_t * a_prev) ** (0.5)
        return sample_coeff * x - (a_prev - a_t) * out / denom

    def run(self, x: torch.Tensor, steps: Sequence[Step], model: ModelFn) -> torch.Tensor:
        ets: list[torch.Tensor] = []
        for n, step in enumerate(steps):
            out = model(x, step)
            if n == 0 and len(steps) > 1:
                ets.append(out)
                guess = self.update(x, out, step.start, step.end)
                corrector = steps[1]
                out = (model(guess, corrector) + out) / 2
                x = self.update(x, out, step.start, step.end)
                continue
            ets = [*ets[-3:], out]
            if len(ets) == 2:
                out = (3 * ets[-1] - ets[-2]) / 2
            elif len(ets) == 3:
                out = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
            elif len(ets) == 4:
                out = (1 / 24) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
            x = self.update(x, out, step.start, step.end)
        return x


class DPMSolverSampler:
    """Multistep DPM-Solver++ (data prediction, midpoint), as `DPMSolverMultistepScheduler`.

    Each step uses the order of its segment (SPEC §1: the interval), capped by the model outputs
    available; a final step to sigma 0 is first order, as in diffusers.
    """

    name = "dpm-solver"

    def __init__(self, config: Mapping[str, Any]) -> None:
        from diffusers import DPMSolverMultistepScheduler

        self.scheduler = DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_type="midpoint"
        )
        self.prediction_type = self.scheduler.config.prediction_type

    def grid(self, n: int) -> Grid:
        try:
            with warnings.catch_warnings():  # diffusers' numpy-2 `__array__` notice, harmless
                warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
                self.scheduler.set_timesteps(n)
        except ValueError as err:
            raise FlexoptError(f"cannot space {n} steps: {err}") from None
        sigmas = self.scheduler.sigmas
        timesteps = tuple(int(t) for t in self.scheduler.timesteps)
        if len(timesteps) != n:
            raise FlexoptError(f"cannot space {n} DPM-Solver steps: got {len(timesteps)}")
        return Grid(timesteps, tuple(sigmas[:-1]), tuple(sigmas[1:]))

    @staticmethod
    def _alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = 1 / ((sigma**2 + 1) ** 0.5)
        return alpha, sigma * alpha

    def _lambda(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        alpha, s = self._alpha_sigma(sigma)
        return alpha, s, torch.log(alpha) - torch.log(s)

    def data_prediction(self, x: torch.Tensor, out: torch.Tensor, sigma: torch.Tensor):
        alpha, s = self._alpha_sigma(sigma)
        if self.prediction_type == "epsilon":
            return (x - s * out) / alpha
        if self.prediction_type == "sample":
            return out
        return alpha * x - s * out  # v_prediction

    def update(
        self, x: torch.Tensor, m: Sequence[torch.Tensor], levels: Sequence[torch.Tensor], end
    ) -> torch.Tensor:
        """One multistep update of order `len(m)` from `levels[-1]` to `end` (diffusers' rules)."""
        alpha_t, sigma_t, lambda_t = self._lambda(end)
        _, sigma_s0, lambda_s0 = self._lambda(levels[-1])
        h = lambda_t - lambda_s0
        base = (sigma_t / sigma_s0) * x - (alpha_t * (torch.exp(-h) - 1.0)) * m[-1]
        if len(m) == 1:
            return base
        lambda_s1 = self._lambda(levels[-2])[2]
        r0 = (lambda_s0 - lambda_s1) / h
        if len(m) == 2:
            d1 = (1.0 / r0) * (m[-1] - m[-2])
            return base - 0.5 * (alpha_t * (torch.exp(-h) - 1.0)) * d1
        lambda_s2 = self._lambda(levels[-3])[2]
        r1 = (lambda_s1 - lambda_s2) / h
        d1_0, d1_1 = (1.0 / r0) * (m[-1] - m[-2]), (1.0 / r1) * (m[-2] - m[-3])
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1)
        return (
            base
            + (alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0)) * d1
            - (alpha_t * ((torch.exp(-h) - 1.0 + h) / h**2 - 0.5)) * d2
        )

    def run(self, x: torch.Tensor, steps: Sequence[Step], model: ModelFn) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        levels: list[torch.Tensor] = []
        for n, step in enumerate(steps):
            out = model(x, step)
            dtype = out.dtype
            outs = [*outs[-2:], self.data_prediction(x, out, step.start)]
            levels = [*levels[-2:], step.start]
            order = max(1, min(step.order, 3, len(outs)))
            if n == len(steps) - 1 and float(step.end) == 0.0:
                order = 1
            x = self.update(x.to(torch.float32), outs[-order:], levels[-order:], step.end)
            x = x.to(dtype)
        return x


Sampler = DDIMSampler | PLMSSampler | DPMSolverSampler
_SAMPLERS: dict[str, type[DDIMSampler] | type[PLMSSampler] | type[DPMSolverSampler]] = {
    "ddim": DDIMSampler,
    "plms": PLMSSampler,
    "dpm-solver": DPMSolverSampler,
}
assert tuple(_SAMPLERS) == SAMPLERS


def make_sampler(name: str, scheduler: Any) -> Sampler:
    """The sampler `name` over the noise schedule of `scheduler` (an instance or its config)."""
    if name not in _SAMPLERS:
        raise FlexoptError(f"sampler {name!r} is not supported; allowed: {', '.join(SAMPLERS)}")
    return _SAMPLERS[name](check_scheduler(scheduler))

"""The update rules: DDIM, PLMS and DPM-Solver++ over explicit noise levels.

diffusers' formulas, written once over the levels of a `flexopt.run.grid.Grid`, so that on the
all-full grid they reproduce `DDIMScheduler`, `PNDMScheduler` (PLMS) and
`DPMSolverMultistepScheduler` exactly, and on a grid with null slots they take the longer jump.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from flexopt.errors import FlexoptError
from flexopt.run.grid import (
    Grid,
    ModelFn,
    Step,
    alpha_grid,
    alpha_grid_placed,
    check_scheduler,
    check_timesteps,
)
from flexopt.space.schedule import SAMPLERS, Schedule


@dataclass
class SamplerState:
    """What a multistep sampler remembers between calls of one run."""

    ets: list[torch.Tensor] = field(default_factory=list)  # past model outputs (DPM: x0 preds)
    levels: list[torch.Tensor] = field(default_factory=list)  # their noise levels (DPM)
    sample: torch.Tensor | None = None  # PLMS: the sample before the predictor step

    def copy(self, device: torch.device | str | None = None) -> SamplerState:
        """A copy whose tensors are new, so later steps of the run it came from cannot change
        it. Model outputs and the sample go to `device` (default: theirs); noise levels stay
        where the grid keeps them, so the updates compute them on the same device as ever."""

        def clone(t: torch.Tensor, to: torch.device | str | None) -> torch.Tensor:
            return t.detach().to(to or t.device, copy=True)

        return SamplerState([clone(t, device) for t in self.ets],
                            [clone(t, None) for t in self.levels],
                            None if self.sample is None else clone(self.sample, device))

    @property
    def nbytes(self) -> int:
        tensors = [*self.ets, *self.levels, *([self.sample] if self.sample is not None else [])]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True, eq=False)
class Resume:
    """Where a run starts instead of at the beginning: before U-Net call `call`, with the
    latents and sampler history a run from the start has there (shared-prefix reuse)."""

    call: int
    sample: torch.Tensor
    state: SamplerState

    @property
    def nbytes(self) -> int:
        return self.sample.numel() * self.sample.element_size() + self.state.nbytes

    def copy(self, device: torch.device | str | None = None) -> Resume:
        """A copy with new tensors (on `device`, default theirs), e.g. to keep in CPU memory."""
        sample = self.sample.detach().to(device or self.sample.device, copy=True)
        return Resume(self.call, sample, self.state.copy(device))


# Called at each segment boundary a run reaches: (segments done, the Resume for that point).
BoundaryFn = Callable[[int, Resume], None]


class BaseSampler:
    """One sampler's contract: the U-Net calls of a plan, and the update after each call."""

    name = ""

    def grid(self, n: int) -> Grid:
        raise NotImplementedError

    def placed_grid(self, timesteps: Sequence[int]) -> Grid:
        """The grid of a placed-step schedule: one slot per given timestep."""
        raise NotImplementedError

    def grid_for(self, schedule: Schedule) -> Grid:
        """The grid `schedule` runs on: its own timesteps, or the sampler's `N·L` spacing."""
        if schedule.timesteps is not None:
            return self.placed_grid(schedule.timesteps)
        return self.grid(schedule.grid_length)

    def calls(self, steps: Sequence[Step]) -> list[Step]:
        """The U-Net calls that run `steps` (one per step unless the sampler adds some)."""
        return list(steps)

    def step(self, state: SamplerState, calls: Sequence[Step], i: int, x, out) -> torch.Tensor:
        raise NotImplementedError

    def run(self, x: torch.Tensor, steps: Sequence[Step], model: ModelFn) -> torch.Tensor:
        """Sample without a pipeline: `model(x, step)` for each call, then its update."""
        calls, state = self.calls(steps), SamplerState()
        for i, call in enumerate(calls):
            x = self.step(state, calls, i, x, model(x, call))
        return x


class DDIMSampler(BaseSampler):
    """Deterministic DDIM (eta 0), as `DDIMScheduler.step`, between arbitrary grid points."""

    name = "ddim"

    def __init__(self, config: Mapping[str, Any]) -> None:
        from diffusers import DDIMScheduler

        self.scheduler = DDIMScheduler.from_config(config)
        self.prediction_type = self.scheduler.config.prediction_type
        self.clip = self.scheduler.config.clip_sample
        self.clip_range = self.scheduler.config.clip_sample_range

    def grid(self, n: int) -> Grid:
        return alpha_grid(self.scheduler, n)

    def placed_grid(self, timesteps: Sequence[int]) -> Grid:
        return alpha_grid_placed(self.scheduler, timesteps)

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

    def step(self, state: SamplerState, calls: Sequence[Step], i: int, x, out) -> torch.Tensor:
        """The update after U-Net call `i` of `calls` (DDIM needs no history)."""
        return self.update(x, out, calls[i].start, calls[i].end)


class PLMSSampler(BaseSampler):
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
        return alpha_grid(self.scheduler, n)

    def placed_grid(self, timesteps: Sequence[int]) -> Grid:
        return alpha_grid_placed(self.scheduler, timesteps)

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

    def calls(self, steps: Sequence[Step]) -> list[Step]:
        """The first step's corrector call repeats the second step (PNDM's repeated timestep)."""
        return [steps[0], *steps[1:2], *steps[1:]] if len(steps) > 1 else list(steps)

    def step(self, state: SamplerState, calls: Sequence[Step], i: int, x, out) -> torch.Tensor:
        """`PNDMScheduler.step_plms` after call `i`: call 0 predicts, call 1 corrects it.

        A run that starts later (img2img `strength`) has no predictor: its first step is first
        order, and a start at the corrector's slot makes that call a no-op (nothing to correct).
        """
        first = calls[0]
        if i == 0 and len(calls) > 1:
            state.ets.append(out)
            state.sample = x
            return self.update(x, out, first.start, first.end)
        if i == 1:
            if state.sample is None:
                return x
            x, out, state.sample = state.sample, (out + state.ets[-1]) / 2, None
            return self.update(x, out, first.start, first.end)
        ets = state.ets = [*state.ets[-3:], out]
        if len(ets) == 2:
            out = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            out = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        elif len(ets) == 4:
            out = (1 / 24) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
        return self.update(x, out, calls[i].start, calls[i].end)


class DPMSolverSampler(BaseSampler):
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

    def placed_grid(self, timesteps: Sequence[int]) -> Grid:
        """Sigmas at the placed timesteps (diffusers' `((1 - ᾱ) / ᾱ)^½`), the last step to
        sigma 0 (or to the smallest sigma, as the scheduler's `final_sigmas_type` says)."""
        ac = self.scheduler.alphas_cumprod.to(torch.float64)
        check_timesteps(timesteps, len(ac))
        sigma = ((1 - ac) / ac) ** 0.5
        starts = tuple(sigma[t].to(torch.float32) for t in timesteps)
        final = (sigma[0] if self.scheduler.config.final_sigmas_type == "sigma_min"
                 else torch.zeros((), dtype=torch.float64)).to(torch.float32)
        return Grid(tuple(timesteps), starts, (*starts[1:], final))

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

    def step(self, state: SamplerState, calls: Sequence[Step], i: int, x, out) -> torch.Tensor:
        """The multistep update after call `i`, of the segment's order (history permitting)."""
        call = calls[i]
        dtype = out.dtype
        state.ets = [*state.ets[-2:], self.data_prediction(x, out, call.start)]
        state.levels = [*state.levels[-2:], call.start]
        order = max(1, min(call.order, 3, len(state.ets)))
        if i == len(calls) - 1 and float(call.end) == 0.0:
            order = 1
        x = self.update(x.to(torch.float32), state.ets[-order:], state.levels[-order:], call.end)
        return x.to(dtype)


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

"""`FlexScheduler`: a diffusers scheduler running a schedule's active steps with exact DDIM, PLMS
and DPM-Solver++ updates over any subsequence of a base timestep grid.

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
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from flexopt.errors import FlexoptError
from flexopt.space.schedule import SAMPLERS, Schedule
from flexopt.space.steps import StepType

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
    steps use (the executor keeps that feature), or None. `keep`: for a full step, the branches
    of all partial steps up to the next full step (placed-step schedules may mix branches there;
    in a segment it is `(branch,)`). `order`: the DPM-Solver order (the segment's interval).
    """

    slot: int
    timestep: int
    start: torch.Tensor
    end: torch.Tensor
    kind: StepType
    branch: int | None = None
    order: int = 1
    keep: tuple[int, ...] = ()  # a full step: every branch the partial steps after it use


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
    orders = schedule.slot_orders()
    active = [i for i, k in enumerate(kinds) if k != StepType.NULL]
    steps = []
    for n, i in enumerate(active):
        nxt = active[n + 1] if n + 1 < len(active) else len(grid)
        keep: tuple[int, ...] = ()
        if kinds[i] == StepType.FULL:
            follows = i + 1 < len(kinds) and kinds[i + 1] == StepType.PARTIAL
            branch = branches[i + 1] if follows else None
            run = []
            for j in range(i + 1, len(kinds)):
                if kinds[j] == StepType.FULL:
                    break
                if kinds[j] == StepType.PARTIAL:
                    run.append(branches[j])
            keep = tuple(sorted(set(run)))
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
                order=orders[i],
                keep=keep,
            )
        )
    return steps


def _check_timesteps(timesteps: Sequence[int], total: int) -> None:
    bad = [t for t in timesteps if not 0 <= t < total]
    if bad:
        raise FlexoptError(f"timestep {bad[0]} is outside the model's training timesteps; "
                           f"allowed: 0..{total - 1}")


def _alpha_placed(scheduler: Any, timesteps: Sequence[int]) -> Grid:
    """Grid of placed steps for DDIM/PLMS: a step lands at the next placed timestep, the last
    one where the sampler's last step lands (`final_alpha_cumprod`)."""
    _check_timesteps(timesteps, scheduler.config.num_train_timesteps)
    ac = scheduler.alphas_cumprod
    starts = tuple(ac[t] for t in timesteps)
    ends = (*starts[1:], scheduler.final_alpha_cumprod)
    return Grid(tuple(timesteps), starts, ends)


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
        return _alpha_schedule(self.scheduler, n)

    def placed_grid(self, timesteps: Sequence[int]) -> Grid:
        return _alpha_placed(self.scheduler, timesteps)

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
        return _alpha_schedule(self.scheduler, n)

    def placed_grid(self, timesteps: Sequence[int]) -> Grid:
        return _alpha_placed(self.scheduler, timesteps)

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
        _check_timesteps(timesteps, len(ac))
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


class FlexScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler whose `timesteps` are a schedule's active steps (SPEC §4).

    Built from a pipeline's scheduler (its noise schedule, spacing and prediction type) and a
    schedule: `FlexScheduler.build(pipe.scheduler, schedule)`. `step()` is the exact DDIM / PLMS /
    DPM-Solver++ update over the non-uniform grid (a null step is a longer jump). The schedule fixes
    the steps: `set_timesteps` accepts only the schedule's `t_ref`. PLMS repeats its second
    timestep, as `PNDMScheduler` does (the first step's corrector call). The U-Net hook asks
    `current_call` which step (and so which step type and branch) the next U-Net call serves.
    """

    order = 1
    _compatibles: ClassVar[list[str]] = []

    @register_to_config
    def __init__(self, schedule: dict[str, Any] | None = None, base: dict[str, Any] | None = None):
        if schedule is None or base is None:
            raise FlexoptError(
                "FlexScheduler needs a schedule and the pipeline's scheduler config; allowed: "
                "FlexScheduler.build(pipe.scheduler, schedule)"
            )
        self.schedule = Schedule.from_dict(schedule)
        # The base scheduler's settings stay readable (`config.num_train_timesteps`, ...), as
        # pipelines read them.
        self.register_to_config(
            **{k: v for k, v in base.items() if not k.startswith("_") and k not in ("schedule",)}
        )
        self.sampler = make_sampler(self.schedule.sampler, base)
        self.steps = plan(self.sampler.grid_for(self.schedule), self.schedule)
        self.calls = self.sampler.calls(self.steps)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = len(self.steps)
        self.timesteps = torch.tensor([c.timestep for c in self.calls], dtype=torch.long)
        self._all_timesteps = self.timesteps
        self._state = SamplerState()
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._resume: Resume | None = None
        self._boundaries = self._find_boundaries()
        self.on_boundary: BoundaryFn | None = None

    @classmethod
    def build(cls, scheduler: Any, schedule: Schedule) -> FlexScheduler:
        """The scheduler running `schedule` on the noise schedule of `scheduler` (or a config)."""
        if isinstance(scheduler, FlexScheduler):
            base = dict(scheduler.config.base)
        elif hasattr(scheduler, "config"):
            base = {**scheduler.config, "_class_name": type(scheduler).__name__}
        else:
            base = dict(scheduler)
        return cls(schedule=schedule.to_dict(), base=base)

    # ------------------------------------------------------------ shared-prefix reuse
    def boundaries(self) -> dict[int, int]:
        """{call index: segments done before it} at each segment boundary (see
        `_find_boundaries`)."""
        return dict(self._boundaries)

    def _find_boundaries(self) -> dict[int, int]:
        """{call index: segments done before it} for each segment boundary after the first
        segment: the first call at slot `j·L` (always full), so the state there is only the
        latents and the sampler's history. The last segment's end is not one (nothing to run).
        A placed-step schedule has no segments, so none."""
        if self.schedule.is_placed:
            return {}
        L = self.schedule.segment_length
        out: dict[int, int] = {}
        for c in range(1, len(self.calls)):
            slot = self.calls[c].slot
            if slot % L == 0 and self.calls[c - 1].slot != slot:
                out[c] = slot // L
        return out

    def resume_at(self, resume: Resume | None) -> None:
        """Make the next run (from `set_timesteps`) start at `resume` (None: at the start).

        The run's timesteps are the calls from `resume.call` on; its first U-Net input and
        first update take `resume.sample` in place of the pipeline's initial noise."""
        if resume is not None and resume.call not in self._boundaries:
            raise FlexoptError(
                f"cannot resume at U-Net call {resume.call}; allowed: a segment boundary "
                f"({', '.join(map(str, self._boundaries)) or 'none in this schedule'})"
            )
        self._resume = resume

    def start_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """The sample the run's current call takes: `sample`, or at the first call of a resumed
        run the stored latents (repeated as the pipeline batched its own, e.g. guidance's 2x)."""
        resume = self._resume
        if resume is None or self._step_index is not None:
            return sample
        stored = resume.sample.to(sample.device, sample.dtype)
        if sample.shape[1:] != stored.shape[1:] or sample.shape[0] % stored.shape[0]:
            raise FlexoptError(
                f"the pipeline's latents {tuple(sample.shape)} do not match the stored prefix "
                f"state {tuple(stored.shape)}; allowed: the batch the state was stored for"
            )
        return stored.repeat(sample.shape[0] // stored.shape[0], *[1] * (stored.dim() - 1))

    # ------------------------------------------------------------ what pipelines call
    def __len__(self) -> int:
        return self.config.num_train_timesteps

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.sampler.scheduler.alphas_cumprod

    @property
    def step_index(self) -> int | None:
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at call `begin_index` (img2img `strength`); the first executed call is full."""
        self._begin_index = begin_index

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        """Start a new run on the schedule's steps; `num_inference_steps` must be its `t_ref`."""
        t_ref = self.schedule.t_ref
        if timesteps is not None or sigmas is not None:
            raise FlexoptError(
                "custom timesteps / sigmas cannot run with a flexopt schedule; allowed: "
                f"num_inference_steps={t_ref} (the schedule fixes the steps)"
            )
        if num_inference_steps is not None and num_inference_steps != t_ref:
            raise FlexoptError(
                f"num_inference_steps {num_inference_steps} disagrees with the schedule's t_ref "
                f"{t_ref}; allowed: {t_ref}"
            )
        resume = self._resume
        first = 0 if resume is None else resume.call
        self.timesteps = self._all_timesteps[first:].to(device)
        self._state = SamplerState()  # a resumed run's history: at its first step
        self._step_index = None
        self._begin_index = None if resume is None else first

    def scale_model_input(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return sample  # variance-preserving samplers take the sample as it is

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """`x_t` of the forward process (img2img / inpaint), as the base sampler adds noise."""
        return self.sampler.scheduler.add_noise(original_samples, noise, timesteps)

    def index_for_timestep(self, timestep: torch.Tensor | int) -> int:
        matches = (self.timesteps == torch.as_tensor(timestep).to(self.timesteps.device)).nonzero()
        if len(matches) == 0:
            raise FlexoptError(
                f"timestep {int(timestep)} is not one of the schedule's active steps; allowed: "
                f"{', '.join(str(int(t)) for t in dict.fromkeys(self.timesteps.tolist()))}"
            )
        return int(matches[0])

    def current_call(self, timestep: torch.Tensor | int) -> tuple[int, Step]:
        """(index, step) of the U-Net call the pipeline is making now, at `timestep`."""
        index = self._step_index
        if index is None:
            index = self._begin_index
        if index is None:
            index = self.index_for_timestep(timestep)
        if index >= len(self.calls):
            raise FlexoptError(
                f"the pipeline made more than the schedule's {len(self.calls)} U-Net calls; "
                "allowed: one call per scheduler step"
            )
        return index, self.calls[index]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | int,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """The sampler's update after the current call; deterministic (`eta` must be 0)."""
        if eta:
            raise FlexoptError(f"eta {eta} is not supported; allowed: 0 (deterministic sampling)")
        if use_clipped_model_output:  # silently ignoring it would sample unlike diffusers
            raise FlexoptError(
                "use_clipped_model_output=True is not supported; allowed: False (to avoid "
                "clipping's drift, set clip_sample=False in the scheduler config)"
            )
        index, _ = self.current_call(timestep)
        if self._resume is not None and self._step_index is None:
            self._state = self._resume.state.copy(sample.device)
        sample = self.start_sample(sample)
        prev = self.sampler.step(self._state, self.calls, index, sample, model_output)
        self._step_index = index + 1
        done = self._boundaries.get(index + 1)
        if self.on_boundary is not None and done is not None:
            # live tensors: the receiver copies what it keeps (`Resume.copy`)
            self.on_boundary(done, Resume(index + 1, prev, self._state))
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

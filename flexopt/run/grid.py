"""The base grid of a schedule and the plan of its active steps.

The grid of `n` slots is whatever the sampler's diffusers scheduler, built from the pipeline's
scheduler config, uses for `n` inference steps: its timesteps, and the noise level where a step
from each slot lands. A step from active slot `i` whose next active slot is `j` lands where the
step from slot `j - 1` would have landed, i.e. it jumps over the null slots in between.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from flexopt.errors import FlexoptError
from flexopt.space.schedule import Schedule
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


def check_timesteps(timesteps: Sequence[int], total: int) -> None:
    bad = [t for t in timesteps if not 0 <= t < total]
    if bad:
        raise FlexoptError(f"timestep {bad[0]} is outside the model's training timesteps; "
                           f"allowed: 0..{total - 1}")


def alpha_grid_placed(scheduler: Any, timesteps: Sequence[int]) -> Grid:
    """Grid of placed steps for DDIM/PLMS: a step lands at the next placed timestep, the last
    one where the sampler's last step lands (`final_alpha_cumprod`)."""
    check_timesteps(timesteps, scheduler.config.num_train_timesteps)
    ac = scheduler.alphas_cumprod
    starts = tuple(ac[t] for t in timesteps)
    ends = (*starts[1:], scheduler.final_alpha_cumprod)
    return Grid(tuple(timesteps), starts, ends)


def alpha_grid(scheduler: Any, n: int) -> Grid:
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

"""`FlexScheduler`: a diffusers scheduler running a schedule's active steps with exact DDIM, PLMS
and DPM-Solver++ updates over any subsequence of a base timestep grid.

Why our own update rules: null steps make the active timesteps non-uniform, and diffusers'
`DDIMScheduler` / `PNDMScheduler` only step on their own uniform grid (SPEC §1). The base grid and
the plan of active steps are in `flexopt.run.grid`, the update rules in `flexopt.run.samplers`;
this module is the diffusers-facing scheduler (`SchedulerMixin` + `ConfigMixin`) over them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from flexopt.errors import FlexoptError
from flexopt.run.grid import Step, plan
from flexopt.run.samplers import BoundaryFn, Resume, SamplerState, make_sampler
from flexopt.space.schedule import Schedule


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

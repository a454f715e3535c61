"""The U-Net side of a schedule: `scheduled(pipe, schedule)` (with `enable` / `disable`) swaps in
a `FlexScheduler` and routes the U-Net's calls through a `ScheduleHook`, which runs each one as a
*full* step (filling the feature cache) or a *partial* step with `UNetExecutor` (SPEC §4).

The model's modules are never modified, only its `forward` attribute is set for the `scheduled`
block. How a U-Net is flattened into layers is `flexopt.run.unet_layout`; how a full or partial
call walks them is `flexopt.run.executor`.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from flexopt.errors import FlexoptError
from flexopt.run.executor import UNetExecutor
from flexopt.run.scheduler import FlexScheduler
from flexopt.run.unet_layout import SUPPORTED_UNETS
from flexopt.space.schedule import Schedule
from flexopt.space.steps import StepType


# ------------------------------------------------------------------------ the U-Net hook
@dataclass
class RunStats:
    """What the hooked U-Net ran: calls by step type (`full` / `partial`)."""

    calls: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def nfe(self) -> int:
        return sum(self.calls.values())


_MISSING = object()


class ScheduleHook:
    """The U-Net's `forward` while a schedule is enabled: each call full or partial by the step
    the pipeline's (flexopt) scheduler is on, every model input passed through.

    The feature cache is dropped when a run starts (no scheduler step yet); a partial call with no
    cached feature (the first executed step of img2img) runs full. `unet_kwargs` fill inputs the
    pipeline leaves empty (class labels under `DDPMPipeline`); `on_call` runs after each call.
    """

    def __init__(
        self,
        unet: nn.Module,
        scheduler: FlexScheduler,
        *,
        unet_kwargs: Mapping[str, Any] | None = None,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        self.executor = UNetExecutor(unet)
        for step in scheduler.steps:
            for b in {step.branch, *step.keep} - {None}:  # partial steps, full ones feeding them
                self.executor.check_branch(b)
        self.scheduler = scheduler
        self.unet_kwargs = dict(unet_kwargs or {})
        self.on_call = on_call
        self.stats = RunStats()
        self._signature = inspect.signature(type(unet).forward)
        params = list(self._signature.parameters.values())[1:]  # without `self`
        plain = all(p.kind == p.POSITIONAL_OR_KEYWORD for p in params)
        self._names = tuple(p.name for p in params) if plain else None
        self._output = _output_class(self.executor.conditional)
        self._last: int | None = None
        self.saved_forward: Any = _MISSING
        self.saved_scheduler: Any = None

    def _inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by name. A plain zip when the forward's parameters are all
        positional-or-keyword and the call is unambiguous (the per-step path: `inspect`'s bind
        costs tens of µs a call); otherwise `bind`, which also raises the model's own TypeError."""
        names = self._names
        if (
            names is not None
            and len(args) <= len(names)
            and all(k in names[len(args) :] for k in kwargs)
            and {"sample", "timestep"} <= {*names[: len(args)], *kwargs}
        ):
            return {**dict(zip(names, args, strict=False)), **kwargs}
        bound = self._signature.bind(self.executor.unet, *args, **kwargs)
        return {k: v for k, v in bound.arguments.items() if k != "self"}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inputs = self._inputs(args, kwargs)
        sample, timestep = inputs.pop("sample"), inputs.pop("timestep")
        return_dict = inputs.pop("return_dict", True)
        for key, value in self.unet_kwargs.items():
            if inputs.get(key) is None:
                inputs[key] = value
        if self.scheduler.step_index is None:  # a new run
            self.executor.reset()
            self._last = None
        sample = self.scheduler.start_sample(sample)  # a run resumed from a stored prefix
        index, call = self.scheduler.current_call(timestep)
        if index == self._last:
            raise FlexoptError(
                "the pipeline called the U-Net twice for one scheduler step; allowed: pipelines "
                "that make one U-Net call per step (classifier-free guidance batched)"
            )
        self._last = index
        kind, branch = call.kind, call.branch
        if kind == StepType.PARTIAL and not self.executor.has_cache(branch):
            kind = StepType.FULL  # nothing cached yet: this run started at this step
        if call.kind == StepType.FULL:
            keep = call.keep
        else:  # a partial step run full: nothing cached yet (this run started at this step)
            keep = (branch,) if kind == StepType.FULL and branch else ()
        with torch.no_grad():
            out = self.executor(
                sample, timestep, kind, branch=branch, cache_branches=keep, **inputs
            )
        self.stats.calls[kind.name.lower()] += 1
        if self.on_call is not None:
            self.on_call()
        return self._output(sample=out) if return_dict else (out,)


def _output_class(conditional: bool) -> type:
    """The output dataclass the model's own forward returns."""
    if conditional:
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput
    from diffusers.models.unets.unet_2d import UNet2DOutput

    return UNet2DOutput


def _parts(pipe: Any) -> tuple[nn.Module, Any]:
    """The pipeline's U-Net and scheduler, or a clear error."""
    unet, scheduler = getattr(pipe, "unet", None), getattr(pipe, "scheduler", None)
    if not isinstance(unet, nn.Module) or scheduler is None:
        raise FlexoptError(
            f"pipeline type {type(pipe).__name__} is not supported: it has no U-Net and "
            f"scheduler; allowed: a diffusers pipeline with a {' or '.join(SUPPORTED_UNETS)}"
        )
    return unet, scheduler


def prepare(
    pipe: Any,
    schedule: Schedule,
    *,
    unet_kwargs: Mapping[str, Any] | None = None,
    on_call: Callable[[], None] | None = None,
) -> ScheduleHook:
    """The hook (and its FlexScheduler) that would run `schedule` on `pipe`; installs nothing."""
    unet, scheduler = _parts(pipe)
    if isinstance(vars(unet).get("forward"), ScheduleHook):
        raise FlexoptError(
            "a schedule is already enabled on this pipeline; allowed: one at a time "
            "(leave the `scheduled` block or call `disable` first)"
        )
    flex = FlexScheduler.build(scheduler, schedule)
    return ScheduleHook(unet, flex, unet_kwargs=unet_kwargs, on_call=on_call)


def enable(
    pipe: Any,
    schedule: Schedule,
    *,
    unet_kwargs: Mapping[str, Any] | None = None,
    on_call: Callable[[], None] | None = None,
) -> ScheduleHook:
    """Install `schedule` on `pipe`: its scheduler becomes a `FlexScheduler`, its U-Net's
    forward a `ScheduleHook`. `disable(pipe)` puts the originals back."""
    hook = prepare(pipe, schedule, unet_kwargs=unet_kwargs, on_call=on_call)
    unet, scheduler = _parts(pipe)
    hook.saved_scheduler = scheduler
    hook.saved_forward = vars(unet).get("forward", _MISSING)
    # Straight into the instance dict: DiffusionPipeline.__setattr__ would rewrite its config.
    vars(pipe)["scheduler"] = hook.scheduler
    unet.forward = hook
    return hook


def disable(pipe: Any) -> None:
    """Put back the scheduler and U-Net forward that `enable` replaced (no-op if not enabled)."""
    unet, _ = _parts(pipe)
    hook = vars(unet).get("forward")
    if not isinstance(hook, ScheduleHook):
        return
    if hook.saved_forward is _MISSING:
        del unet.forward
    else:
        unet.forward = hook.saved_forward
    vars(pipe)["scheduler"] = hook.saved_scheduler


@contextmanager
def scheduled(
    pipe: Any,
    schedule: Schedule,
    *,
    unet_kwargs: Mapping[str, Any] | None = None,
    on_call: Callable[[], None] | None = None,
) -> Iterator[ScheduleHook]:
    """`with scheduled(pipe, schedule): pipe(...)` runs `schedule` inside the pipeline's own call;
    on exit (also after an exception) the pipeline is as it was."""
    hook = enable(pipe, schedule, unet_kwargs=unet_kwargs, on_call=on_call)
    try:
        yield hook
    finally:
        disable(pipe)

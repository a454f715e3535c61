"""The latency profile of a model on a device: seconds of a full step, of a partial step of each
branch, and of the fixed part of a pipeline call — measured inside the real pipeline.

Why measured, not counted: MACs miss what a partial step still pays (the sampler update, the
hook, memory traffic of the kept feature, launch overheads), so a schedule at 3x the MACs can run
at 2x the wall-clock (docs/performance.md). A profile prices a schedule in seconds the way
`MacsProfile` prices it in MACs — the same `full` / `partial_cost(b)` interface, so fitting a space,
the feasibility check and the baselines take either.

How: a few short calibration schedules (all full; DeepCache-uniform at interval 2 for each
branch) run through `generate_images`, exactly as a search generates. A callback after every
U-Net call stamps the time, so each gap between two calls is one step: the sampler's update of
the step before and this step's U-Net call. The mean gap of each step kind in a round is its cost
(a schedule's time is a sum of steps: the mean, not the median, adds up); what the steps do not
explain of a call's wall-clock (noise, set-up, decoding, conversion) is `fixed`. Each warm round
gives its own costs; the profile is their median, and the spread over rounds is reported.
"""

from __future__ import annotations

import json
import platform
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from time import perf_counter
from typing import Any, ClassVar

import torch

from flexopt.errors import FlexoptError
from flexopt.run.budget import Budget
from flexopt.run.cost import schedule_cost
from flexopt.run.pipeline import apply_schedule, generate_images
from flexopt.run.scheduler import FlexScheduler
from flexopt.space.schedule import Schedule
from flexopt.space.steps import StepType

FORMAT = "flexopt.latency/1"
CALIBRATION_STEPS = 10  # steps of each calibration schedule (interval 2: half of them partial)


@dataclass(frozen=True)
class LatencyProfile:
    """Seconds of one step of each kind at one batch size, and of a pipeline call's fixed part.

    `full` and `partial` include the sampler's update and the loop around the U-Net call; null
    steps cost nothing (they are never run). `spread` gives, per kind, (max - min) / median of the
    rounds' medians; `key` says what the profile was measured on (see `latency_key`).
    """

    full: float
    partial: tuple[float, ...]  # partial[i]: the step of branch branches[i]
    fixed: float
    batch_size: int
    branches: tuple[int, ...] = ()  # the branches profiled (default: 1 .. len(partial))
    rounds: int = 0
    spread: dict[str, float] = field(default_factory=dict, compare=False)
    key: dict[str, Any] = field(default_factory=dict, compare=False)

    unit: ClassVar[str] = "s"
    name: ClassVar[str] = "latency"

    def __post_init__(self) -> None:
        if not self.branches:
            object.__setattr__(self, "branches", tuple(range(1, len(self.partial) + 1)))
        if len(self.branches) != len(self.partial):
            raise ValueError("a latency profile needs one partial cost per branch")

    @property
    def max_branch(self) -> int:
        return max(self.branches, default=0)

    def partial_cost(self, branch: int) -> float:
        """Seconds of a partial step at `branch`."""
        if branch not in self.branches:
            raise FlexoptError(
                f"branch {branch} is not in the latency profile; allowed: "
                f"{', '.join(map(str, self.branches))} (profile other branches with "
                "`flexopt profile --branches`)")
        return self.partial[self.branches.index(branch)]

    def seconds(self, total_step_seconds: float) -> float:
        """Predicted seconds of one call (a batch) whose steps take `total_step_seconds`."""
        return self.fixed + total_step_seconds

    def ceiling(self, budget: Budget, t_ref: int) -> float:
        """The budget as a maximum avg step cost (seconds per teacher step): a speedup is over
        the teacher's whole call (`fixed + t_ref · full`), so the fixed part counts on both sides;
        seconds are per batch of `batch_size`."""
        budget.check_unit("latency")
        teacher = self.fixed + t_ref * self.full
        total = teacher / budget.speedup if budget.seconds is None else budget.seconds
        if total <= self.fixed:
            raise FlexoptError(
                f"budget {budget} leaves no time for the steps: a call's fixed part alone takes "
                f"{self.fixed:.3g} s per batch of {self.batch_size} (the teacher: {teacher:.3g} "
                "s); allowed: a smaller speedup or more seconds")
        return (total - self.fixed) / t_ref

    def speedup(self, avg: float, t_ref: int) -> float:
        """Predicted wall-clock speedup over the teacher of a schedule costing `avg` per step."""
        return (self.fixed + t_ref * self.full) / (self.fixed + t_ref * avg)

    @staticmethod
    def format(value: float) -> str:
        return f"{value * 1e3:.3g} ms"

    @classmethod
    def describe(cls, avg: float) -> str:
        """An avg cost per step in words: `12.3 ms avg per step`."""
        return f"{avg * 1e3:.3g} ms avg per step"

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self), "partial": list(self.partial),
                "branches": list(self.branches)}

    @classmethod
    def from_json(cls, data: Any) -> LatencyProfile:
        """A profile from its JSON; raise `ValueError` on anything else (a corrupt cache)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a flexopt latency profile")
        partial = tuple(float(p) for p in data["partial"])
        values = [float(data["full"]), *partial, float(data["fixed"])]
        if any(not v >= 0 for v in values) or float(data["full"]) <= 0:
            raise ValueError("a latency profile needs positive step costs")
        branches = tuple(int(b) for b in data.get("branches", range(1, len(partial) + 1)))
        return cls(float(data["full"]), partial, float(data["fixed"]), int(data["batch_size"]),
                   branches, int(data.get("rounds", 0)), dict(data.get("spread", {})),
                   dict(data.get("key", {})))


def device_name(device: torch.device) -> str:
    """What the time depends on: the GPU's name, or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def uses_guidance(generate_kwargs: dict[str, Any]) -> bool:
    """Whether the U-Net runs a doubled batch: prompts with classifier-free guidance above 1."""
    return bool(generate_kwargs.get("prompts")) and generate_kwargs.get("guidance_scale",
                                                                         7.5) > 1


def latency_key(pipe: Any, sampler: str, batch_size: int, guidance: bool,
                branches: Sequence[int]) -> dict[str, Any]:
    """Everything a profile depends on: the U-Net's (and a ControlNet's) config, the pipeline and
    scheduler, the sampler, device, dtype, batch, guidance (it doubles the U-Net's batch), the
    branches profiled, CPU threads and the torch / diffusers versions. Weights do not change the
    time: not hashed."""
    import diffusers

    device = pipe._execution_device
    configs = {name: dict(getattr(pipe, name).config) for name in ("unet", "controlnet")
               if getattr(pipe, name, None) is not None and hasattr(getattr(pipe, name), "config")}
    return {
        "model": json.loads(json.dumps(configs, sort_keys=True, default=str)),
        "pipeline": type(pipe).__name__,
        "scheduler": type(pipe.scheduler).__name__,
        "sampler": sampler,
        "device": str(device.type),
        "device_name": device_name(device),
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "batch_size": batch_size,
        "guidance": guidance,
        "branches": sorted(set(branches)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "format": FORMAT,
    }


def calibration_schedules(branches: Sequence[int], sampler: str,
                          steps: int = CALIBRATION_STEPS) -> list[Schedule]:
    """The all-full schedule and DeepCache-uniform at interval 2 for each branch: every step kind
    runs `steps // 2` times or more per round."""
    return [Schedule.full(steps, sampler)] + [Schedule.uniform(steps, 2, b, sampler)
                                              for b in branches]


class _Stamps:
    """Called after each U-Net call (the hook's `on_call`): the time, after the device is done."""

    def __init__(self, device: torch.device) -> None:
        self.device = device if device.type == "cuda" else None
        self.times: list[float] = []

    def __call__(self) -> None:
        if self.device is not None:
            torch.cuda.synchronize(self.device)  # the model's GPU, not the current one
        self.times.append(perf_counter())


def _kinds(pipe: Any, schedule: Schedule, made: int, batch_size: int) -> list[str]:
    """The step kind of each of the `made` U-Net calls a run of the schedule made: "full" or
    "partial_<b>". A pipeline that starts late (img2img's `strength`) makes the last calls only,
    its first one full (nothing is cached yet)."""
    calls = FlexScheduler.build(pipe.scheduler, schedule).calls
    kinds = ["full" if c.kind == StepType.FULL else f"partial_{c.branch}" for c in calls]
    if made > len(kinds):
        if made % len(kinds) == 0:  # generate_images halved the batch on out-of-memory
            raise FlexoptError(f"a batch of {batch_size} does not fit on the device (it was "
                               "split to run); allowed: a smaller --batch-size")
        raise FlexoptError(f"the pipeline made {made} U-Net calls for a schedule of "
                           f"{len(kinds)}; allowed: one call per scheduler step")
    return ["full", *kinds[len(kinds) - made + 1:]] if made else []


def _step_kinds(schedule: Schedule) -> list[str]:
    """The kind of each step of the schedule (not each call: a sampler's extra calls, PLMS's
    repeated first step, are part of the fixed cost, as the schedule's cost counts steps)."""
    if schedule.steps is not None:
        return ["full" if not s.branch else f"partial_{s.branch}" for s in schedule.steps]
    kinds = []
    for seg in schedule.segments:
        kinds += ["full"] + [f"partial_{seg.branch}"] * (seg.interval - 1)
    return kinds


def time_call(run: Callable[[Callable[[], None]], None], device: torch.device
              ) -> tuple[float, list[float]]:
    """Wall-clock of `run(on_call)` and the time of each U-Net call's end, relative to its
    start (the device synchronised at both ends)."""
    stamps = _Stamps(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = perf_counter()
    run(stamps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return perf_counter() - start, [t - start for t in stamps.times]


def measure_latency(
    pipe: Any, *, sampler: str = "ddim", batch_size: int = 64, rounds: int = 5, warmup: int = 1,
    branches: Sequence[int] = (1, 2, 3), generate_kwargs: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None, seed: int = 0,
) -> LatencyProfile:
    """Measure `pipe`'s latency profile at `batch_size` (see the module's docstring).

    `branches`: the partial-step branches to time. `generate_kwargs`: what `generate_images`
    needs besides the noise (prompts and guidance for a text pipeline, input images, class
    labels). `progress(done, total)` after each timed call.
    """
    from flexopt.run.executor import UNetExecutor

    if rounds < 1 or warmup < 0 or batch_size < 1:
        raise FlexoptError(f"rounds {rounds} / warmup {warmup} / batch size {batch_size} are "
                           "invalid; allowed: >= 1, >= 0, >= 1")
    branches = tuple(sorted(set(branches)))
    executor = UNetExecutor(pipe.unet)
    for b in branches:
        executor.check_branch(b)  # a branch beyond the model: one clear error
    schedules = calibration_schedules(branches, sampler)
    device = pipe._execution_device
    kwargs = dict(generate_kwargs or {})
    guidance = uses_guidance(kwargs)

    def run(schedule: Schedule) -> Callable[[Callable[[], None]], None]:
        scheduled = apply_schedule(pipe, schedule)
        return lambda on_call: generate_images(scheduled, batch_size, seed, batch_size,
                                               progress=on_call, **kwargs)

    rng = random.Random(0)
    per_round: list[dict[str, float]] = []
    total = (warmup + rounds) * len(schedules)
    done = 0
    for r in range(warmup + rounds):
        order = schedules[:]
        rng.shuffle(order)  # a slow drift of a shared machine hits every kind alike
        gaps: dict[str, list[float]] = {}
        fixed: list[float] = []
        timed = []
        for schedule in order:
            seconds, ends = time_call(run(schedule), device)
            kinds = _kinds(pipe, schedule, len(ends), batch_size)
            for kind, a, b in zip(kinds[1:], ends, ends[1:], strict=False):
                gaps.setdefault(kind, []).append(b - a)
            timed.append((seconds, schedule, len(ends)))
            done += 1
            if progress is not None:
                progress(done, total)
        if r < warmup:
            continue
        # within a round the mean: a schedule's time is a sum of steps, and a sum follows the
        # mean, not the median, of a right-skewed step time; across rounds the median
        medians = {kind: statistics.fmean(v) for kind, v in gaps.items()}
        for seconds, schedule, made in timed:  # the steps run (a late start: the last ones)
            steps = _step_kinds(schedule)[-made:] if made else []
            fixed.append(seconds - sum(medians[k] for k in steps))
        medians["fixed"] = statistics.median(fixed)
        per_round.append(medians)
    rows = [LatencyProfile(m["full"], tuple(m[f"partial_{b}"] for b in branches), m["fixed"],
                           batch_size, branches, 1) for m in per_round]
    key = latency_key(pipe, sampler, batch_size, guidance, branches)
    return median_profile(rows, key)


def median_profile(rounds: Sequence[LatencyProfile], key: dict[str, Any] | None = None
                   ) -> LatencyProfile:
    """The median of per-round profiles, each cost separately, with its spread over them
    ((max - min) / median). Also how a benchmark combines profile rounds interleaved with its
    own measurements, so that both see the same drift of a shared machine."""
    first = rounds[0]

    def costs(p: LatencyProfile) -> dict[str, float]:
        return {"full": p.full, "fixed": p.fixed,
                **{f"partial_{b}": c for b, c in zip(p.branches, p.partial, strict=True)}}

    table = [costs(p) for p in rounds]
    estimate = {k: statistics.median(m[k] for m in table) for k in table[0]}
    spread = {k: (max(m[k] for m in table) - min(m[k] for m in table)) / estimate[k]
              if estimate[k] > 0 else 0.0 for k in estimate}
    return LatencyProfile(
        estimate["full"], tuple(estimate[f"partial_{b}"] for b in first.branches),
        max(0.0, estimate["fixed"]), first.batch_size, first.branches,
        sum(p.rounds for p in rounds), spread, first.key if key is None else key)


def predict_seconds(profile: LatencyProfile, schedule: Schedule) -> float:
    """Predicted wall-clock of one call (a batch of `profile.batch_size`) running `schedule`."""
    return profile.seconds(schedule_cost(schedule, profile).avg_macs * schedule.t_ref)


def summary_rows(profile: LatencyProfile) -> Sequence[tuple[str, float, float]]:
    """(kind, seconds, spread) rows for printing."""
    rows = [("full", profile.full, profile.spread.get("full", 0.0))]
    rows += [(f"partial b={b}", s, profile.spread.get(f"partial_{b}", 0.0))
             for b, s in zip(profile.branches, profile.partial, strict=True)]
    rows.append(("fixed (per call)", profile.fixed, profile.spread.get("fixed", 0.0)))
    return rows

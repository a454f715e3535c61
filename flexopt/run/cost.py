"""MACs of full and partial steps, and the cost of a schedule (SPEC §1 convention).

Why count by running: the MACs of a partial step are whatever the executor runs for it, so we run
the executor itself on a weightless copy of the U-Net on the meta device (an SD-size U-Net in well
under a second) and add up, with forward hooks that exist only on that copy, the multiply-
accumulates of every `Conv2d` and `Linear` call at batch 1. Attention score/value matmuls are
counted separately (SPEC: not part of the MACs, reported if asked).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from flexopt.errors import FlexoptError
from flexopt.models.loading import size_multiple, unet_class
from flexopt.run.budget import format_macs
from flexopt.run.hooks import UNetExecutor
from flexopt.space.schedule import Schedule
from flexopt.space.segment import SearchSpace
from flexopt.space.steps import Candidate, Segment, StepType

if TYPE_CHECKING:
    from flexopt.space.timestep import TimestepSpace

TEXT_TOKENS = 77  # CLIP's sequence length: the cross-attention context of SD-style U-Nets


@dataclass(frozen=True)
class MacsProfile:
    """MACs of one U-Net call at batch 1: a full step and a partial step of each branch."""

    full: int
    partial: tuple[int, ...]  # partial[b - 1]
    attention_full: int = 0  # attention matmuls (not in the MACs), full step
    attention_partial: tuple[int, ...] = ()

    @property
    def max_branch(self) -> int:
        return len(self.partial)

    def partial_macs(self, branch: int) -> int:
        if not 1 <= branch <= self.max_branch:
            raise FlexoptError(
                f"branch {branch} is beyond this model; allowed: 1..{self.max_branch} "
                f"(the maximum is {self.max_branch})"
            )
        return self.partial[branch - 1]

    def to_json(self, attention: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "full_macs": self.full,
            "partial_macs": {str(b): m for b, m in enumerate(self.partial, 1)},
            "max_branch": self.max_branch,
        }
        if attention:
            data["attention_macs"] = {
                "full": self.attention_full,
                "partial": {str(b): m for b, m in enumerate(self.attention_partial, 1)},
            }
        return data


@dataclass(frozen=True)
class ScheduleCost:
    """What a schedule costs: SPEC §1 `total`, `avg MACs = total / t_ref`, NFE, speedup."""

    total_macs: int
    avg_macs: float
    nfe: int
    speedup: float
    full_macs: int
    t_ref: int


def schedule_cost(schedule: Schedule, profile: MacsProfile) -> ScheduleCost:
    """`total = Σ_i [M_full + (k_i - 1) · M_partial(b_i)]` over the schedule's segments; for a
    placed-step schedule, `M_full` per full step plus `M_partial(b)` per partial step."""
    if schedule.steps is not None:
        total = sum(profile.partial_macs(s.branch) if s.branch else profile.full
                    for s in schedule.steps)
    else:
        total = total_macs(schedule.segments, profile)
    avg = total / schedule.t_ref
    return ScheduleCost(total, avg, schedule.nfe, profile.full / avg, profile.full, schedule.t_ref)


def meta_unet(config: Mapping[str, Any]) -> nn.Module:
    """A weightless U-Net of this config on the meta device (no memory, instant)."""
    cls = unet_class(dict(config))
    with torch.device("meta"):
        return cls.from_config(dict(config)).eval()


class _Counter:
    """Forward hooks, on a meta copy only, adding up Conv2d/Linear and attention MACs."""

    def __init__(self, unet: nn.Module) -> None:
        from diffusers.models.attention_processor import Attention

        self.macs = 0
        self.attention = 0
        self.handles = []
        for module in unet.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                self.handles.append(module.register_forward_hook(self._layer))
            elif isinstance(module, Attention):
                self.handles.append(module.register_forward_hook(self._attention, with_kwargs=True))

    def _layer(self, module: nn.Module, args: Any, out: torch.Tensor) -> None:
        per_sample = out.numel() // out.shape[0]
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            self.macs += per_sample * (module.in_channels // module.groups) * k
        else:
            self.macs += per_sample * module.in_features

    def _attention(self, module: nn.Module, args: Any, kwargs: dict[str, Any], out: Any) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        q = hidden.shape[2] * hidden.shape[3] if hidden.ndim == 4 else hidden.shape[1]
        kv = context.shape[1] if context is not None else q
        self.attention += 2 * q * kv * module.to_q.out_features  # QK^T and AV

    def take(self) -> tuple[int, int]:
        out = (self.macs, self.attention)
        self.macs = self.attention = 0
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _inputs(unet: nn.Module, sample_size: int | tuple[int, int] | None) -> dict[str, Any]:
    config = unet.config
    size = sample_size if sample_size is not None else config.sample_size
    if size is None:
        raise FlexoptError("the U-Net config has no sample_size; allowed: pass a sample size")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    blocks = len(config.down_block_types)
    factor = size_multiple(blocks)
    if h % factor or w % factor:
        raise FlexoptError(f"sample size {size} is invalid for this U-Net ({blocks} down blocks); "
                           f"allowed: a multiple of {factor}")
    kwargs: dict[str, Any] = {
        "sample": torch.zeros(1, config.in_channels, h, w, device="meta"),
        "timestep": torch.tensor([500], device="meta"),
    }
    if "cross_attention_dim" in config:  # UNet2DConditionModel (and a ControlNet)
        dim = config.cross_attention_dim
        dim = dim[0] if isinstance(dim, list | tuple) else dim
        kwargs["encoder_hidden_states"] = torch.zeros(1, TEXT_TOKENS, dim, device="meta")
        kwargs.update(_added_inputs(config))
    if getattr(unet, "class_embedding", None) is not None:
        kwargs["class_labels"] = torch.zeros(1, dtype=torch.long, device="meta")
    return kwargs


def _added_inputs(config: Any) -> dict[str, Any]:
    """SDXL's added embeddings (`text_time`: pooled text embedding and 6 micro-conditioning
    time ids), which the U-Net's `add_embedding` projects every call."""
    kind = config.addition_embed_type
    if kind is None:
        return {}
    if kind != "text_time":
        raise FlexoptError(
            f"addition_embed_type {kind!r} is not supported for MACs; allowed: None, 'text_time'"
        )
    pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    added = {
        "text_embeds": torch.zeros(1, pooled, device="meta"),
        "time_ids": torch.zeros(1, 6, device="meta"),
    }
    return {"added_cond_kwargs": added}


def count_macs(
    model: nn.Module | Mapping[str, Any], sample_size: int | tuple[int, int] | None = None
) -> MacsProfile:
    """MACs of a full step and of each branch's partial step, for a U-Net or its config.

    A U-Net instance is only read for its config: counting runs on a meta copy.
    """
    if isinstance(model, nn.Module):
        config = {**model.config, "_class_name": type(model).__name__}
    else:
        config = dict(model)
    unet = meta_unet(config)
    executor = UNetExecutor(unet)
    inputs = _inputs(unet, sample_size)
    sample, timestep = inputs.pop("sample"), inputs.pop("timestep")
    counter = _Counter(unet)
    try:
        with torch.no_grad():
            branches = range(1, executor.max_branch + 1)
            executor(sample, timestep, StepType.FULL, cache_branches=branches, **inputs)
            full, attn_full = counter.take()
            partial, attn_partial = [], []
            for b in branches:
                executor(sample, timestep, StepType.PARTIAL, branch=b, **inputs)
                macs, attn = counter.take()
                partial.append(macs)
                attn_partial.append(attn)
    finally:
        counter.remove()
    return MacsProfile(full, tuple(partial), attn_full, tuple(attn_partial))


def count_controlnet_macs(
    config: Mapping[str, Any], sample_size: int | tuple[int, int] | None = None
) -> int:
    """MACs of one ControlNet call at batch 1 (a `ControlNetModel` config; meta device).

    The ControlNet runs before the U-Net at every executed step, full or partial, so its cost is
    reported beside the U-Net's, not inside a schedule's MACs (SPEC §1 counts the U-Net)."""
    from diffusers import ControlNetModel

    with torch.device("meta"):
        net = ControlNetModel.from_config(dict(config)).eval()
    kwargs = _inputs(net, sample_size)
    h, w = kwargs["sample"].shape[-2:]
    factor = 2 ** (len(net.config.conditioning_embedding_out_channels) - 1)
    channels = net.config.conditioning_channels
    kwargs["controlnet_cond"] = torch.zeros(1, channels, h * factor, w * factor, device="meta")
    counter = _Counter(net)
    try:
        with torch.no_grad():
            net(**kwargs)
        return counter.take()[0]
    finally:
        counter.remove()


# ------------------------------------------------------------------------- budget fitting
def total_macs(segments: Sequence[Segment], profile: MacsProfile) -> int:
    """`Σ_i [M_full + (k_i - 1) · M_partial(b_i)]`; the grid does not enter (null steps cost 0)."""
    return sum(profile.full + (s.interval - 1) * (profile.partial_macs(s.branch)
                                                  if s.interval > 1 else 0) for s in segments)


def candidate_avg_macs(candidate: Candidate, profile: MacsProfile, t_ref: int) -> float:
    """Avg MACs of a candidate of a space with this `t_ref`."""
    return total_macs(candidate.segments, profile) / t_ref


@dataclass(frozen=True)
class CostRange:
    """Avg MACs of a space's candidates: the cheapest, the median of uniform random draws, and
    the heaviest — what shows whether a budget sits inside the space."""

    cheapest: float
    median: float
    heaviest: float

    def __str__(self) -> str:
        return (f"cheapest {format_macs(self.cheapest)} / median {format_macs(self.median)} / "
                f"heaviest {format_macs(self.heaviest)} avg MACs")

    def fits(self, max_avg_macs: float) -> bool:
        """SPEC §1: the cheapest candidate is under the budget and the heaviest reaches 0.9x it."""
        return self.cheapest < max_avg_macs and self.heaviest >= 0.9 * max_avg_macs


def cost_range(space: SearchSpace, profile: MacsProfile, draws: int = 2000) -> CostRange:
    """The space's cost range (a fixed-seed sample for the median, so it prints the same)."""
    heavy = Segment(space.branches[-1], space.intervals[-1])
    heaviest = Candidate((heavy,) * space.segments[-1])
    rng = random.Random(0)
    costs = sorted(candidate_avg_macs(space.sample(rng), profile, space.t_ref)
                   for _ in range(draws))
    return CostRange(candidate_avg_macs(space.lightest(), profile, space.t_ref),
                     costs[len(costs) // 2],
                     candidate_avg_macs(heaviest, profile, space.t_ref))


def fitted_segments(profile: MacsProfile, t_ref: int, max_avg_macs: float,
                    branches: Sequence[int], intervals: Sequence[int]) -> tuple[int, ...]:
    """N-segment choices that put the budget inside the space's cost range.

    Every segment runs one full step, so the most segments a feasible candidate can have is the
    largest `N` whose lightest candidate is under the budget (with interval 1 a choice, that is
    the fewer-step teacher on the `N·L` grid). The fewest is the smallest `N` whose heaviest
    candidate (every segment at the largest interval and branch) still reaches 0.9x the budget:
    fewer segments could not spend it.
    Between them, candidates trade full steps for partial ones at every cost up to the budget.
    """
    total = max_avg_macs * t_ref

    def seg_cost(branch: int, interval: int) -> int:
        return total_macs((Segment(branch, interval),), profile)

    light, heavy = seg_cost(min(branches), min(intervals)), seg_cost(max(branches), max(intervals))
    n_max = math.ceil(total / light) - 1
    if n_max < 1:
        raise FlexoptError(
            f"the budget {format_macs(max_avg_macs)} avg MACs affords not even one segment over "
            f"t_ref {t_ref} (the lightest costs {format_macs(light / t_ref)} avg); allowed: a "
            "budget above that, or a larger t_ref")
    n_min = max(1, min(n_max, math.ceil(0.9 * total / heavy)))
    return tuple(range(n_min, n_max + 1))


@dataclass(frozen=True)
class SpaceFit:
    """A space for a budget and what it costs; `warning` when it cannot come near the budget."""

    space: SearchSpace | TimestepSpace
    costs: CostRange
    suggested: tuple[int, ...]  # the N-segment (or step-count) choices fitted to the budget
    warning: str | None = None


def fit_space(profile: MacsProfile, t_ref: int, max_avg_macs: float,
              branches: Sequence[int] = (1, 2, 3), intervals: Sequence[int] = (1, 2, 3),
              segments: Sequence[int] | None = None) -> SpaceFit:
    """The space for a budget: `segments=None` derives the N-segment choices; explicit ones are
    kept and checked (a warning with the numbers and a suggested `--segments` when the heaviest
    candidate is under 0.9x the budget; an error when even the cheapest is at or over it)."""
    for b in branches:
        profile.partial_macs(b)  # a branch beyond the model: one clear error
    suggested = fitted_segments(profile, t_ref, max_avg_macs, branches, intervals)
    space = SearchSpace(tuple(segments) if segments else suggested, tuple(branches),
                        tuple(intervals), t_ref)
    costs = cost_range(space, profile)
    hint = f"--segments {suggested[0]}-{suggested[-1]}"
    if costs.cheapest >= max_avg_macs:
        raise FlexoptError(
            f"no candidate fits the budget: even the lightest ({space.lightest()}, "
            f"{format_macs(costs.cheapest)} avg MACs) is not under {format_macs(max_avg_macs)}; "
            f"raise the budget or use fewer segments, e.g. {hint}")
    warning = None
    if costs.heaviest < 0.9 * max_avg_macs:
        warning = (
            f"the space cannot come near the budget: its heaviest candidate costs "
            f"{format_macs(costs.heaviest)} avg MACs, under 0.9x the budget "
            f"{format_macs(max_avg_macs)}, so the search cannot spend it; try {hint}")
    return SpaceFit(space, costs, suggested, warning)


# ------------------------------------------------------------- placed-step spaces (issue 16)
def placed_avg_macs(space: TimestepSpace, candidate: Any, profile: MacsProfile) -> float:
    """Avg MACs of a timestep / hybrid candidate (its placed-step schedule's cost)."""
    return schedule_cost(space.schedule(candidate), profile).avg_macs


def fitted_steps(profile: MacsProfile, t_ref: int, max_avg_macs: float, kind: str,
                 branches: Sequence[int] = ()) -> tuple[int, ...]:
    """Step-count choices K for a timestep or hybrid space under a budget.

    All-full K steps cost `K · M_full / t_ref`: `K_full`, the most full steps under the budget,
    is what the budget affords. The timestep space places `K_full - 2 … K_full` steps (fewer
    full steps are rarely better; the search may still take them). The hybrid adds cheap partial
    steps between full ones: from `K_full` up to the teacher's `t_ref` U-Net calls, or fewer
    when even the lightest candidate of that many steps (one full step, the rest partial with
    the smallest branch) is at the budget.
    """
    total = max_avg_macs * t_ref
    k_full = math.ceil(total / profile.full) - 1
    if k_full < 1:
        raise FlexoptError(
            f"the budget {format_macs(max_avg_macs)} avg MACs affords not even one full step over "
            f"t_ref {t_ref} (a full step costs {format_macs(profile.full / t_ref)} avg); allowed: "
            "a budget above that, or a larger t_ref")
    if kind == "timesteps":
        return tuple(range(max(1, k_full - 2), k_full + 1))
    light = min(profile.partial_macs(b) for b in branches)
    k_light = math.ceil((total - profile.full) / light) if light else t_ref
    upper = max(k_full, min(t_ref, k_light))
    return tuple(range(k_full, upper + 1))


def fit_placed(profile: MacsProfile, t_ref: int, max_avg_macs: float, kind: str,
               branches: Sequence[int] = (), steps: Sequence[int] | None = None,
               train_timesteps: int = 1000, offset: int = 0, draws: int = 500) -> SpaceFit:
    """`fit_space` for the timestep and hybrid spaces: `steps=None` derives the K choices
    (`fitted_steps`); explicit ones are kept and checked like explicit N-segment choices."""
    from flexopt.space.timestep import TimestepSpace

    hybrid = kind == "hybrid"
    for b in branches if hybrid else ():
        profile.partial_macs(b)  # a branch beyond the model: one clear error
    suggested = fitted_steps(profile, t_ref, max_avg_macs, kind, branches)
    if suggested[-1] > train_timesteps:
        raise FlexoptError(f"{suggested[-1]} steps exceed the model's {train_timesteps} training "
                           "timesteps; allowed: a smaller t_ref or budget")
    space = TimestepSpace(tuple(steps) if steps else suggested,
                          tuple(branches) if hybrid else (), t_ref, train_timesteps, offset)
    rng = random.Random(0)
    costs = sorted(placed_avg_macs(space, space.sample(rng), profile) for _ in range(draws))
    k_max = space.steps[-1]
    heaviest = k_max * profile.full / t_ref
    cheapest = placed_avg_macs(space, space.lightest(), profile)
    costs_ = CostRange(cheapest, costs[len(costs) // 2], heaviest)
    hint = f"--steps {suggested[0]}-{suggested[-1]}"
    if cheapest >= max_avg_macs:
        raise FlexoptError(
            f"no candidate fits the budget: even the lightest ({space.lightest()}, "
            f"{format_macs(cheapest)} avg MACs) is not under {format_macs(max_avg_macs)}; "
            f"raise the budget or place fewer steps, e.g. {hint}")
    warning = None
    if heaviest < 0.9 * max_avg_macs:
        warning = (f"the space cannot come near the budget: its heaviest candidate costs "
                   f"{format_macs(heaviest)} avg MACs, under 0.9x the budget "
                   f"{format_macs(max_avg_macs)}; try {hint}")
    return SpaceFit(space, costs_, suggested, warning)

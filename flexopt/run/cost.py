"""MACs of full and partial steps, and the cost of a schedule (SPEC §1 convention).

Why count by running: the MACs of a partial step are whatever the executor runs for it, so we run
the executor itself on a weightless copy of the U-Net on the meta device (an SD-size U-Net in well
under a second) and add up, with forward hooks that exist only on that copy, the multiply-
accumulates of every `Conv2d` and `Linear` call at batch 1. Attention score/value matmuls are
counted separately (SPEC: not part of the MACs, reported if asked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from flexopt.errors import FlexoptError
from flexopt.models.loading import size_multiple, unet_class
from flexopt.run.budget import Budget, format_macs
from flexopt.run.executor import UNetExecutor
from flexopt.space.schedule import Schedule
from flexopt.space.steps import Candidate, Segment, StepType

if TYPE_CHECKING:
    from flexopt.space.timestep import TimestepSpace

TEXT_TOKENS = 77  # CLIP's sequence length: the cross-attention context of SD-style U-Nets


@dataclass(frozen=True)
class MacsProfile:
    """MACs of one U-Net call at batch 1: a full step and a partial step of each branch.

    A cost profile: `flexopt.run.latency.LatencyProfile` has the same `full`, `partial_cost`,
    `ceiling`, `speedup` and `format`, in seconds, so every cost function takes either."""

    full: int
    partial: tuple[int, ...]  # partial[b - 1]
    attention_full: int = 0  # attention matmuls (not in the MACs), full step
    attention_partial: tuple[int, ...] = ()

    unit: ClassVar[str] = "MACs"
    name: ClassVar[str] = "macs"

    @property
    def max_branch(self) -> int:
        return len(self.partial)

    def partial_cost(self, branch: int) -> int:
        if not 1 <= branch <= self.max_branch:
            raise FlexoptError(
                f"branch {branch} is beyond this model; allowed: 1..{self.max_branch} "
                f"(the maximum is {self.max_branch})"
            )
        return self.partial[branch - 1]

    partial_macs = partial_cost

    def ceiling(self, budget: Budget, t_ref: int) -> float:
        """The budget as a maximum avg MACs per step."""
        return budget.max_avg_macs(self.full)

    def speedup(self, avg: float, t_ref: int) -> float:
        """MACs speedup over the teacher of a schedule costing `avg` per step."""
        return self.full / avg

    @staticmethod
    def format(value: float) -> str:
        return format_macs(value)

    @classmethod
    def describe(cls, avg: float) -> str:
        """An avg cost per step in words: `3.20G avg MACs`."""
        return f"{format_macs(avg)} avg MACs"

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


class CostProfile(Protocol):
    """What prices a schedule: `MacsProfile` (MACs) or `flexopt.run.latency.LatencyProfile`
    (seconds on a device). Every cost function and the space fitting take either."""

    full: float
    unit: str

    @property
    def max_branch(self) -> int: ...

    def partial_cost(self, branch: int) -> float: ...

    def ceiling(self, budget: Budget, t_ref: int) -> float: ...

    def speedup(self, avg: float, t_ref: int) -> float: ...

    def format(self, value: float) -> str: ...

    def describe(self, avg: float) -> str: ...


@dataclass(frozen=True)
class ScheduleCost:
    """What a schedule costs: SPEC §1 `total`, `avg MACs = total / t_ref`, NFE, speedup."""

    total_macs: int
    avg_macs: float
    nfe: int
    speedup: float
    full_macs: int
    t_ref: int


def schedule_cost(schedule: Schedule, profile: CostProfile) -> ScheduleCost:
    """`total = Σ_i [M_full + (k_i - 1) · M_partial(b_i)]` over the schedule's segments; for a
    placed-step schedule, `M_full` per full step plus `M_partial(b)` per partial step."""
    if schedule.steps is not None:
        total = sum(profile.partial_cost(s.branch) if s.branch else profile.full
                    for s in schedule.steps)
    else:
        total = total_macs(schedule.segments, profile)
    avg = total / schedule.t_ref
    return ScheduleCost(total, avg, schedule.nfe, profile.speedup(avg, schedule.t_ref),
                        profile.full, schedule.t_ref)


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


# ------------------------------------------------------------------------- schedule cost
def total_macs(segments: Sequence[Segment], profile: CostProfile) -> int:
    """`Σ_i [M_full + (k_i - 1) · M_partial(b_i)]`; the grid does not enter (null steps cost 0)."""
    return sum(profile.full + (s.interval - 1) * (profile.partial_cost(s.branch)
                                                  if s.interval > 1 else 0) for s in segments)


def candidate_avg_macs(candidate: Candidate, profile: CostProfile, t_ref: int) -> float:
    """Avg MACs of a candidate of a space with this `t_ref`."""
    return total_macs(candidate.segments, profile) / t_ref


# ------------------------------------------------------------- placed-step spaces (issue 16)
def placed_avg_macs(space: TimestepSpace, candidate: Any, profile: CostProfile) -> float:
    """Avg MACs of a timestep / hybrid candidate (its placed-step schedule's cost)."""
    return schedule_cost(space.schedule(candidate), profile).avg_macs



"""The U-Net side of a schedule: `scheduled(pipe, schedule)` (with `enable` / `disable`) swaps in
a `FlexScheduler` and routes the U-Net's calls through a `ScheduleHook`, which runs each one as a
*full* step (filling the feature cache) or a *partial* step with `UNetExecutor` (SPEC §4).

Why a walker instead of per-block hooks: a partial step with branch `b` must run only `conv_in`, the
down-path layers before position `b`, the up-path layers that consume their skips and `conv_out`
(SPEC §1, DeepCache's mechanism) and cost exactly that. So this module flattens a diffusers U-Net
into its down-path and up-path layers once, and walks the model's own submodules in the order
diffusers' `UNet2DModel.forward` / `UNet2DConditionModel.forward` call them. A full step is the
model's forward (same ops, same order); the model's modules are never modified, only its `forward`
attribute is set for the `scheduled` block.

Branch enumeration: for down block `i` with `R_i` resnets, positions `(i, 0) … (i, R_i)` (position
`R_i` is the downsampler, or a virtual end for the last block); branch `b` is the `b`-th position.
Every down layer yields one skip (plus `conv_in`'s), and the up path consumes them in reverse, so a
partial step with branch `b` recomputes exactly the up layers that consume fresh skips, starting
from the hidden state cached at that point of the up path by the last full step. For 2-resnet blocks
this is DeepCache's `cache_branch_id = b - 1`.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from flexopt.errors import FlexoptError
from flexopt.run.scheduler import FlexScheduler
from flexopt.space.schedule import Schedule
from flexopt.space.steps import StepType

SUPPORTED_UNETS = ("UNet2DModel", "UNet2DConditionModel")
SUPPORTED_DOWN_BLOCKS = (
    "DownBlock2D",
    "AttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "ResnetDownsampleBlock2D",
)
SUPPORTED_UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D", "ResnetUpsampleBlock2D")
# Up blocks whose diffusers forward applies FreeU when it is enabled, and passes `upsample_size`.
_FREEU_UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D")


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer of the down or up path: a resnet (with its attention, if any) or a resampler."""

    module: nn.Module
    attn: nn.Module | None = None
    cross: bool = False  # attn is a transformer taking encoder hidden states
    resample: bool = False  # a downsampler / upsampler rather than a resnet
    takes_temb: bool = False  # a resampler that is a ResnetBlock2D (needs the time embedding)
    block: nn.Module | None = None  # the up block (FreeU parameters live there)
    freeu: bool = False  # its block applies FreeU when enabled
    pass_size: bool = False  # upsampler receives `upsample_size`
    final: bool = False  # in the last up block (diffusers never forwards upsample_size there)


@dataclass(frozen=True, eq=False)
class UNetLayout:
    """The static path structure of a U-Net: which layers a step with each branch runs."""

    down: tuple[Layer, ...]
    up: tuple[Layer, ...]
    n_down: tuple[int, ...]  # n_down[b - 1]: down layers a partial step with branch b runs
    up_start: tuple[int, ...]  # up_start[b - 1]: first up layer a partial step with branch b runs

    @property
    def max_branch(self) -> int:
        return len(self.n_down)

    @classmethod
    def of(cls, unet: nn.Module) -> UNetLayout:
        """Flatten `unet`'s blocks; raise `FlexoptError` for block types we cannot walk."""
        kind = type(unet).__name__
        if not _is_supported_unet(unet):
            raise FlexoptError(
                f"model type {kind} is not supported; allowed: {', '.join(SUPPORTED_UNETS)}"
            )
        down: list[Layer] = []
        position_ops: list[int] = []  # number of down layers before each position
        for block in unet.down_blocks:
            name = type(block).__name__
            if name not in SUPPORTED_DOWN_BLOCKS:
                raise FlexoptError(
                    f"down block type {name} is not supported; "
                    f"allowed: {', '.join(SUPPORTED_DOWN_BLOCKS)}"
                )
            attns = getattr(block, "attentions", None)
            cross = name.startswith("CrossAttn")
            for r, resnet in enumerate(block.resnets):
                position_ops.append(len(down))
                down.append(Layer(resnet, attns[r] if attns is not None else None, cross))
            position_ops.append(len(down))
            for sampler in block.downsamplers or ():
                down.append(Layer(sampler, resample=True, takes_temb=_is_resnet(sampler)))

        up: list[Layer] = []
        n_up_blocks = len(unet.up_blocks)
        for u, block in enumerate(unet.up_blocks):
            name = type(block).__name__
            if name not in SUPPORTED_UP_BLOCKS:
                raise FlexoptError(
                    f"up block type {name} is not supported; "
                    f"allowed: {', '.join(SUPPORTED_UP_BLOCKS)}"
                )
            attns = getattr(block, "attentions", None)
            cross = name.startswith("CrossAttn")
            final = u == n_up_blocks - 1
            freeu = name in _FREEU_UP_BLOCKS
            for r, resnet in enumerate(block.resnets):
                attn = attns[r] if attns is not None else None
                up.append(Layer(resnet, attn, cross, block=block, freeu=freeu, final=final))
            for sampler in block.upsamplers or ():
                up.append(
                    Layer(
                        sampler,
                        resample=True,
                        takes_temb=_is_resnet(sampler),
                        block=block,
                        pass_size=freeu,
                        final=final,
                    )
                )

        up_resnets = [i for i, layer in enumerate(up) if not layer.resample]
        n_skips = len(down) + 1
        if len(up_resnets) != n_skips:
            raise FlexoptError(
                f"{kind}: the up path has {len(up_resnets)} resnets for {n_skips} skips; "
                "allowed: a diffusers U-Net whose up blocks consume every skip"
            )
        # Branch b runs the down layers before position b-1 (0-based); the up resnets consuming
        # the resulting fresh skips 0..n are the last n+1 in execution order.
        n_down = tuple(position_ops[b] for b in range(len(position_ops)))
        up_start = tuple(up_resnets[n_skips - 1 - n] for n in n_down)
        return cls(tuple(down), tuple(up), n_down, up_start)


def _is_supported_unet(unet: nn.Module) -> bool:
    from diffusers import UNet2DConditionModel, UNet2DModel

    return isinstance(unet, UNet2DModel | UNet2DConditionModel)


def _is_resnet(module: nn.Module) -> bool:
    from diffusers.models.resnet import ResnetBlock2D

    return isinstance(module, ResnetBlock2D)


# The model inputs a scheduled call passes through, by U-Net class.
_PIXEL_INPUTS = frozenset({"class_labels"})
_CONDITION_INPUTS = frozenset(
    {
        "encoder_hidden_states",
        "class_labels",
        "timestep_cond",
        "added_cond_kwargs",
        "cross_attention_kwargs",
        "attention_mask",
        "encoder_attention_mask",
        "down_block_additional_residuals",
        "mid_block_additional_residual",
    }
)


def _on_device(
    timestep: torch.Tensor | float | int, sample: torch.Tensor
) -> torch.Tensor | float | int:
    """A host timestep (pipelines that `set_timesteps` without a device: DDPM, DDIM) as a
    batch of it on the sample's device, filled there: the model's own `.to(device)` of a 0-d
    CPU tensor is a blocking copy, one host sync per step. Same values and dtype, so the same
    embedding; on the CPU nothing changes."""
    if (
        sample.device.type == "cpu"
        or not torch.is_tensor(timestep)
        or timestep.device.type != "cpu"
        or timestep.numel() != 1
    ):
        return timestep
    return torch.full(
        (sample.shape[0],), timestep.item(), dtype=timestep.dtype, device=sample.device
    )


def _lora_scale(inputs: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(LoRA scale, inputs without it): `cross_attention_kwargs["scale"]`, as the forward reads."""
    kwargs = inputs.get("cross_attention_kwargs")
    if not kwargs or "scale" not in kwargs:
        return 1.0, inputs
    kwargs = dict(kwargs)
    scale = kwargs.pop("scale")
    return scale, {**inputs, "cross_attention_kwargs": kwargs}


@dataclass
class _Context:
    """Per-call values shared by every layer of one U-Net call."""

    emb: torch.Tensor
    encoder_hidden_states: torch.Tensor | None
    cross_attention_kwargs: dict[str, Any] | None
    upsample: bool  # forward `upsample_size` (input size not a multiple of the total up factor)
    timesteps: torch.Tensor | None = None  # UNet2DModel's broadcast timesteps (fourier scaling)
    attention_mask: torch.Tensor | None = None  # as additive biases, as the forward makes them
    encoder_attention_mask: torch.Tensor | None = None


class UNetExecutor:
    """Full and partial U-Net calls on one model, with the feature cache between them.

    `executor(sample, t, StepType.FULL, cache_branches={b})` runs the whole U-Net and keeps what a
    later `executor(sample, t, StepType.PARTIAL, branch=b)` needs. The cache holds one tensor per
    kept branch (the hidden state entering the first recomputed up layer), so memory stays small.
    """

    def __init__(self, unet: nn.Module) -> None:
        self.unet = unet
        self.layout = UNetLayout.of(unet)
        self.conditional = hasattr(unet, "get_time_embed")  # UNet2DConditionModel
        if self.conditional and unet.config.addition_embed_type == "image_hint":
            raise FlexoptError(
                "addition_embed_type 'image_hint' is not supported; allowed: None, 'text', "
                "'text_image', 'text_time', 'image'"
            )
        self.dtype = next(p.dtype for p in unet.parameters() if p.is_floating_point())
        self._cache: dict[int, torch.Tensor] = {}
        # Looked up once, not per call: the hook runs once per denoising step.
        from diffusers.utils import USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers

        self._peft = USE_PEFT_BACKEND
        self._scale_lora, self._unscale_lora = scale_lora_layers, unscale_lora_layers

    @property
    def max_branch(self) -> int:
        return self.layout.max_branch

    def check_branch(self, branch: int) -> None:
        if not 1 <= branch <= self.max_branch:
            raise FlexoptError(
                f"branch {branch} is beyond this {type(self.unet).__name__}; "
                f"allowed: 1..{self.max_branch} (the maximum is {self.max_branch})"
            )

    def reset(self) -> None:
        """Drop the feature cache (before a new generation)."""
        self._cache = {}

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        step: StepType = StepType.FULL,
        *,
        branch: int | None = None,
        cache_branches: Collection[int] = (),
        **inputs: Any,
    ) -> torch.Tensor:
        """One U-Net call; returns the model output (like `unet(...).sample`).

        `inputs` are the model's own keyword inputs (`encoder_hidden_states`, `class_labels`,
        `timestep_cond`, `added_cond_kwargs`, `cross_attention_kwargs`, attention masks,
        ControlNet's `down_block_additional_residuals` / `mid_block_additional_residual`).
        A partial step adds the residuals of the skips it computes; the deeper ones (and the mid
        block's) come with the cached feature of the last full step.
        """
        if step == StepType.NULL:
            raise ValueError("a null step makes no U-Net call")
        allowed = _CONDITION_INPUTS if self.conditional else _PIXEL_INPUTS
        unknown = sorted(k for k, v in inputs.items() if k not in allowed and v is not None)
        if unknown:
            raise FlexoptError(
                f"U-Net input {unknown[0]!r} is not supported by {type(self.unet).__name__} "
                f"under a schedule; allowed: {', '.join(sorted(allowed))}"
            )
        keep: set[int] = set()
        for b in cache_branches:
            self.check_branch(b)
            keep.add(self.layout.up_start[b - 1])
        start = None
        if step == StepType.PARTIAL:
            if branch is None:
                raise ValueError("a partial step needs a branch")
            self.check_branch(branch)
            start = self.layout.up_start[branch - 1]
            if start not in self._cache:
                raise RuntimeError(
                    f"partial step with branch {branch} before a full step that kept it"
                )
        n_down = self.layout.n_down[branch - 1] if start is not None else len(self.layout.down)
        scale, inputs = _lora_scale(inputs)
        if not self._peft or scale == 1.0:  # nothing to scale (the common case: no LoRA scale)
            return self._run(sample, timestep, n_down, start, keep, inputs)
        self._scale_lora(self.unet, scale)  # as the model's forward does (`apply_lora_scale`)
        try:
            return self._run(sample, timestep, n_down, start, keep, inputs)
        finally:
            self._unscale_lora(self.unet, scale)

    def has_cache(self, branch: int) -> bool:
        """Whether a partial step with `branch` can run (a full step kept its feature)."""
        return self.layout.up_start[branch - 1] in self._cache

    def _run(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        n_down: int,
        start: int | None,
        keep: set[int],
        inputs: dict[str, Any],
    ) -> torch.Tensor:
        down_residuals = inputs.pop("down_block_additional_residuals", None)
        mid_residual = inputs.pop("mid_block_additional_residual", None)
        if (down_residuals is None) != (mid_residual is None):
            raise FlexoptError(
                "down_block_additional_residuals without mid_block_additional_residual "
                "(T2I-Adapter style) is not supported; allowed: both (ControlNet) or neither"
            )
        sample, ctx = self._embed(sample, timestep, **inputs)
        h = self.unet.conv_in(sample)
        skips = [h]
        for layer in self.layout.down[:n_down]:
            h = self._down(layer, h, ctx)
            skips.append(h)
        if down_residuals is not None:
            skips = [s + r for s, r in zip(skips, down_residuals, strict=False)]
        if start is None:
            h = self._mid(h, ctx)
            if mid_residual is not None:
                h = h + mid_residual
            first = 0
            self._cache = {}
        else:
            h = self._cache[start]
            first = start
        for u in range(first, len(self.layout.up)):
            if u in keep:
                self._cache[u] = h
            h = self._up(self.layout.up[u], h, skips, ctx)
        return self._post(h, ctx)

    # ------------------------------------------------------------------ the model's own steps
    def _embed(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, _Context]:
        """Time/class/text embeddings, as the model's forward computes them before `conv_in`."""
        unet = self.unet
        timestep = _on_device(timestep, sample)
        if self.conditional:
            factor = 2**unet.num_upsamplers
            upsample = any(dim % factor != 0 for dim in sample.shape[-2:])
            if attention_mask is not None:
                attention_mask = ((1 - attention_mask.to(sample.dtype)) * -10000.0).unsqueeze(1)
            if encoder_attention_mask is not None:
                mask = (1 - encoder_attention_mask.to(sample.dtype)) * -10000.0
                encoder_attention_mask = mask.unsqueeze(1)
            if unet.config.center_input_sample:
                sample = 2 * sample - 1.0
            t_emb = unet.get_time_embed(sample=sample, timestep=timestep)
            emb = unet.time_embedding(t_emb, timestep_cond)
            class_emb = unet.get_class_embed(sample=sample, class_labels=class_labels)
            if class_emb is not None:
                if unet.config.class_embeddings_concat:
                    emb = torch.cat([emb, class_emb], dim=-1)
                else:
                    emb = emb + class_emb
            aug_emb = unet.get_aug_embed(
                emb=emb,
                encoder_hidden_states=encoder_hidden_states,
                added_cond_kwargs=added_cond_kwargs,
            )
            emb = emb + aug_emb if aug_emb is not None else emb
            if unet.time_embed_act is not None:
                emb = unet.time_embed_act(emb)
            encoder_hidden_states = unet.process_encoder_hidden_states(
                encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs
            )
            ctx = _Context(
                emb,
                encoder_hidden_states,
                cross_attention_kwargs,
                upsample,
                attention_mask=attention_mask,
                encoder_attention_mask=encoder_attention_mask,
            )
            return sample, ctx

        # UNet2DModel.forward, steps 0-1.
        if unet.config.center_input_sample:
            sample = 2 * sample - 1.0
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps], dtype=torch.long, device=sample.device)
        elif len(timesteps.shape) == 0:
            timesteps = timesteps[None].to(sample.device)
        timesteps = timesteps * torch.ones(
            sample.shape[0], dtype=timesteps.dtype, device=timesteps.device
        )
        t_emb = unet.time_proj(timesteps).to(dtype=self.dtype)
        emb = unet.time_embedding(t_emb)
        if unet.class_embedding is not None:
            if class_labels is None:
                raise FlexoptError(
                    "this UNet2DModel is class-conditional; allowed: pass class_labels"
                )
            if unet.config.class_embed_type == "timestep":
                class_labels = unet.time_proj(class_labels)
            emb = emb + unet.class_embedding(class_labels).to(dtype=self.dtype)
        elif class_labels is not None:
            raise FlexoptError("class_labels given to a U-Net without class embedding")
        return sample, _Context(emb, None, None, False, timesteps)

    def _attend(self, layer: Layer, h: torch.Tensor, ctx: _Context) -> torch.Tensor:
        if layer.attn is None:
            return h
        if layer.cross:
            return layer.attn(
                h,
                encoder_hidden_states=ctx.encoder_hidden_states,
                cross_attention_kwargs=ctx.cross_attention_kwargs,
                attention_mask=ctx.attention_mask,
                encoder_attention_mask=ctx.encoder_attention_mask,
                return_dict=False,
            )[0]
        return layer.attn(h)

    def _down(self, layer: Layer, h: torch.Tensor, ctx: _Context) -> torch.Tensor:
        if layer.resample:
            return layer.module(h, ctx.emb) if layer.takes_temb else layer.module(h)
        return self._attend(layer, layer.module(h, ctx.emb), ctx)

    def _mid(self, h: torch.Tensor, ctx: _Context) -> torch.Tensor:
        mid = self.unet.mid_block
        if mid is None:
            return h
        if getattr(mid, "has_cross_attention", False):
            return mid(
                h,
                ctx.emb,
                encoder_hidden_states=ctx.encoder_hidden_states,
                attention_mask=ctx.attention_mask,
                cross_attention_kwargs=ctx.cross_attention_kwargs,
                encoder_attention_mask=ctx.encoder_attention_mask,
            )
        return mid(h, ctx.emb)

    def _up(
        self, layer: Layer, h: torch.Tensor, skips: list[torch.Tensor], ctx: _Context
    ) -> torch.Tensor:
        if layer.resample:
            if layer.takes_temb:
                return layer.module(h, ctx.emb)
            if layer.pass_size:
                size = skips[-1].shape[2:] if ctx.upsample and not layer.final else None
                return layer.module(h, size)
            return layer.module(h)
        res = skips.pop()
        block = layer.block
        if layer.freeu and all(getattr(block, k, None) for k in ("s1", "s2", "b1", "b2")):
            from diffusers.utils.torch_utils import apply_freeu

            h, res = apply_freeu(
                block.resolution_idx, h, res, s1=block.s1, s2=block.s2, b1=block.b1, b2=block.b2
            )
        h = torch.cat([h, res], dim=1)
        return self._attend(layer, layer.module(h, ctx.emb), ctx)

    def _post(self, h: torch.Tensor, ctx: _Context) -> torch.Tensor:
        unet = self.unet
        if unet.conv_norm_out is not None:
            h = unet.conv_norm_out(h)
            h = unet.conv_act(h)
        h = unet.conv_out(h)
        if ctx.timesteps is not None and unet.config.time_embedding_type == "fourier":
            h = h / ctx.timesteps.reshape((h.shape[0], *([1] * len(h.shape[1:]))))
        return h


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

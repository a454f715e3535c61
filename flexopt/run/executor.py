"""`UNetExecutor`: full and partial U-Net calls on one model, with the feature cache between them.

A full step is the model's own forward order over its submodules (same ops, same order); a partial
step with branch `b` runs only `conv_in`, the down-path layers before position `b`, the up-path
layers that consume their fresh skips and `conv_out`, starting from the hidden state the last full
step cached (SPEC §1, DeepCache's mechanism).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flexopt.errors import FlexoptError
from flexopt.run.unet_layout import Layer, UNetLayout
from flexopt.space.steps import StepType

# The model inputs a scheduled call passes through, by U-Net class.
PIXEL_INPUTS = frozenset({"class_labels"})


CONDITION_INPUTS = frozenset(
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


def on_device(
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
        allowed = CONDITION_INPUTS if self.conditional else PIXEL_INPUTS
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
        timestep = on_device(timestep, sample)
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

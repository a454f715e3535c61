"""How a diffusers U-Net is flattened into the layers a full or partial step walks.

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

from dataclasses import dataclass

from torch import nn

from flexopt.errors import FlexoptError

SUPPORTED_UNETS = ("UNet2DModel", "UNet2DConditionModel")


SUPPORTED_DOWN_BLOCKS = (
    "DownBlock2D",
    "AttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "ResnetDownsampleBlock2D",
)


SUPPORTED_UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D", "ResnetUpsampleBlock2D")


# Up blocks whose diffusers forward applies FreeU when it is enabled, and passes `upsample_size`.
FREEU_UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D")


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
        if not is_supported_unet(unet):
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
                down.append(Layer(sampler, resample=True, takes_temb=is_resnet(sampler)))

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
            freeu = name in FREEU_UP_BLOCKS
            for r, resnet in enumerate(block.resnets):
                attn = attns[r] if attns is not None else None
                up.append(Layer(resnet, attn, cross, block=block, freeu=freeu, final=final))
            for sampler in block.upsamplers or ():
                up.append(
                    Layer(
                        sampler,
                        resample=True,
                        takes_temb=is_resnet(sampler),
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


def is_supported_unet(unet: nn.Module) -> bool:
    from diffusers import UNet2DConditionModel, UNet2DModel

    return isinstance(unet, UNet2DModel | UNet2DConditionModel)


def is_resnet(module: nn.Module) -> bool:
    from diffusers.models.resnet import ResnetBlock2D

    return isinstance(module, ResnetBlock2D)

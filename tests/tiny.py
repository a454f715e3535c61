"""Tiny random-weight diffusers models and pipelines for tests (no hub, a few ms to build).

Every builder seeds torch so a test gets the same weights each run. `save(obj, dir)` writes with
`save_pretrained`, so tests can load them back through the path a user's model directory or hub id
takes (`flexopt.models`). The reference U-Net configs of the paper's models (for MACs) live in
`flexopt.models.REFERENCE_UNETS`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP spinning
# makes a 10 ms forward take a second: every test that builds tiny models runs single-threaded.
torch.set_num_threads(1)

# Noise schedule of DDPM / Stable Diffusion style pipelines (SD 1.5's scheduler config).
SD_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
    "timestep_spacing": "leading",
}
DDPM_SCHEDULE: dict[str, Any] = {  # google/ddpm-cifar10-32's scheduler config
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "clip_sample": True,
}


def unet2d(
    *,
    layers_per_block: int = 2,
    attention: bool = True,
    blocks: int = 4,
    channels: int = 16,
    sample_size: int = 16,
    in_channels: int = 3,
    num_class_embeds: int | None = None,
    seed: int = 0,
    **config: Any,
):
    """A `UNet2DModel` shaped like DDPM CIFAR-10's (attention in the 2nd block), but tiny."""
    from diffusers import UNet2DModel

    down = ["DownBlock2D"] * blocks
    up = ["UpBlock2D"] * blocks
    if attention and blocks > 1:
        down[1] = "AttnDownBlock2D"
        up[blocks - 2] = "AttnUpBlock2D"
    torch.manual_seed(seed)
    cfg: dict[str, Any] = dict(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(channels * min(2, i + 1) for i in range(blocks)),
        layers_per_block=layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=4,
        attention_head_dim=8,
        num_class_embeds=num_class_embeds,
    )
    cfg.update(config)
    return UNet2DModel(**cfg).eval()


def unet_cond(
    *,
    layers_per_block: int | tuple[int, ...] = 2,
    attention: bool = True,
    blocks: int = 4,
    channels: int = 16,
    sample_size: int = 8,
    cross_attention_dim: int = 16,
    seed: int = 0,
    **config: Any,
):
    """A `UNet2DConditionModel` shaped like SD 1.5's (cross-attention in all but the last block)."""
    from diffusers import UNet2DConditionModel

    if attention:
        down = ("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",)
        up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1)
    else:
        down = ("DownBlock2D",) * blocks
        up = ("UpBlock2D",) * blocks
    torch.manual_seed(seed)
    cfg: dict[str, Any] = dict(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(channels * min(2, i + 1) for i in range(blocks)),
        layers_per_block=layers_per_block,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    cfg.update(config)
    return UNet2DConditionModel(**cfg).eval()


def ddim_scheduler(**config: Any):
    from diffusers import DDIMScheduler

    return DDIMScheduler(**{**DDPM_SCHEDULE, **config})


def pndm_scheduler(**config: Any):
    from diffusers import PNDMScheduler

    cfg = {k: v for k, v in SD_SCHEDULE.items() if k != "clip_sample"}
    return PNDMScheduler(**{**cfg, "skip_prk_steps": True, **config})


def ddim_pipeline(unet=None, scheduler=None):
    from diffusers import DDIMPipeline

    return DDIMPipeline(unet if unet is not None else unet2d(), scheduler or ddim_scheduler())


def ddpm_pipeline(unet=None):
    from diffusers import DDPMPipeline, DDPMScheduler

    return DDPMPipeline(unet if unet is not None else unet2d(), DDPMScheduler(**DDPM_SCHEDULE))


def vq_model(seed: int = 0):
    from diffusers import VQModel

    torch.manual_seed(seed)
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=3,
        num_vq_embeddings=16,
        vq_embed_dim=3,
        norm_num_groups=4,
        sample_size=16,
    ).eval()


def ldm_pipeline(unet=None):
    """An unconditional `LDMPipeline` (VQ-VAE latents of 3 channels, 8×8)."""
    from diffusers import LDMPipeline

    unet = unet if unet is not None else unet2d(sample_size=8, in_channels=3)
    return LDMPipeline(vqvae=vq_model(), unet=unet, scheduler=ddim_scheduler())


def _byte_chars() -> list[str]:
    """The 256 printable characters byte-level BPE uses for bytes (GPT-2's `bytes_to_unicode`)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def clip_tokenizer(directory: str | Path):
    """A character-level CLIP tokenizer written from scratch (no vocab download)."""
    from transformers import CLIPTokenizer

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=77)


def sd_pipeline(tmp_dir: str | Path, unet=None, scheduler=None, seed: int = 0):
    """A `StableDiffusionPipeline` with a tiny CLIP text encoder and VAE (16×16 images)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer(Path(tmp_dir) / "_tokenizer")
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).eval()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet if unet is not None else unet_cond(),
        scheduler=scheduler or pndm_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save(obj: Any, directory: str | Path) -> Path:
    """`save_pretrained` into `directory` (created) and return it."""
    d = Path(directory)
    obj.save_pretrained(d)
    return d

"""Tiny random-weight diffusers models and pipelines for tests (no hub, a few ms to build).

Every builder seeds torch so a test gets the same weights each run. `save(obj, dir)` writes with
`save_pretrained`, so tests can load them back through the path a user's model directory or hub id
takes (`flexopt.models.loading`). The reference U-Net configs of the paper's models (for MACs) live
in `flexopt.models.loading.REFERENCE_UNETS`.
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


def clip_text_encoder(tokenizer, *, hidden: int = 16, projection: int | None = None, seed=0):
    """A one-layer CLIP text encoder (with a projection head when `projection` is given)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection or hidden,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(config).eval()


def clip_model(directory: str | Path, *, seed: int = 3, image_size: int = 32) -> Path:
    """A tiny random-weight `CLIPModel` and its `CLIPProcessor` (the character tokenizer above,
    an image processor at `image_size`), saved with `save_pretrained` into `directory`.

    Seed 3: its scores of mid-grey noise images spread over 0..50 (seeds 0 and 1 give negative
    cosines only, every score clipped to 0, which would hide a wrong score in a test)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    d = Path(directory)
    tokenizer = clip_tokenizer(d / "_tokenizer")
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=16,
                           intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        projection_dim=12,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    images = CLIPImageProcessor(size={"shortest_edge": image_size},
                                crop_size={"height": image_size, "width": image_size})
    model.save_pretrained(d)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(d)
    return d


def vae(seed: int = 0):
    """A two-block `AutoencoderKL` (4 latent channels, scale factor 2)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
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


def sd_components(tmp_dir: str | Path, unet=None, scheduler=None, seed: int = 0) -> dict[str, Any]:
    """What a `StableDiffusionPipeline` (and img2img, inpaint) is built from."""
    tokenizer = clip_tokenizer(Path(tmp_dir) / "_tokenizer")
    return dict(
        vae=vae(seed),
        text_encoder=clip_text_encoder(tokenizer, seed=seed),
        tokenizer=tokenizer,
        unet=unet if unet is not None else unet_cond(),
        scheduler=scheduler or pndm_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sd_pipeline(tmp_dir: str | Path, unet=None, scheduler=None, seed: int = 0):
    """A `StableDiffusionPipeline` with a tiny CLIP text encoder and VAE (16×16 images)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**sd_components(tmp_dir, unet, scheduler, seed))


def unet_sdxl(seed: int = 0, **config: Any):
    """A `UNet2DConditionModel` shaped like SDXL's: no attention in the first block, two
    transformer layers in the last, `text_time` added embeddings, linear projections."""
    return unet_cond(
        blocks=3,
        channels=8,
        seed=seed,
        **{
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "attention_head_dim": (2, 4, 4),
            "transformer_layers_per_block": (1, 1, 2),
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 16,  # time ids + pooled text
            "cross_attention_dim": 32,  # both text encoders' hidden states, concatenated
            **config,
        },
    )


def sdxl_pipeline(tmp_dir: str | Path, scheduler=None, seed: int = 0):
    """A `StableDiffusionXLPipeline`: two tiny CLIP text encoders (the second with a
    projection), tokenizers written here, an SDXL-shaped U-Net, 16×16 images."""
    from diffusers import StableDiffusionXLPipeline

    tokenizer = clip_tokenizer(Path(tmp_dir) / "_tokenizer")
    return StableDiffusionXLPipeline(
        vae=vae(seed),
        text_encoder=clip_text_encoder(tokenizer, seed=seed),
        text_encoder_2=clip_text_encoder(tokenizer, projection=16, seed=seed + 1),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet_sdxl(seed),
        scheduler=scheduler or ddim_scheduler(**SD_SCHEDULE),
    )


def controlnet(unet, seed: int = 0):
    """A ControlNet for `unet` (latents at half the image size), its zero-initialized output
    convolutions randomized so that its residuals matter."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8)).eval()
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.2)
    return net


def save(obj: Any, directory: str | Path) -> Path:
    """`save_pretrained` into `directory` (created) and return it."""
    d = Path(directory)
    obj.save_pretrained(d)
    return d


def image_folder(folder: str | Path, n: int, size: int = 16) -> Path:
    """n random size×size RGB PNGs: a real-image reference for FID (`--reference FOLDER`)."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(folder / f"{i}.png")
    return folder

"""`apply_schedule(pipe, schedule)`: generate like a diffusers pipeline, running a schedule.

Why a wrapper and not a patched pipeline: the user's pipeline must stay exactly as it was (SPEC:
no lasting modification). The wrapper reuses the pipeline's parts (U-Net, noise schedule from its
scheduler config, text encoder through `encode_prompt`, VAE, safety checker, image processor) and
replaces only the denoising loop: our sampler over the schedule's active steps, each U-Net call
full or partial through the executor. Initial noise is drawn exactly as the pipeline draws it, so
the same `generator` gives the same starting latents as `pipe(...)`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flexopt.errors import FlexoptError
from flexopt.executor import UNetExecutor
from flexopt.samplers import Step, make_sampler, plan
from flexopt.schedule import Schedule
from flexopt.space import StepType

PIXEL_PIPELINES = ("DDPMPipeline", "DDIMPipeline", "PNDMPipeline")
LATENT_PIPELINES = ("LDMPipeline",)
TEXT_PIPELINES = ("StableDiffusionPipeline",)
SUPPORTED_PIPELINES = PIXEL_PIPELINES + LATENT_PIPELINES + TEXT_PIPELINES
OUTPUT_TYPES = ("pil", "np", "pt")


def pipeline_kind(pipe: Any) -> str:
    """'pixel', 'latent' or 'text' by the pipeline's class (or a base class); else raise."""
    for cls in type(pipe).__mro__:
        name = cls.__name__
        if name in PIXEL_PIPELINES:
            return "pixel"
        if name in LATENT_PIPELINES:
            return "latent"
        if name in TEXT_PIPELINES:
            return "text"
    raise FlexoptError(
        f"pipeline type {type(pipe).__name__} is not supported; "
        f"allowed: {', '.join(SUPPORTED_PIPELINES)}"
    )


def check_request(schedule: Schedule, sampler: str | None, t_ref: int | None) -> None:
    """Raise if the schedule was made for another sampler or teacher step count."""
    if sampler is not None and sampler != schedule.sampler:
        raise FlexoptError(
            f"schedule sampler {schedule.sampler!r} disagrees with the requested sampler "
            f"{sampler!r}; allowed: a schedule made for {sampler!r}"
        )
    if t_ref is not None and t_ref != schedule.t_ref:
        raise FlexoptError(
            f"schedule t_ref {schedule.t_ref} disagrees with the requested {t_ref} steps; "
            f"allowed: a schedule with t_ref {t_ref}"
        )


@dataclass
class RunStats:
    """What the last generation ran: U-Net calls by step type and wall-clock seconds."""

    calls: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def nfe(self) -> int:
        return sum(self.calls.values())


def apply_schedule(
    pipe: Any, schedule: Schedule, *, sampler: str | None = None, t_ref: int | None = None
) -> ScheduledPipeline:
    """A callable that generates like `pipe` but runs `schedule`; `pipe` is left untouched.

    `sampler` / `t_ref`, when given, are what the caller expects the schedule to be made for.
    """
    check_request(schedule, sampler, t_ref)
    return ScheduledPipeline(pipe, schedule)


class ScheduledPipeline:
    """`pipe` with its denoising loop replaced by `schedule` (see `apply_schedule`)."""

    def __init__(self, pipe: Any, schedule: Schedule) -> None:
        self.kind = pipeline_kind(pipe)
        self.pipe = pipe
        self.schedule = schedule
        self.executor = UNetExecutor(pipe.unet)
        for seg in schedule.segments:
            if seg.interval > 1:
                self.executor.check_branch(seg.branch)
        self.sampler = make_sampler(schedule.sampler, pipe.scheduler)
        self.steps: list[Step] = plan(self.sampler.grid(schedule.grid_length), schedule)
        self.stats = RunStats()

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def _unet_fn(
        self, progress: Callable[[], None] | None, **conditioning: Any
    ) -> Callable[[torch.Tensor, Step], torch.Tensor]:
        """The sampler's model function: one executor call per step, plus CFG for text pipes."""
        executor, stats, device = self.executor, self.stats, self.device
        guidance = conditioning.pop("guidance_scale", None)

        def model(x: torch.Tensor, step: Step) -> torch.Tensor:
            t = torch.tensor(step.timestep, device=device)
            inp = torch.cat([x] * 2) if guidance is not None else x
            keep = (step.branch,) if step.kind == StepType.FULL and step.branch else ()
            out = executor(
                inp, t, step.kind, branch=step.branch, cache_branches=keep, **conditioning
            )
            if guidance is not None:
                uncond, cond = out.chunk(2)
                out = uncond + guidance * (cond - uncond)
            stats.calls[step.kind.name.lower()] += 1
            if progress is not None:
                progress()
            return out

        return model

    @property
    def calls_per_run(self) -> int:
        """U-Net calls of one generation (PLMS adds its first step's corrector call)."""
        return len(self.steps) + int(self.schedule.sampler == "plms" and len(self.steps) > 1)

    def _progress(self, progress: bool | Callable[[], None]):
        """(bar or None, function to call after each U-Net call)."""
        if callable(progress):
            return None, progress
        from tqdm.auto import tqdm

        bar = tqdm(total=self.calls_per_run, disable=not progress, desc="flexopt", leave=False)
        return bar, bar.update

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        *,
        batch_size: int = 1,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        class_labels: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        output_type: str = "pil",
        num_inference_steps: int | None = None,
        return_dict: bool = True,
        progress: bool | Callable[[], None] = True,
    ):
        """Generate images (`.images`) as `pipe(...)` would; see the pipeline's own docs.

        `progress`: show a progress bar, or a function called after every U-Net call.
        """
        from diffusers.utils.torch_utils import randn_tensor

        if output_type not in OUTPUT_TYPES + (("latent",) if self.kind == "text" else ()):
            allowed = OUTPUT_TYPES + (("latent",) if self.kind == "text" else ())
            raise FlexoptError(
                f"output_type {output_type!r} is not supported; allowed: {', '.join(allowed)}"
            )
        check_request(self.schedule, None, num_inference_steps)
        self.stats = RunStats()
        self.executor.reset()
        start = time.perf_counter()
        pipe, unet = self.pipe, self.pipe.unet
        bar, update = self._progress(progress)
        try:
            if self.kind == "text":
                return self._text(
                    prompt,
                    num_images_per_prompt,
                    generator,
                    guidance_scale,
                    negative_prompt,
                    height,
                    width,
                    cross_attention_kwargs,
                    output_type,
                    return_dict,
                    update,
                )
            size = unet.config.sample_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            shape = (batch_size, unet.config.in_channels, *size)
            if self.kind == "latent":  # LDMPipeline draws on the CPU in the default dtype
                x = randn_tensor(shape, generator=generator).to(self.device)
            else:
                x = randn_tensor(shape, generator=generator, device=self.device, dtype=unet.dtype)
            model = self._unet_fn(update, class_labels=class_labels)
            x = self.sampler.run(x, self.steps, model)
            if self.kind == "latent":
                x = pipe.vqvae.decode(x / pipe.vqvae.config.scaling_factor).sample
            image = (x / 2 + 0.5).clamp(0, 1)
            if output_type != "pt":
                image = image.cpu().permute(0, 2, 3, 1).float().numpy()
                if output_type == "pil":
                    image = pipe.numpy_to_pil(image)
            from diffusers import ImagePipelineOutput

            return ImagePipelineOutput(images=image) if return_dict else (image,)
        finally:
            if bar is not None:
                bar.close()
            self.executor.reset()
            self.stats.seconds = time.perf_counter() - start

    def _text(
        self,
        prompt,
        num_images_per_prompt,
        generator,
        guidance_scale,
        negative_prompt,
        height,
        width,
        cross_attention_kwargs,
        output_type,
        return_dict,
        progress,
    ):
        """StableDiffusionPipeline.__call__'s steps around our denoising loop."""
        from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
        from diffusers.utils.torch_utils import randn_tensor

        pipe, unet, device = self.pipe, self.pipe.unet, self.device
        prompt = "" if prompt is None else prompt
        batch = 1 if isinstance(prompt, str) else len(prompt)
        cfg = guidance_scale > 1 and unet.config.time_cond_proj_dim is None
        embeds, negative = pipe.encode_prompt(
            prompt, device, num_images_per_prompt, cfg, negative_prompt
        )
        if cfg:
            embeds = torch.cat([negative, embeds])
        scale = pipe.vae_scale_factor
        height = height or unet.config.sample_size * scale
        width = width or unet.config.sample_size * scale
        shape = (batch * num_images_per_prompt, unet.config.in_channels)
        shape += (height // scale, width // scale)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=embeds.dtype)
        timestep_cond = None
        if unet.config.time_cond_proj_dim is not None:
            w = torch.tensor(guidance_scale - 1).repeat(shape[0])
            timestep_cond = pipe.get_guidance_scale_embedding(
                w, embedding_dim=unet.config.time_cond_proj_dim
            ).to(device=device, dtype=latents.dtype)
        model = self._unet_fn(
            progress,
            guidance_scale=guidance_scale if cfg else None,
            encoder_hidden_states=embeds,
            timestep_cond=timestep_cond,
            cross_attention_kwargs=cross_attention_kwargs,
        )
        latents = self.sampler.run(latents, self.steps, model)
        nsfw = None
        if output_type == "latent":
            image = latents
        else:
            image = pipe.vae.decode(
                latents / pipe.vae.config.scaling_factor, return_dict=False, generator=generator
            )[0]
            image, nsfw = pipe.run_safety_checker(image, device, embeds.dtype)
            denormalize = [True] * image.shape[0] if nsfw is None else [not n for n in nsfw]
            image = pipe.image_processor.postprocess(
                image, output_type=output_type, do_denormalize=denormalize
            )
        if not return_dict:
            return (image, nsfw)
        return StableDiffusionPipelineOutput(images=image, nsfw_content_detected=nsfw)


@dataclass(frozen=True)
class GeneratedImages:
    """A batch-independent set of images: image i comes from the noise seeded `seed + i`."""

    images: np.ndarray  # float32 N×H×W×C in [0, 1], as diffusers' output_type="np"
    seeds: np.ndarray  # int64 N
    seconds: float  # sampling wall-clock (U-Net calls, sampler updates, decoding)
    calls: int  # U-Net calls made


def generate_images(
    run: ScheduledPipeline,
    num_images: int,
    seed: int,
    batch_size: int,
    *,
    prompts: Sequence[str] | None = None,
    guidance_scale: float = 7.5,
    class_labels: Sequence[int] | None = None,
    progress: bool | Callable[[], None] = True,
) -> GeneratedImages:
    """Generate `num_images` with a scheduled pipeline, in batches, reproducibly.

    Image i draws its initial noise from `torch.Generator().manual_seed(seed + i)`, so the same
    (seed, i) gives the same noise whatever the batch size — which is what makes a candidate's
    images comparable with the teacher's (rFID, paired distance). Text pipelines cycle through
    `prompts`; class-conditional ones through `class_labels`.
    """
    if num_images < 1 or batch_size < 1:
        raise FlexoptError(
            f"num_images {num_images} / batch_size {batch_size} are invalid; allowed: >= 1"
        )
    from tqdm.auto import tqdm

    n_batches = -(-num_images // batch_size)
    bar = None
    if not callable(progress):
        bar = tqdm(total=n_batches * run.calls_per_run, unit="call", desc="generate",
                   disable=not progress, leave=False)
        progress = bar.update
    out, seconds, calls = [], 0.0, 0
    try:
        for first in range(0, num_images, batch_size):
            n = min(batch_size, num_images - first)
            gens = [torch.Generator("cpu").manual_seed(seed + first + i) for i in range(n)]
            kwargs: dict[str, Any] = {"generator": gens, "output_type": "np", "progress": progress}
            if run.kind == "text":
                texts = [prompts[(first + i) % len(prompts)] if prompts else "" for i in range(n)]
                batch = run(texts, guidance_scale=guidance_scale, **kwargs).images
            else:
                if class_labels:
                    labels = [class_labels[(first + i) % len(class_labels)] for i in range(n)]
                    kwargs["class_labels"] = torch.tensor(labels, device=run.device)
                batch = run(batch_size=n, **kwargs).images
            seconds += run.stats.seconds
            calls += run.stats.nfe
            out.append(np.asarray(batch, dtype=np.float32))
    finally:
        if bar is not None:
            bar.close()
    seeds = np.arange(seed, seed + num_images, dtype=np.int64)
    return GeneratedImages(np.concatenate(out), seeds, seconds, calls)

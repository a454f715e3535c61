"""`apply_schedule(pipe, schedule)`: a callable that runs the pipeline's own `__call__` under
`flexopt.scheduled` (SPEC §4), and `generate_images`, the reproducible batch generation behind
`generate`, the teacher, `rfid` and `search`.

Why a thin wrapper: the pipeline's call does everything (prompt encoding, guidance, image
preparation, decoding); the schedule enters only as a scheduler and a U-Net hook that are installed
for one call and removed after it, so the user's pipeline stays as it was.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flexopt.errors import FlexoptError
from flexopt.models.conditioning import image_prompts
from flexopt.run.batching import in_batches
from flexopt.run.hooks import RunStats, prepare, scheduled
from flexopt.run.samplers import BoundaryFn, Resume
from flexopt.space.schedule import Schedule

if TYPE_CHECKING:
    from flexopt.run.prefix import PrefixReuse

OUTPUT_TYPES = ("pil", "np", "pt")


def pipeline_kind(pipe: Any) -> str:
    """How `generate_images` calls the pipeline, read from its `__call__` parameters:
    'unconditional' (`batch_size`), 'text' (`prompt`), 'image' (prompt and an input image:
    img2img, ControlNet) or 'inpaint' (also a mask); else raise."""
    params = inspect.signature(pipe.__call__).parameters if callable(pipe) else {}
    if "prompt" in params:
        if "mask_image" in params:
            return "inpaint"
        return "image" if "image" in params else "text"
    if "batch_size" in params and "image" not in params:
        return "unconditional"
    raise FlexoptError(
        f"pipeline type {type(pipe).__name__} is not supported; allowed: a diffusers U-Net "
        "pipeline called with batch_size (DDPM, DDIM, PNDM, LDM) or with a prompt (Stable "
        "Diffusion, SDXL, img2img, inpaint, ControlNet)"
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


def apply_schedule(
    pipe: Any, schedule: Schedule, *, sampler: str | None = None, t_ref: int | None = None
) -> ScheduledPipeline:
    """A callable that generates like `pipe` but runs `schedule`; `pipe` is left untouched.

    `sampler` / `t_ref`, when given, are what the caller expects the schedule to be made for.
    """
    check_request(schedule, sampler, t_ref)
    return ScheduledPipeline(pipe, schedule)


class ScheduledPipeline:
    """`pipe(...)` inside `scheduled(pipe, schedule)`, with U-Net call counts and a progress bar
    over U-Net calls (see `apply_schedule`)."""

    def __init__(self, pipe: Any, schedule: Schedule) -> None:
        self.kind = pipeline_kind(pipe)
        self.pipe = pipe
        self.schedule = schedule
        self.calls_per_run = len(prepare(pipe, schedule).scheduler.calls)  # checks it all now
        self.stats = RunStats()

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @torch.no_grad()
    def __call__(
        self,
        *args: Any,
        class_labels: torch.Tensor | None = None,
        num_inference_steps: int | None = None,
        progress: bool | Callable[[], None] = True,
        resume: Resume | None = None,
        on_boundary: BoundaryFn | None = None,
        **kwargs: Any,
    ) -> Any:
        """Generate as `pipe(*args, **kwargs)` would, running the schedule.

        `class_labels`: for a class-conditional U-Net under a pipeline that does not pass labels
        (DDPM / DDIM). `progress`: a bar over U-Net calls, or a function called after each.
        `resume`: start at a stored segment boundary of this batch (`flexopt.run.prefix`);
        `on_boundary`: called with the state at each boundary the run reaches.
        """
        output_type = kwargs.get("output_type", "pil")
        if self.kind == "unconditional" and output_type not in OUTPUT_TYPES:
            raise FlexoptError(
                f"output_type {output_type!r} is not supported; allowed: {', '.join(OUTPUT_TYPES)}"
            )
        check_request(self.schedule, None, num_inference_steps)
        pipe = self.pipe
        bar, update = None, progress if callable(progress) else None
        if update is None:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.calls_per_run, disable=not progress, desc="flexopt", leave=False)
            update = bar.update
        labels = {"class_labels": class_labels} if class_labels is not None else None
        saved_bar = vars(pipe).get("_progress_bar_config")
        pipe.set_progress_bar_config(disable=True)  # ours counts U-Net calls
        start = time.perf_counter()
        try:
            with scheduled(pipe, self.schedule, unet_kwargs=labels, on_call=update) as hook:
                self.stats = hook.stats
                hook.scheduler.resume_at(resume)
                hook.scheduler.on_boundary = on_boundary
                return pipe(*args, num_inference_steps=self.schedule.t_ref, **kwargs)
        finally:
            self.stats.seconds = time.perf_counter() - start
            if saved_bar is None:
                del pipe._progress_bar_config
            else:
                pipe._progress_bar_config = saved_bar
            if bar is not None:
                bar.close()


@dataclass(frozen=True)
class GeneratedImages:
    """A batch-independent set of images: image i comes from the noise seeded `seed + i`."""

    images: np.ndarray  # float32 N×H×W×C in [0, 1], as diffusers' output_type="np"
    seeds: np.ndarray  # int64 N
    seconds: float  # sampling wall-clock (U-Net calls, sampler updates, decoding)
    calls: int  # U-Net calls made
    skipped: int = 0  # U-Net calls not made: resumed from a stored prefix (`flexopt.run.prefix`)


def generate_images(
    run: ScheduledPipeline,
    num_images: int,
    seed: int,
    batch_size: int,
    *,
    prompts: Sequence[str] | None = None,
    guidance_scale: float = 7.5,
    class_labels: Sequence[int] | None = None,
    images: Sequence[Any] | None = None,
    masks: Sequence[Any] | None = None,
    progress: bool | Callable[[], None] = True,
    prefix: PrefixReuse | None = None,
    start: int = 0,
) -> GeneratedImages:
    """Generate `num_images` with a scheduled pipeline, in batches, reproducibly: images
    `start .. start + num_images - 1` of the run from `seed`.

    Image i draws its initial noise from `torch.Generator().manual_seed(seed + i)`, so the same
    (seed, i) gives the same noise whatever the batch size — which is what makes a candidate's
    images comparable with the teacher's (rFID, paired distance). Text pipelines draw from
    `prompts` in a seeded order (`flexopt.models.conditioning.image_prompts`); class-conditional
    ones cycle through `class_labels`; img2img / ControlNet through `images` (the input or control
    image), inpainting also through `masks`. `prefix`: start
    each batch from its longest stored schedule prefix and keep its boundary states (the caller
    checks the pipeline kind allows it, `flexopt.run.prefix.REUSABLE_KINDS`). `start`: a run made in
    pieces (the rungs of a pruned search) gives, piece after piece, the same images as one call
    split into the same batches.
    """
    _check_inputs(run, num_images, batch_size, start, images, masks)
    inputs = _Inputs(seed, tuple(prompts or ()), guidance_scale, tuple(class_labels or ()),
                     images, masks)
    from tqdm.auto import tqdm

    n_batches = -(-num_images // batch_size)
    bar = None
    if not callable(progress):
        bar = tqdm(total=n_batches * run.calls_per_run, unit="call", desc="generate",
                   disable=not progress, leave=False)
        progress = bar.update
    seconds, calls = 0.0, 0

    def batch_of(first: int, n: int) -> np.ndarray:
        """Images first .. first + n - 1 (a smaller batch on out-of-memory: same images)."""
        nonlocal seconds, calls
        first += start
        gens = [torch.Generator("cpu").manual_seed(seed + first + i) for i in range(n)]
        kwargs: dict[str, Any] = {"generator": gens, "output_type": "np", "progress": progress}
        if prefix is not None:  # a batch that fails (out-of-memory, retried smaller) skips nothing
            counted = prefix.skipped, len(prefix.resumed)
            kwargs["resume"], kwargs["on_boundary"] = prefix.batch(first, n)
        try:
            batch = inputs.call(run, first, kwargs)
        except BaseException:
            if prefix is not None:
                prefix.skipped, prefix.resumed[:] = counted[0], prefix.resumed[:counted[1]]
            raise
        seconds += run.stats.seconds
        calls += run.stats.nfe
        return np.asarray(batch, dtype=np.float32)

    def recount(first: int, size: int) -> None:
        if bar is not None:  # the calls left, in batches of the new size
            bar.total = bar.n + -(-(num_images - first) // size) * run.calls_per_run

    try:
        out = list(in_batches(batch_of, num_images, batch_size, on_halve=recount))
    finally:
        if bar is not None:
            bar.close()
    seeds = np.arange(seed + start, seed + start + num_images, dtype=np.int64)
    skipped = prefix.skipped if prefix is not None else 0
    return GeneratedImages(np.concatenate(out), seeds, seconds, calls, skipped)


def _check_inputs(run: ScheduledPipeline, num_images: int, batch_size: int, start: int,
                  images: Sequence[Any] | None, masks: Sequence[Any] | None) -> None:
    if num_images < 1 or batch_size < 1 or start < 0:
        raise FlexoptError(
            f"num_images {num_images} / batch_size {batch_size} / start {start} are invalid; "
            "allowed: >= 1, >= 1, >= 0"
        )
    if (run.kind in ("image", "inpaint") and not images) or (run.kind == "inpaint" and not masks):
        raise FlexoptError(
            f"{type(run.pipe).__name__} needs input images{' and masks' * (run.kind == 'inpaint')}"
            "; allowed: pass them (--init-images DIR, --mask-images DIR)"
        )


@dataclass(frozen=True)
class _Inputs:
    """What a pipeline call takes besides the noise, for each image index: its prompt (in the
    seeded order), class label, input image and mask, each cycled over the images."""

    seed: int
    prompts: Sequence[str]
    guidance_scale: float
    class_labels: Sequence[int]
    images: Sequence[Any] | None
    masks: Sequence[Any] | None

    def call(self, run: ScheduledPipeline, first: int, kwargs: dict[str, Any]) -> Any:
        """One pipeline call for images `first ..`, with each image's prompt, input and label."""
        n = len(kwargs["generator"])
        if run.kind != "unconditional":
            texts = image_prompts(self.prompts, self.seed, first, n)
            for key, given in (("image", self.images), ("mask_image", self.masks)):
                if given:
                    kwargs[key] = [given[(first + i) % len(given)] for i in range(n)]
            return run(texts, guidance_scale=self.guidance_scale, **kwargs).images
        if self.class_labels:
            labels = [self.class_labels[(first + i) % len(self.class_labels)] for i in range(n)]
            kwargs["class_labels"] = torch.tensor(labels, device=run.device)
        # Tensors where the pipeline returns them (DDPM, DDIM): its own numpy conversion
        # fails on a bfloat16 U-Net's images; in float32 both give the same numbers.
        batch = run(batch_size=n, **{**kwargs, "output_type": "pt"}).images
        if isinstance(batch, torch.Tensor):
            batch = batch.float().cpu().permute(0, 2, 3, 1).numpy()
        return batch

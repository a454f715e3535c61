"""What `flexopt generate` does: run a schedule file on a pipeline and write the images into a
folder (PNGs, images.npz, prompts.txt for text pipelines, grid.png on request).

It lives beside the evaluator because it takes the same conditioning (`EvalSettings`) and
checks it the same way, so a schedule generates the images a search scored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexopt.files import make_folder, write_error
from flexopt.models.conditioning import image_prompts
from flexopt.run.budget import format_macs
from flexopt.run.cost import ScheduleCost, count_macs, schedule_cost
from flexopt.run.pipeline import GeneratedImages, apply_schedule, check_request, generate_images
from flexopt.search.evaluator import EvalSettings, check_conditioning, load_images
from flexopt.space.schedule import Schedule


@dataclass(frozen=True)
class GenerateRequest:
    """Which schedule, where to, how many images from which seeds; `sampler` / `t_ref`: what the
    schedule must have been made for (None: anything); `grid_columns`: also write grid.png."""

    schedule: str | os.PathLike[str]
    out: str | os.PathLike[str]
    num_images: int
    seed: int = 0
    batch_size: int = 16
    sampler: str | None = None
    t_ref: int | None = None
    grid_columns: int | None = None
    grid_scale: int = 1


@dataclass(frozen=True)
class Generated:
    """What a run wrote into `out_dir`, what the schedule costs and how long sampling took."""

    out_dir: Path
    schedule: Schedule
    cost: ScheduleCost
    num_images: int
    calls: int  # batched U-Net calls
    seconds: float
    device: Any
    wrote_prompts: bool = False
    wrote_grid: bool = False

    def lines(self) -> list[str]:
        """The text `flexopt generate` prints."""
        extra = (", prompts.txt" if self.wrote_prompts else "") + (
            ", grid.png" if self.wrote_grid else "")
        s, n = self.schedule, self.num_images
        return [f"wrote {n} images to {self.out_dir} (PNGs, images.npz{extra})",
                f"NFE {s.nfe} per image ({self.calls} batched U-Net calls), "
                f"avg MACs {format_macs(self.cost.avg_macs)} ({self.cost.speedup:.2f}x fewer "
                f"than {s.t_ref} full steps)",
                f"sampling time {self.seconds:.2f} s ({n / self.seconds:.2f} images/s on "
                f"{self.device})"]


def generate_to_folder(request: GenerateRequest, open_pipe: Callable[[], Any],
                       conditions: Callable[[], dict[str, Any]]) -> Generated:
    """Generate `request.num_images` images with a schedule file and write them.

    `open_pipe` loads the pipeline and `conditions` gives `EvalSettings`' conditioning fields
    (prompts, guidance_scale, class_labels, images, masks); they are called only after the
    schedule and the output folder are checked, so a bad schedule or OUT costs no model load.
    """
    schedule = Schedule.load(request.schedule)
    check_request(schedule, request.sampler, request.t_ref)
    out_dir = make_folder(request.out)
    pipe = open_pipe()
    device = pipe._execution_device
    run = apply_schedule(pipe, schedule)
    cost = schedule_cost(schedule, count_macs(pipe.unet))
    settings = EvalSettings(request.num_images, request.seed, request.batch_size, **conditions())
    check_conditioning(pipe, settings)
    result = generate_images(run, request.num_images, request.seed, request.batch_size,
                             prompts=settings.prompts, guidance_scale=settings.guidance_scale,
                             class_labels=settings.class_labels,
                             images=load_images(settings.images, "RGB"),
                             masks=load_images(settings.masks, "L"))
    write_images(out_dir, pipe, result, request, settings.prompts)
    return Generated(out_dir, schedule, cost, request.num_images, result.calls, result.seconds,
                     device, bool(settings.prompts), bool(request.grid_columns))


def write_images(out_dir: Path, pipe: Any, result: GeneratedImages, request: GenerateRequest,
                 prompts: tuple[str, ...] = ()) -> None:
    """PNGs, images.npz (`images`, `seeds`), prompts.txt (image i's prompt on line i: a seeded
    shuffle of the prompts, cycled) and grid.png; an OS error (a full disk) is one line."""
    try:
        for i, img in enumerate(result.images):
            pipe.numpy_to_pil(img[None])[0].save(out_dir / f"{i:05d}.png")
        np.savez(out_dir / "images.npz", images=result.images, seeds=result.seeds)
        if prompts:
            (out_dir / "prompts.txt").write_text(
                "".join(p + "\n" for p in image_prompts(prompts, request.seed, 0,
                                                         request.num_images)),
                encoding="utf-8")
        if request.grid_columns:
            from flexopt.search.artifacts import grid_png  # optuna: only when asked

            png = grid_png(result.images, max_images=request.num_images, thumb=None, pad=0,
                           columns=request.grid_columns, scale=request.grid_scale)
            (out_dir / "grid.png").write_bytes(png)
    except OSError as err:  # e.g. the disk filled up
        raise write_error(out_dir, err) from None

"""Click options and parsing shared by several sub-commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from flexopt.search.config import StudyConfig

MAX_SEED = 2**62  # torch generators take 64-bit seeds, and image i uses seed + i


def load_config(path: str | None) -> StudyConfig | None:
    return StudyConfig.load(path) if path else None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def echo_err(line: str) -> None:
    """A note or warning line, on stderr (the library's `log`/`note` callbacks)."""
    click.echo(line, err=True)


def _keep_in_context(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        ctx.meta[f"flexopt.{param.name}"] = value


def _dtype(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--dtype as its torch name; a bad value is one line naming the allowed ones."""
    from flexopt.models.loading import dtype_name

    return dtype_name(value)


def generation_options(
    default_batch: int = 16, num_images_default: int | None = None, min_images: int = 1,
    num_images_required: bool = True, num_images_help: str = "Number of images.",
    seed_from_config: bool = False, seed_default: int = 0,
):
    """--num-images/--seed/--batch-size/--device/--dtype and the conditioning options.

    Shared by every command that generates images, so they all draw image i from seed + i.
    """
    seed_help = "Image i starts from the noise of seed + i (independent of batching)" + (
        "; default: the config's [rfid] seed, else 0." if seed_from_config else ".")

    # Click >= 8.3 counts an explicit `default=None` as a value, so `required` is only set (and
    # `default` only passed) when there is no default.
    count: dict[str, Any] = (
        {"default": num_images_default, "show_default": True}
        if num_images_default is not None else {"required": num_images_required}
    )
    opts = [
        click.option("--num-images", type=click.IntRange(min=min_images),
                     help=num_images_help, **count),
        click.option("--seed", type=click.IntRange(0, MAX_SEED), help=seed_help,
                     **({} if seed_from_config else {"default": seed_default,
                                                      "show_default": True})),
        click.option("--batch-size", type=click.IntRange(min=1), default=default_batch,
                     show_default=True),
        click.option("--device", default=None, help="Torch device (default: cuda if available)."),
        click.option("--dtype", default="fp32", show_default=True, callback=_dtype,
                     help="U-Net dtype: fp32, bf16 or fp16 (float32, bfloat16, float16); "
                          "bf16/fp16 are for GPUs (on CPU they run, slowly)."),
        click.option("--prompt", "prompts", multiple=True,
                     help="Text pipelines: a prompt (repeat for several; images draw them in an "
                          "order shuffled by --seed, cycled)."),
        click.option("--prompt-file", type=click.Path(dir_okay=False), default=None,
                     help="Text pipelines: prompts, one per line, or a .jsonl / .csv / .tsv "
                          "file with a caption column; images draw them in an order shuffled "
                          "by --seed (N images: N distinct prompts when the file has N or more)."),
        click.option("--prompt-column", metavar="NAME", default=None, expose_value=False,
                     callback=_keep_in_context,
                     help="JSONL / CSV / TSV prompt files: the caption column (default: the "
                          "first of caption, prompt, text)."),
        click.option("--guidance-scale", type=click.FloatRange(min=0), default=None,
                     help="Text pipelines: classifier-free guidance scale (default: the "
                          "config's, else 7.5)."),
        click.option("--class-labels", default=None, metavar="LABELS",
                     help="Class-conditional models: labels cycled over images, e.g. 0-999 "
                          "or 3,7,9 (default: the config's)."),
        # Kept in the context (read by `conditioning`), so commands need no extra parameters.
        click.option("--init-images", metavar="DIR", default=None, expose_value=False,
                     callback=_keep_in_context,
                     help="img2img / inpaint / ControlNet: input images, cycled over images."),
        click.option("--mask-images", metavar="DIR", default=None, expose_value=False,
                     callback=_keep_in_context, help="Inpainting: masks, cycled like the images."),
    ]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate


def conditioning(prompts: tuple[str, ...], prompt_file: str | None, guidance_scale: float | None,
                 class_labels: str | None, cfg: StudyConfig | None = None) -> dict[str, Any]:
    """`flexopt.search.overrides.conditioning` with the context-kept flags (--prompt-column,
    --init-images, --mask-images)."""
    from flexopt.search.overrides import conditioning as merged

    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    return merged(prompts, prompt_file, guidance_scale, class_labels, cfg,
                  meta.get("flexopt.prompt_column"), meta.get("flexopt.init_images"),
                  meta.get("flexopt.mask_images"))


def clip_model_option(help_text: str):
    """--clip-model: the `transformers` CLIP (hub id or directory) that scores text alignment."""
    return click.option("--clip-model", metavar="ID", default=None, help=help_text)

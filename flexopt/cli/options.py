"""Click options and parsing shared by several sub-commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from flexopt.errors import FlexoptError
from flexopt.search.config import AUTO, SPACE_KINDS, SpaceChoices, StudyConfig
from flexopt.space.segment import parse_choices

MAX_SEED = 2**62  # torch generators take 64-bit seeds, and image i uses seed + i


def choice_list(flag: str, text: str | None) -> tuple[int, ...] | None:
    """Parse `19,20,21` (or a range `19-21`) for `flag`; None when the flag was not given."""
    if text is None:
        return None
    parts: list[str] = []
    for item in text.split(","):
        item = item.strip()
        lo, sep, hi = item.partition("-")
        if sep and lo.strip().isdigit() and hi.strip().isdigit():
            parts.extend(str(v) for v in range(int(lo), int(hi) + 1))
        else:
            parts.append(item)
    if parts == [""]:
        parts = []
    return parse_choices(flag, parts)


def space_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--space/--segments/--branches/--intervals/--steps/--t-ref`: the search-space choices
    (override a config)."""
    opts = [
        click.option(
            "--space",
            "space_kind",
            type=click.Choice(SPACE_KINDS),
            default=None,
            help="What the search chooses: segments (Flexiffusion: per segment a branch and an "
                 "interval on a uniform grid), timesteps (AutoDiffusion: which timesteps run, "
                 "all full steps) or hybrid (which timesteps run, each full or partial with a "
                 "branch). Default: the config's, else segments.",
        ),
        click.option(
            "--segments",
            metavar="LIST",
            help="N-segment choices, e.g. 19,20,21 (or a range 19-21), or 'auto': fitted to "
                 "the budget so that it sits inside the space's cost range.",
        ),
        click.option("--branches", metavar="LIST",
                     help="Branch choices (1-based), e.g. 1,2,3 (hybrid: of its partial steps)."),
        click.option(
            "--steps",
            metavar="LIST",
            help="timesteps / hybrid spaces: the step-count choices K, e.g. 22-24, or 'auto' "
                 "(default): fitted to the budget.",
        ),
        click.option(
            "--intervals",
            metavar="LIST",
            help="Interval choices, e.g. 1,2,3; the largest is the segment length L.",
        ),
        click.option(
            "--t-ref",
            "t_ref",
            type=int,
            metavar="T",
            help="Teacher's step count (avg MACs divide by it; default: the config's t_ref, "
                 "else 100).",
        ),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def resolve_space(
    config: StudyConfig | None,
    segments: str | None,
    branches: str | None,
    intervals: str | None,
    t_ref: int | None,
    kind: str | None = None,
    steps: str | None = None,
) -> SpaceChoices:
    """The space's choices from a config with flags overriding it, or from the flags alone
    (`segments` / `steps` may be "auto": the `SpaceChoices` field is then None)."""
    base = config.choices if config is not None else None
    kind = kind or (base.kind if base is not None else "segments")
    if kind != "segments":
        return _placed_choices(base, kind, branches, steps, t_ref)
    if steps is not None:
        raise FlexoptError("--steps applies to --space timesteps or hybrid; the segments space "
                           "takes --segments")
    auto = segments is not None and segments.strip().lower() == AUTO
    seg = None if auto else choice_list("--segments", segments)
    br = choice_list("--branches", branches)
    it = choice_list("--intervals", intervals)
    if t_ref is not None and t_ref < 1:
        raise FlexoptError(f"--t-ref {t_ref} is invalid; allowed: an integer >= 1")
    missing = [
        flag
        for flag, v in (("--segments", seg or auto), ("--branches", br), ("--intervals", it))
        if not v and base is None
    ]
    if missing:
        raise FlexoptError(
            f"no search space: give a study config (see studies/) or {', '.join(missing)}"
        )
    return SpaceChoices(
        None if auto else (seg if seg is not None else base.segments),
        br if br is not None else base.branches,
        it if it is not None else base.intervals,
        t_ref if t_ref is not None else (base.t_ref if base is not None else 100),
    )


def _placed_choices(base: SpaceChoices | None, kind: str, branches: str | None,
                    steps: str | None, t_ref: int | None) -> SpaceChoices:
    """Choices of a timestep / hybrid space: K choices ("auto" unless given) and, for the
    hybrid, branch choices (default: the config's, else 1,2,3)."""
    if t_ref is not None and t_ref < 1:
        raise FlexoptError(f"--t-ref {t_ref} is invalid; allowed: an integer >= 1")
    auto = steps is None or steps.strip().lower() == AUTO
    k = None if auto else choice_list("--steps", steps)
    if auto and steps is None and base is not None and base.kind == kind:
        k = base.steps
    br = choice_list("--branches", branches) or (base.branches if base is not None else (1, 2, 3))
    return SpaceChoices(
        base.segments if base is not None else None, br,
        base.intervals if base is not None else (1, 2, 3),
        t_ref if t_ref is not None else (base.t_ref if base is not None else 100),
        kind, k)


def load_config(path: str | None) -> StudyConfig | None:
    return StudyConfig.load(path) if path else None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


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


def open_pipeline(model: str, device: str | None, dtype: str):
    """Load MODEL's pipeline on `device` (default: cuda when available) in `dtype`."""
    from flexopt.models.loading import load_pipeline, parse_device, parse_dtype

    return load_pipeline(model, dtype=parse_dtype(dtype), device=parse_device(device))


def conditioning(prompts: tuple[str, ...], prompt_file: str | None, guidance_scale: float | None,
                 class_labels: str | None, cfg: StudyConfig | None = None) -> dict[str, Any]:
    """EvalSettings' prompts/guidance_scale/class_labels: flags first, else the study config's."""
    from flexopt.models.conditioning import (
        DEFAULT_GUIDANCE,
        list_images,
        parse_class_labels,
        parse_prompts,
    )

    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    column = meta.get("flexopt.prompt_column")
    from_config = not prompts and not prompt_file and cfg is not None and cfg.prompt_file
    if from_config:
        prompt_file = cfg.prompt_file
        column = column or cfg.prompt_column
    if guidance_scale is None and cfg is not None:
        guidance_scale = cfg.guidance_scale
    labels = parse_class_labels(class_labels) or (cfg.class_labels if cfg else ())
    try:
        parsed = parse_prompts(prompts, prompt_file, column)
    except FlexoptError as err:
        if not from_config:
            raise
        raise FlexoptError(f"{err} (the prompt_file of {cfg.source}; see studies/prompts/"
                           "README.md, or give --prompt-file)") from None
    inputs = {
        key: list_images(meta[f"flexopt.{name}"], f"--{name.replace('_', '-')}")
        for key, name in (("images", "init_images"), ("masks", "mask_images"))
        if meta.get(f"flexopt.{name}")
    }
    return {
        "prompts": parsed,
        "guidance_scale": DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale,
        "class_labels": labels,
        **inputs,
    }


def clip_model_option(help_text: str):
    """--clip-model: the `transformers` CLIP (hub id or directory) that scores text alignment."""
    return click.option("--clip-model", metavar="ID", default=None, help=help_text)

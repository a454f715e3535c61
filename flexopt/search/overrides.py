"""A study config with a command's values over it: the space's choices and the conditioning.

What every command that searches or scores does with its flags, as library calls: a value given
wins, else the config's, else the default.
"""

from __future__ import annotations

from typing import Any

from flexopt.errors import FlexoptError
from flexopt.search.config import AUTO, SpaceChoices, StudyConfig
from flexopt.space.segment import parse_choices


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


def conditioning(prompts: tuple[str, ...], prompt_file: str | None, guidance_scale: float | None,
                 class_labels: str | None, cfg: StudyConfig | None = None,
                 prompt_column: str | None = None, init_images: str | None = None,
                 mask_images: str | None = None) -> dict[str, Any]:
    """`EvalSettings`' prompts / guidance_scale / class_labels (and img2img / inpaint inputs):
    the command's values first, else the study config's."""
    from flexopt.models.conditioning import (
        DEFAULT_GUIDANCE,
        list_images,
        parse_class_labels,
        parse_prompts,
    )

    column = prompt_column
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
        key: list_images(folder, flag)
        for key, folder, flag in (("images", init_images, "--init-images"),
                                  ("masks", mask_images, "--mask-images"))
        if folder
    }
    return {
        "prompts": parsed,
        "guidance_scale": DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale,
        "class_labels": labels,
        **inputs,
    }

"""Click options and parsing shared by several sub-commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from flexopt.config import StudyConfig
from flexopt.errors import FlexoptError
from flexopt.space import SearchSpace, parse_choices


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
    """`--segments/--branches/--intervals/--t-ref`: the search-space choices (override a config)."""
    opts = [
        click.option(
            "--segments",
            metavar="LIST",
            help="N-segment choices, e.g. 19,20,21 (or a range 19-21).",
        ),
        click.option("--branches", metavar="LIST", help="Branch choices (1-based), e.g. 1,2,3."),
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
            help="Teacher's step count (avg MACs divide by it). Default 100.",
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
) -> SearchSpace:
    """The search space from a config with flags overriding it, or from the flags alone."""
    seg = choice_list("--segments", segments)
    br = choice_list("--branches", branches)
    it = choice_list("--intervals", intervals)
    if t_ref is not None and t_ref < 1:
        raise FlexoptError(f"--t-ref {t_ref} is invalid; allowed: an integer >= 1")
    base = config.space if config is not None else None
    missing = [
        flag
        for flag, v, attr in (
            ("--segments", seg, "segments"),
            ("--branches", br, "branches"),
            ("--intervals", it, "intervals"),
        )
        if v is None and base is None
    ]
    if missing:
        raise FlexoptError(
            f"no search space: give a study config (see studies/) or {', '.join(missing)}"
        )
    return SearchSpace(
        seg if seg is not None else base.segments,
        br if br is not None else base.branches,
        it if it is not None else base.intervals,
        t_ref if t_ref is not None else (base.t_ref if base is not None else 100),
    )


def load_config(path: str | None) -> StudyConfig | None:
    return StudyConfig.load(path) if path else None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))

"""`--space/--segments/--branches/--intervals/--steps/--t-ref`: the search-space flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from flexopt.search.config import COSTS, SPACE_KINDS


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


def cost_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--cost macs|latency`: what the budget prices."""
    return click.option(
        "--cost", type=click.Choice(COSTS), default=None,
        help="What the budget prices: macs (avg MACs per step, SPEC §1) or latency (wall-clock "
             "on this device, from the model's latency profile: `flexopt profile`, cached; "
             "budget as a speedup such as 3x or seconds per batch such as 1.5s). Default: the "
             "config's `cost`, else macs.")(func)

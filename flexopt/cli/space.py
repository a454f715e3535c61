"""`flexopt space`: inspect a search space and draw random candidates from it."""

from __future__ import annotations

import random

import click

from flexopt.cli.options import echo_json, load_config, resolve_space, space_options


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@space_options
@click.option(
    "--sample",
    "n_samples",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Draw K candidates uniformly at random and show their step types.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --sample.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def space(config, segments, branches, intervals, t_ref, n_samples, seed, as_json):
    """Show the size and shape of a segment-wise search space.

    CONFIG is a study TOML (see studies/); --segments/--branches/--intervals/--t-ref override it
    or define the space without one. Step types print one letter per base-grid slot:
    F full, P partial, N null, `|` between segments.

    \b
    Example:
      flexopt space --segments 19,20,21 --branches 1,2,3 --intervals 1,2,3 --sample 3
    """
    cfg = load_config(config)
    sp = resolve_space(cfg, segments, branches, intervals, t_ref)
    rng = random.Random(seed)
    samples = [sp.sample(rng) for _ in range(n_samples)]
    L = sp.segment_length
    if as_json:
        data = sp.describe()
        data["grid_length"] = {str(k): v for k, v in data["grid_length"].items()}
        data["samples"] = [
            {
                "n_segments": c.n_segments,
                "nfe": c.nfe,
                "segments": [{"branch": s.branch, "interval": s.interval} for s in c.segments],
                "steps": c.step_string(L),
            }
            for c in samples
        ]
        echo_json(data)
        return
    if cfg is not None:
        click.echo(f"study config: {cfg.source}")
    click.echo(f"N-segment choices : {','.join(map(str, sp.segments))}")
    click.echo(f"branch choices    : {','.join(map(str, sp.branches))}")
    click.echo(f"interval choices  : {','.join(map(str, sp.intervals))}")
    click.echo(f"t_ref             : {sp.t_ref}")
    click.echo(f"segment length L  : {L}")
    grid = " / ".join(f"{g} (N={n})" for n, g in sp.grid_lengths.items())
    click.echo(f"base grid slots   : {grid}")
    click.echo(f"candidates        : {sp.size:,} (~{float(sp.size):.3e})")
    for i, c in enumerate(samples, 1):
        click.echo(f"\nsample {i}: N={c.n_segments} NFE={c.nfe}")
        click.echo(f"  segments (branch/interval): {c}")
        click.echo(f"  steps: {c.step_string(L)}")

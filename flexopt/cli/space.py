"""`flexopt space`: inspect a search space and draw random candidates from it."""

from __future__ import annotations

import click

from flexopt.cli.options import echo_json, load_config
from flexopt.cli.space_options import cost_option, space_options
from flexopt.search.overrides import resolve_space


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
@click.option("--budget", help="Max avg MACs (3G, 250M) or a speedup (2.5x): print the space's "
                               "cost range next to it (needs a model: --model or CONFIG's).")
@click.option("--model", help="Pipeline directory, hub id, or flexopt:NAME whose MACs cost the "
                              "space (overrides CONFIG's; only its config is read, except "
                              "with --cost latency: then it is loaded and timed, once).")
@cost_option
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="--cost latency: the batch the latency profile times (the search's).")
@click.option("--device", default=None, help="--cost latency: the device it is timed on.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def space(config, space_kind, segments, branches, steps, intervals, t_ref, n_samples, seed, budget,
          model, cost, batch_size, device, as_json):
    """Show the size and shape of a search space, and its cost against a budget.

    CONFIG is a study TOML (see studies/); --segments/--branches/--intervals/--t-ref override it
    or define the space without one. Step types print one letter per base-grid slot:
    F full, P partial, N null, `|` between segments.

    \b
    Example:
      flexopt space --segments 19,20,21 --branches 1,2,3 --intervals 1,2,3 --sample 3
      flexopt space --space hybrid --model flexopt:fashion-mnist --t-ref 50 --budget 2x
    """
    from flexopt.search.space_summary import summarize_space

    cfg = load_config(config)
    choices = resolve_space(cfg, segments, branches, intervals, t_ref, space_kind, steps)
    summary = summarize_space(cfg, choices, n_samples, seed, budget, model, cost, batch_size,
                              device)
    if as_json:
        echo_json(summary.to_json())
        return
    for line in summary.lines():
        click.echo(line.text, err=line.err)

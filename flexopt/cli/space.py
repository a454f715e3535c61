"""`flexopt space`: inspect a search space and draw random candidates from it."""

from __future__ import annotations

import random

import click

from flexopt.cli.options import echo_json, load_config, resolve_space, space_options
from flexopt.errors import FlexoptError
from flexopt.run.budget import Budget, format_macs


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
                              "space (overrides CONFIG's; only its config is read).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def space(config, space_kind, segments, branches, steps, intervals, t_ref, n_samples, seed, budget,
          model, as_json):
    """Show the size and shape of a search space, and its cost against a budget.

    CONFIG is a study TOML (see studies/); --segments/--branches/--intervals/--t-ref override it
    or define the space without one. Step types print one letter per base-grid slot:
    F full, P partial, N null, `|` between segments.

    \b
    Example:
      flexopt space --segments 19,20,21 --branches 1,2,3 --intervals 1,2,3 --sample 3
      flexopt space --space hybrid --model flexopt:fashion-mnist --t-ref 50 --budget 2x
    """
    cfg = load_config(config)
    choices = resolve_space(cfg, segments, branches, intervals, t_ref, space_kind, steps)
    if choices.kind != "segments":
        _placed(cfg, choices, n_samples, seed, budget, model, as_json)
        return
    # the cost range needs the model's MACs: only when asked (--budget) or needed (auto segments)
    budget_ = Budget.parse(budget) if budget else (
        cfg.budget if cfg and choices.auto else None)
    model = model or (cfg.model if cfg else None)
    fit = None
    if budget_ is not None and model:
        from flexopt.models.loading import load_unet_config
        from flexopt.run.cost import count_macs, fit_space

        profile = count_macs(load_unet_config(model))
        limit = budget_.max_avg_macs(profile.full)
        fit = fit_space(profile, choices.t_ref, limit, choices.branches, choices.intervals,
                        choices.segments)
        sp = fit.space
    elif budget_ is not None:
        raise FlexoptError("--budget needs a model to cost the space: give --model (or a CONFIG "
                           "with `model = ...`)")
    else:
        sp = choices.space()
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
        if fit is not None:
            data["budget"] = _budget_json(fit, limit, "suggested_segments")
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
    if fit is not None:
        click.echo(f"model             : {model}, full step {format_macs(profile.full)} MACs")
        click.echo(f"budget            : avg MACs < {format_macs(limit)} ({budget_})"
                   + (" — N-segment choices fitted to it" if choices.auto else ""))
        click.echo(f"space cost        : {fit.costs}")
        if fit.warning:
            click.echo(f"warning: {fit.warning}", err=True)
    for i, c in enumerate(samples, 1):
        click.echo(f"\nsample {i}: N={c.n_segments} NFE={c.nfe}")
        click.echo(f"  segments (branch/interval): {c}")
        click.echo(f"  steps: {c.step_string(L)}")


def _placed(cfg, choices, n_samples, seed, budget, model, as_json) -> None:
    """`flexopt space` for the timestep and hybrid spaces (placed steps)."""
    budget_ = Budget.parse(budget) if budget else (cfg.budget if cfg and choices.auto else None)
    model = model or (cfg.model if cfg else None)
    total, offset, fit, limit = 1000, 0, None, None
    if model:
        from flexopt.models.loading import load_scheduler_config

        sched = load_scheduler_config(model)
        total, offset = int(sched.get("num_train_timesteps", 1000)), int(
            sched.get("steps_offset", 0) or 0)
    if budget_ is not None:
        if not model:
            raise FlexoptError("--budget needs a model to cost the space: give --model (or a "
                               "CONFIG with `model = ...`)")
        from flexopt.models.loading import load_unet_config
        from flexopt.run.cost import count_macs, fit_placed

        profile = count_macs(load_unet_config(model))
        limit = budget_.max_avg_macs(profile.full)
        fit = fit_placed(profile, choices.t_ref, limit, choices.kind, choices.branches,
                         choices.steps, total, offset)
        sp = fit.space
    else:
        sp = choices.space(total, offset)
    rng = random.Random(seed)
    samples = [sp.sample(rng) for _ in range(n_samples)]
    if as_json:
        data = sp.describe()
        data["samples"] = [sp.schedule(c).to_dict() for c in samples]
        if fit is not None:
            data["budget"] = _budget_json(fit, limit, "suggested_steps")
        echo_json(data)
        return
    if cfg is not None:
        click.echo(f"study config: {cfg.source}")
    click.echo(f"space             : {sp.kind}")
    click.echo(f"step-count choices: {','.join(map(str, sp.steps))}")
    if sp.branches:
        click.echo(f"branch choices    : {','.join(map(str, sp.branches))} (partial steps)")
    click.echo(f"t_ref             : {sp.t_ref}")
    click.echo(f"timesteps         : 0..{sp.train_timesteps - 1} (the model's training steps)")
    click.echo(f"candidates        : ~{float(sp.size):.3e}")
    if fit is not None:
        click.echo(f"budget            : avg MACs < {format_macs(limit)} ({budget_})"
                   + (" — step counts fitted to it" if choices.auto else ""))
        click.echo(f"space cost        : {fit.costs}")
        if fit.warning:
            click.echo(f"warning: {fit.warning}", err=True)
    for i, c in enumerate(samples, 1):
        schedule = sp.schedule(c)
        click.echo(f"\nsample {i}: K={schedule.nfe}")
        click.echo(f"  steps: {schedule.step_string()}")


def _budget_json(fit, limit: float, suggested: str) -> dict:
    """The `budget` part of `flexopt space --json`: the fit of the space to the budget."""
    return {"max_avg_macs": limit, "fits": fit.costs.fits(limit), "warning": fit.warning,
            suggested: list(fit.suggested),
            **{f"{k}_avg_macs": v for k, v in vars(fit.costs).items()}}

"""`flexopt search`: run or resume a study."""

from __future__ import annotations

import click

from flexopt.cli.metric_options import metric_options, reference_options
from flexopt.cli.options import clip_model_option, conditioning, generation_options, load_config
from flexopt.cli.search_options import worker_options
from flexopt.cli.space_options import cost_option, space_options
from flexopt.metrics.clip import DEFAULT_CLIP_MODEL
from flexopt.search.baselines import BASELINE_MODES
from flexopt.search.overrides import resolve_space
from flexopt.search.pruning import DEFAULT_PRUNER, PRUNERS
from flexopt.search.study import SAMPLER_NAMES
from flexopt.space.schedule import SAMPLERS


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--model", help="Pipeline directory, hub id, or flexopt:NAME (overrides CONFIG).")
@click.option("--budget", help="Max avg MACs (3G, 250M, 6.1e9) or a speedup (2.5x); with "
                               "--cost latency a wall-clock speedup (3x) or seconds (1.5s).")
@cost_option
@click.option("--n-trials", type=click.IntRange(min=1), default=None,
              help="Searched candidates to evaluate (all workers together; a candidate "
                   "stopped at a rung counts; default: CONFIG's n_trials or 100). Baselines, "
                   "and candidates the budget rejects before any image is made, run in "
                   "addition. Re-running continues up to it.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop this worker after so many minutes.")
@click.option("--storage", help="Optuna storage URL (default: sqlite:///STUDY_NAME.db here; "
                                "postgresql://… for several workers).")
@click.option("--study-name", help="Study name (default: CONFIG's, else 'flexopt').")
@click.option("--sampler", "search_sampler", type=click.Choice(SAMPLER_NAMES), default="evo",
              show_default=True, help="evo is Flexiffusion's evolutionary search; random, tpe "
                                      "and nsga2 are Optuna's, for comparison.")
@click.option("--schedule-sampler", type=click.Choice(SAMPLERS), default=None,
              help="Diffusion sampler of the schedules (default: CONFIG's, else ddim).")
@click.option("--multi-objective", is_flag=True,
              help="Minimise rFID and avg MACs together: one Pareto front instead of one "
                   "search per budget.")
@click.option("--baselines", "baselines_mode", type=click.Choice(BASELINE_MODES),
              default=BASELINE_MODES[0], show_default=True,
              help="Baselines evaluated first, in addition to --n-trials: feasible "
                   "(DeepCache-uniform, fewer-step teachers and DDIM-quadratic under the "
                   "budget), all (also those over it, for the report's plot), best (only the "
                   "strongest under the budget of each kind: quick), none. Those the space runs "
                   "exactly also join the population.")
@click.option("--pruner", type=click.Choice(PRUNERS), default=None,
              help=f"Stop hopeless candidates early: each reports its score after each rung "
                   f"of images and the pruner may stop it (population: a child goes on only "
                   f"if it is no worse than its best parent at the rung, a candidate without "
                   f"parents only if among the best [evolution] population; halving: "
                   f"successive halving, the best half goes on; median; hyperband; none). "
                   f"Default: CONFIG's, else {DEFAULT_PRUNER}.")
@click.option("--rungs", default=None, metavar="N,N,…",
              help="Image counts a candidate reports at, below the images per candidate "
                   "(default: CONFIG's [rfid] rungs, else auto: 8, 16, 32, … below it; 8 "
                   "alone for --pruner population).")
@click.option("--no-baselines", is_flag=True, help="Same as --baselines none.")
@worker_options
@click.option("--clip-guard", type=click.FloatRange(min=0), default=None, metavar="D",
              help="Text pipelines: a trial whose CLIP score is under the teacher's minus D is "
                   "infeasible (an Optuna constraint, like the budget: never a parent, never "
                   "the best). Default: no guard, or the config's [rfid] clip_guard.")
@clip_model_option("CLIP model for --clip-guard, a hub id or a save_pretrained folder "
                   f"(default: {DEFAULT_CLIP_MODEL}); given alone, trials record their CLIP "
                   "score unguarded.")
@space_options
@generation_options(default_batch=64, min_images=2, num_images_required=False,
                    num_images_help="Images per candidate (default: CONFIG's, else 1000).",
                    seed_from_config=True)
@metric_options(search=True)
@reference_options(None, split_default=None)
def search(config, model, budget, cost, n_trials, timeout, storage, study_name, search_sampler,
           schedule_sampler, multi_objective, baselines_mode, no_baselines, pruner, rungs,
           search_seed, artifacts,
           no_artifacts, workers, heartbeat, prefix_cache_mb, clip_guard, clip_model,
           space_kind, segments, branches, steps, intervals, t_ref, num_images, seed, batch_size,
           device, dtype, prompts, prompt_file, guidance_scale, class_labels, metric, cache_dir,
           inception_weights, reference, reference_split, reference_images):
    """Search fast schedules for MODEL under a MACs budget (an Optuna study).

    --space picks what is searched: segments (Flexiffusion's segment-wise full / partial / null
    steps, the default), timesteps (AutoDiffusion: which timesteps run) or hybrid (which
    timesteps run, each full or partial).

    CONFIG is a study TOML (see studies/); flags override it. Each candidate is checked against
    the budget before anything runs, then scored by rFID of NUM_IMAGES images against the
    teacher's from the same noises (teacher statistics are cached; --metric fid --reference DATA:
    FID against a data set). The study lives in STORAGE: re-running the same command resumes it,
    and several workers may share one study.

    \b
    Example:
      flexopt search studies/ddpm-cifar10-3.0G.toml --model path/to/ddpm-cifar10 --n-trials 300
    """
    import optuna

    from flexopt.search.job import SearchJob, run_search, summary

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the command prints its own lines
    cfg = load_config(config)
    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels, cfg)
    job = SearchJob.from_config(
        cfg, model=model, budget=budget, n_trials=n_trials, storage=storage,
        study_name=study_name, search_sampler=search_sampler, sampler=schedule_sampler,
        space=resolve_space(cfg, segments, branches, intervals, t_ref, space_kind, steps),
        multi_objective=multi_objective, baselines="none" if no_baselines else baselines_mode,
        pruner=pruner, rungs=rungs, search_seed=search_seed,
        artifacts=artifacts, upload_artifacts=not no_artifacts, num_images=num_images, seed=seed,
        batch_size=batch_size, device=device, dtype=dtype, metric=metric, cache_dir=cache_dir,
        inception_weights=inception_weights, timeout=timeout * 60 if timeout else None,
        heartbeat=heartbeat, workers=workers, prefix_cache_mb=prefix_cache_mb,
        clip_guard=clip_guard, clip_model=clip_model, cost=cost, reference=reference,
        reference_split=reference_split, reference_images=reference_images, **cond)
    try:
        result = run_search(job, log=click.echo)
    except KeyboardInterrupt:
        click.echo("interrupted: the running trial is back in the queue; run the same command "
                   "to continue", err=True)
        raise SystemExit(130) from None
    for line in summary(result, job.metric, job.baselines):
        click.echo(line)

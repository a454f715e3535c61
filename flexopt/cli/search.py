"""`flexopt search` (run or resume a study) and `flexopt export` (write a trial's schedule)."""

from __future__ import annotations

import click

from flexopt.cli.options import (
    conditioning,
    generation_options,
    load_config,
    resolve_space,
    space_options,
)
from flexopt.cli.rfid import build_evaluator, metric_options, teacher_entry
from flexopt.config import Budget, StudyConfig, format_macs
from flexopt.errors import FlexoptError
from flexopt.schedule import SAMPLERS
from flexopt.study import BASELINE_MODES, SAMPLER_NAMES


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--model", help="Pipeline directory, hub id, or flexopt:NAME (overrides CONFIG).")
@click.option("--budget", help="Max avg MACs (3G, 250M, 6.1e9) or a speedup (2.5x).")
@click.option("--n-trials", type=click.IntRange(min=1), default=None,
              help="Stop when the study holds this many finished trials, baselines included "
                   "(all workers; default: CONFIG's n_trials or 100). Re-running continues "
                   "up to it.")
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
@click.option("--baselines", "baselines_mode", type=click.Choice(BASELINE_MODES), default="all",
              show_default=True,
              help="Baselines evaluated first: all (DeepCache-uniform and fewer-step teachers, "
                   "under-budget ones first), best (only the strongest under the budget of each "
                   "kind: quick), none. Those the space runs exactly also join the population.")
@click.option("--no-baselines", is_flag=True, help="Same as --baselines none.")
@click.option("--search-seed", type=int, default=None,
              help="Seed of this worker's sampler (default: random; give one per worker).")
@click.option("--artifacts", type=click.Path(file_okay=False), default=None,
              help="Artifact store for sample grids (default for sqlite:///x.db: x-artifacts/).")
@click.option("--no-artifacts", is_flag=True, help="Do not upload sample grids.")
@space_options
@generation_options(default_batch=64, min_images=2, num_images_required=False,
                    num_images_help="Images per candidate (default: CONFIG's, else 1000).",
                    seed_from_config=True)
@metric_options
def search(config, model, budget, n_trials, timeout, storage, study_name, search_sampler,
           schedule_sampler, multi_objective, baselines_mode, no_baselines, search_seed, artifacts,
           no_artifacts,
           segments, branches,
           intervals, t_ref, num_images, seed, batch_size, device, dtype, prompts, prompt_file,
           guidance_scale, class_labels, metric, cache_dir, inception_weights):
    """Search segment-wise schedules for MODEL under a MACs budget (an Optuna study).

    CONFIG is a study TOML (see studies/); flags override it. Each candidate is checked against
    the budget before anything runs, then scored by rFID of NUM_IMAGES images against the
    teacher's from the same noises (teacher statistics are cached). The study lives in STORAGE:
    re-running the same command resumes it, and several workers may share one study.

    \b
    Example:
      flexopt search studies/ddpm-cifar10-3.0G.toml --model path/to/ddpm-cifar10 --n-trials 300
    """
    import optuna
    from optuna.trial import TrialState

    from flexopt.config import EvolutionConfig
    from flexopt.cost import fit_space
    from flexopt.study import (
        Objective,
        SearchSettings,
        baseline_schedules,
        check_space_fits,
        default_storage,
        enqueue_baselines,
        feasibility,
        feasible_trials,
        finished,
        make_sampler,
        make_storage,
        open_study,
        run,
    )

    cfg = load_config(config)
    choices = resolve_space(cfg, segments, branches, intervals, t_ref)
    model = model or (cfg.model if cfg else None)
    if not model:
        raise FlexoptError("no model: give --model (a pipeline directory or hub id) or a CONFIG "
                           "with `model = ...`")
    budget_ = Budget.parse(budget) if budget else (cfg.budget if cfg else None)
    if budget_ is None and not multi_objective:
        raise FlexoptError("no budget: give --budget (e.g. 3G or 2.5x), a CONFIG with "
                           "`budget = ...`, or --multi-objective")
    if budget_ is None and choices.auto:
        raise FlexoptError("segments = \"auto\" fits the space to a budget: give --budget, or "
                           "explicit --segments")
    num_images = num_images or (cfg.num_images if cfg else StudyConfig.num_images)
    seed = seed if seed is not None else (cfg.seed if cfg else StudyConfig.seed)
    sampler = schedule_sampler or (cfg.sampler if cfg else "ddim")
    study_name = study_name or (cfg.study_name if cfg and cfg.study_name else "flexopt")
    storage = storage or (cfg.storage if cfg and cfg.storage else default_storage(study_name))
    n_trials = n_trials or (cfg.n_trials if cfg and cfg.n_trials else 100)
    evolution = cfg.evolution if cfg else None

    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels, cfg)
    ev = build_evaluator(model, sampler, choices.t_ref, num_images, seed, batch_size, device,
                         dtype, cond, metric, cache_dir, inception_weights)
    limit = budget_.max_avg_macs(ev.full_macs) if budget_ else None
    click.echo(f"model {model}: full step {format_macs(ev.full_macs)} MACs, max branch "
               f"{ev.profile.max_branch}; teacher {sampler} {choices.t_ref} steps")
    bad = [b for b in choices.branches if b > ev.profile.max_branch]
    if bad:
        raise FlexoptError(f"branch choice {bad[0]} is beyond this model; allowed: "
                           f"1..{ev.profile.max_branch}")
    if budget_ is not None and budget_.macs is not None and budget_.macs < 1e3:
        raise FlexoptError(  # `--budget 2.5`: a forgotten unit or x, not 2.5 MACs
            f"budget {budget_.macs:g} means {budget_.macs:g} avg MACs, far below a step of this "
            f"model ({format_macs(ev.full_macs)}); allowed: avg MACs such as 3G or 250M, or a "
            f"speedup such as {budget_.macs:g}x")
    if limit is not None:
        fit = fit_space(ev.profile, choices.t_ref, limit, choices.branches, choices.intervals,
                        choices.segments)
        space = fit.space
        click.echo(f"budget: avg MACs < {format_macs(limit)} "
                   f"({ev.full_macs / limit:.2f}x fewer than the teacher)")
        click.echo(f"space: N-segment {','.join(map(str, space.segments))}"
                   + (" (fitted to the budget)" if choices.auto else "")
                   + f", branches {','.join(map(str, space.branches))}, intervals "
                   f"{','.join(map(str, space.intervals))}; cost {fit.costs}")
        if fit.warning:
            click.echo(f"warning: {fit.warning}", err=True)
    else:
        space = choices.space()
    check_space_fits(space, sampler, ev, limit,
                     ev.pipe.scheduler.config.get("num_train_timesteps"))
    settings = SearchSettings(space, sampler, budget_, multi_objective, metric, model,
                              num_images, seed, ev.settings.conditioning())
    smp = make_sampler(search_sampler, space, feasibility(space, sampler, ev, limit),
                       evolution or EvolutionConfig(), search_seed)
    # open (and check) the study before the teacher: a refused resume should not cost its images
    study = open_study(make_storage(storage), study_name, settings, smp)
    entry = teacher_entry(ev)
    click.echo(f"teacher cache {'reused' if entry.status == 'hit' else entry.status}: {entry.path}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if no_baselines:
        baselines_mode = "none"
    if baselines_mode != "none":
        bl = baseline_schedules(space, sampler, ev.full_macs, ev.avg_macs, limit,
                                mode=baselines_mode)
        added = enqueue_baselines(study, bl, space)
        if added:
            click.echo(f"enqueued {added} baselines (DeepCache uniform, fewer-step teacher)")
    grids = None
    if not no_artifacts:
        from flexopt.artifacts import SampleGridUploader

        grids = SampleGridUploader.for_storage(storage, artifacts)
        grids.teacher(study, entry.preview)
    objective = Objective(space, ev, sampler, limit, multi_objective, grids)
    done = run(study, objective, n_trials, timeout=timeout * 60 if timeout else None)
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    total = finished(study)
    stopped_by_time = timeout is not None and total < n_trials
    searched = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   if "baseline" not in t.user_attrs)
    click.echo(f"study {study_name!r} in {storage}: ran {done} trials this time, "
               f"{total} finished in all ({searched} searched candidates evaluated)")
    if stopped_by_time:
        click.echo(f"stopped by the time limit ({timeout:g} min) before {n_trials} trials; run "
                   "the same command again to continue the study")
    elif queued:
        click.echo(f"{queued} trials still queued: run again with a larger --n-trials")
    feasible = feasible_trials(study)
    for label, group in (("searched", [t for t in feasible if "baseline" not in t.user_attrs]),
                         ("baseline", [t for t in feasible if "baseline" in t.user_attrs])):
        if not group:
            continue
        b = group[0]
        name = f" ({b.user_attrs['baseline']})" if "baseline" in b.user_attrs else ""
        click.echo(f"best {label} under budget: trial {b.number}{name}, {metric} "
                   f"{b.values[0]:.4g}, avg MACs {format_macs(b.user_attrs['avg_macs'])} "
                   f"({b.user_attrs['speedup']:.2f}x), NFE {b.user_attrs['nfe']}")
        click.echo(f"  steps: {b.user_attrs['step_types']}")
    if feasible and "baseline" in feasible[0].user_attrs:
        click.echo(f"the best under the budget is a baseline ({feasible[0].user_attrs['baseline']})"
                   ": no searched candidate scored better on the search's images")
    click.echo("next:")
    click.echo(f"  flexopt export --storage {storage} --study-name {study_name} --best "
               "--out best.json   # the best under budget"
               + ("" if baselines_mode == "none" else ", baselines included"))
    click.echo(f"  flexopt validate --storage {storage} --study-name {study_name} --num-images "
               "1000   # best searched vs best baseline on unseen seeds")
    click.echo(f"  flexopt report --storage {storage} --study-name {study_name} --out report.html")
    click.echo(f"  flexopt dashboard --storage {storage}")


@click.command()
@click.option("--storage", required=True, help="Optuna storage URL of the study.")
@click.option("--study-name", default=None,
              help="Study to export from (default: the only study in STORAGE).")
@click.option("--trial", "trial_number", type=click.IntRange(min=0), default=None,
              help="Export this trial's schedule.")
@click.option("--best", is_flag=True,
              help="Export the best complete trial under the budget (lowest first objective).")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Schedule file to write (flexopt.schedule/1 JSON).")
def export(storage, study_name, trial_number, best, out):
    """Write a trial's schedule to a file that `generate`, `rfid` and `apply_schedule` read."""
    from optuna.trial import TrialState

    from flexopt.schedule import Schedule
    from flexopt.study import feasible_trials, load_study, trial_schedule

    if (trial_number is None) == (not best):
        raise FlexoptError("give exactly one of --trial N and --best")
    study = load_study(storage, study_name)
    study_name = study.study_name
    if best:
        candidates = feasible_trials(study)
        if not candidates:
            raise FlexoptError(f"study {study_name!r} has no complete trial under its budget yet")
        trial = candidates[0]
    else:
        numbers = [t.number for t in study.trials]
        if trial_number not in numbers:
            raise FlexoptError(f"trial {trial_number} is not in study {study_name!r}; allowed: "
                               f"0..{max(numbers) if numbers else -1}")
        trial = study.trials[trial_number]
        if trial.state != TrialState.COMPLETE:
            raise FlexoptError(f"trial {trial_number} is {trial.state.name}, not COMPLETE; "
                               "export a complete trial")
    schedule = trial_schedule(study, trial)
    if best and "baseline" in trial.user_attrs:
        searched = [t for t in candidates if "baseline" not in t.user_attrs]
        versus = (f"the best searched candidate, trial {searched[0].number}, scored "
                  f"{searched[0].values[0]:.4g}" if searched else
                  "no searched candidate under the budget was evaluated")
        click.echo(f"the best under the budget is a baseline, {trial.user_attrs['baseline']} "
                   f"(trial {trial.number}, {trial.values[0]:.4g}): {versus}; `flexopt validate` "
                   "compares the two on unseen seeds")
    meta = {"study": study_name, "trial": trial.number, "objective": list(trial.values),
            **{k: trial.user_attrs[k] for k in ("avg_macs", "speedup", "nfe", "baseline")
               if k in trial.user_attrs}}
    Schedule(schedule.sampler, schedule.t_ref, schedule.segment_length, schedule.segments,
             meta).save(out)
    click.echo(f"wrote trial {trial.number} ({schedule.step_string()}) to {out}")

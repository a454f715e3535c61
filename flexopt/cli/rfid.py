"""`flexopt teacher` (build or reuse the teacher cache) and `flexopt rfid` (score a schedule)."""

from __future__ import annotations

import click

from flexopt.cli.metric_options import bootstrap_option, metric_options
from flexopt.cli.options import conditioning, echo_err, generation_options
from flexopt.space.schedule import SAMPLERS


@click.command()
@click.argument("model")
@click.option("--steps", "--t-ref", "t_ref", type=click.IntRange(min=1), default=100,
              show_default=True, help="Teacher's step count T_ref.")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="ddim", show_default=True,
              help="Teacher's sampler.")
@generation_options(default_batch=64, min_images=2)
@metric_options(metric=False)
def teacher(model, t_ref, sampler, num_images, seed, batch_size, device, dtype, prompts,
            prompt_file, guidance_scale, class_labels, cache_dir, inception_weights):
    """Build (or reuse) the teacher's cached Inception statistics for MODEL.

    The teacher runs T_ref full steps of SAMPLER on NUM_IMAGES noises (image i: seed + i). The
    cache is keyed by the model weights, pipeline and scheduler config, sampler, T_ref, seeds,
    image count, prompts, dtype and feature network; a corrupt entry is detected and rebuilt.

    \b
    Example:
      flexopt teacher path/to/ddpm-cifar10 --num-images 1000 --seed 0 --steps 100
    """
    from flexopt.search.scoring import build_evaluator, teacher_entry

    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels)
    ev = build_evaluator(model, sampler, t_ref, num_images, seed, batch_size, device, dtype, cond,
                         "rfid", cache_dir, inception_weights, note=echo_err)
    entry = teacher_entry(ev, log=echo_err)
    verb = {"hit": "reused", "built": "built", "rebuilt": "rebuilt"}[entry.status]
    click.echo(f"teacher cache {verb}: {entry.path}")
    click.echo(f"  {sampler} {t_ref} steps, {num_images} images from seed {seed}, "
               f"feature dim {entry.stats.dim}")


@click.command()
@click.argument("model")
@click.option("--schedule", "schedule_paths", required=True, multiple=True,
              type=click.Path(dir_okay=False),
              help="Schedule file to score (its sampler and t_ref define the teacher). Repeat it "
                   "to score several schedules of one teacher on the same seeds.")
@generation_options(default_batch=64, min_images=2)
@bootstrap_option("rfid: resample the images N times, the teacher's with them (paired by noise), "
                  "for each rFID's standard error and a 95% interval on each schedule's "
                  "difference from the first (about 0.05 s per resample and schedule for 1,000 "
                  "images on 2 cores). 0: off.")
@metric_options
def rfid(model, schedule_paths, num_images, seed, batch_size, resamples, device, dtype, prompts,
         prompt_file, guidance_scale, class_labels, metric, cache_dir, inception_weights):
    """Score a schedule: rFID of its images against the teacher's, from the same noises.

    The teacher is the schedule's sampler with t_ref full steps; its statistics come from the
    cache (built on first use). --metric kid prints KID instead, --metric paired the mean
    per-image feature distance. With several --schedule files, --bootstrap says whether their
    rFID differences are more than the seeds' noise; their features are cached, so a re-run
    with another schedule generates only that one.

    \b
    Example:
      flexopt rfid path/to/ddpm-cifar10 --schedule best.json --num-images 1000 --seed 0
      flexopt rfid flexopt:fashion-mnist --schedule teacher19.json --schedule best.json \\
          --num-images 1000 --seed 100000 --bootstrap 1000
    """
    from flexopt.search.scoring import (
        bootstrap_lines,
        build_evaluator,
        score_schedule,
        scored_features,
        teacher_entry,
    )
    from flexopt.space.schedule import Schedule

    if resamples and metric != "rfid":
        raise click.BadParameter(f"--bootstrap resamples rFID, not {metric}; allowed with "
                                 "--metric rfid", param_hint="--bootstrap")
    schedules = [Schedule.load(p) for p in schedule_paths]
    first = schedules[0]
    for path, s in zip(schedule_paths[1:], schedules[1:], strict=True):
        if (s.sampler, s.t_ref) != (first.sampler, first.t_ref):
            raise click.BadParameter(
                f"{path} is scored against {s.sampler} {s.t_ref} steps, {schedule_paths[0]} "
                f"against {first.sampler} {first.t_ref}; allowed: schedules of one teacher "
                "(the same sampler and t_ref)", param_hint="--schedule")
    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels)
    ev = build_evaluator(model, first.sampler, first.t_ref, num_images, seed, batch_size,
                         device, dtype, cond, metric, cache_dir, inception_weights, note=echo_err)
    entry = teacher_entry(ev, log=echo_err)
    click.echo(f"teacher cache {'reused' if entry.status == 'hit' else entry.status}: {entry.path}")
    if len(schedules) == 1 and not resamples:
        for line in score_schedule(ev, first).lines():
            click.echo(line)
        return
    if metric != "rfid":
        for path, s in zip(schedule_paths, schedules, strict=True):
            for line in score_schedule(ev, s).lines():
                click.echo(f"{path}: {line}")
        return
    teacher = entry.stats
    if resamples and teacher.features is None:  # before generating anything
        raise click.ClickException("the teacher's cached entry has no raw features to "
                                   "resample; rebuild it (flexopt teacher)")
    features = scored_features(ev, teacher, schedules, schedule_paths, "rfid", log=click.echo)
    if resamples:
        for line in bootstrap_lines(teacher, features, schedule_paths, resamples,
                                    reference_features=teacher.features, metric="rfid"):
            click.echo(line)

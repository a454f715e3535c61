"""`flexopt teacher` (build or reuse the teacher cache) and `flexopt rfid` (score a schedule)."""

from __future__ import annotations

import click

from flexopt.cli.metric_options import metric_options
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
@click.option("--schedule", "schedule_path", required=True, type=click.Path(dir_okay=False),
              help="Schedule file to score (its sampler and t_ref define the teacher).")
@generation_options(default_batch=64, min_images=2)
@metric_options
def rfid(model, schedule_path, num_images, seed, batch_size, device, dtype, prompts, prompt_file,
         guidance_scale, class_labels, metric, cache_dir, inception_weights):
    """Score a schedule: rFID of its images against the teacher's, from the same noises.

    The teacher is the schedule's sampler with t_ref full steps; its statistics come from the
    cache (built on first use). --metric kid prints KID instead, --metric paired the mean
    per-image feature distance.

    \b
    Example:
      flexopt rfid path/to/ddpm-cifar10 --schedule best.json --num-images 1000 --seed 0
    """
    from flexopt.search.scoring import build_evaluator, score_schedule, teacher_entry
    from flexopt.space.schedule import Schedule

    schedule = Schedule.load(schedule_path)
    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels)
    ev = build_evaluator(model, schedule.sampler, schedule.t_ref, num_images, seed, batch_size,
                         device, dtype, cond, metric, cache_dir, inception_weights, note=echo_err)
    entry = teacher_entry(ev, log=echo_err)
    click.echo(f"teacher cache {'reused' if entry.status == 'hit' else entry.status}: {entry.path}")
    for line in score_schedule(ev, schedule).lines():
        click.echo(line)

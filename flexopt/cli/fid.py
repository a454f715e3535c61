"""`flexopt fid`: the standard FID of schedules' images against a real data set."""

from __future__ import annotations

import click

from flexopt.cli.metric_options import bootstrap_option, metric_options, reference_options
from flexopt.cli.options import conditioning, echo_err, generation_options


@click.command()
@click.argument("model")
@click.option("--schedule", "schedule_paths", required=True, multiple=True,
              type=click.Path(dir_okay=False),
              help="Schedule file to run (e.g. the teacher's: see `flexopt export`). Repeat it to "
                   "score several schedules on the same seeds.")
@reference_options("fashion-mnist")
@generation_options(default_batch=64, min_images=2)
@bootstrap_option("Resample the images N times (the same resamples for every schedule) for "
                  "each FID's standard error and a 95% interval on each schedule's difference "
                  "from the first; 200 resamples give the SE, 1,000 a steadier interval (about "
                  "1 s per resample and schedule for 4,000 images on 2 cores). 0: off.")
@metric_options(metric=False)
def fid(model, schedule_paths, reference, reference_split, reference_images, num_images, seed,
        batch_size, resamples, device, dtype, prompts, prompt_file, guidance_scale, class_labels,
        cache_dir, inception_weights):
    """Standard FID of a schedule's images against a real data set (not the teacher).

    Use seeds the search never saw (--seed) to judge a searched schedule fairly. With several
    --schedule files every one runs on the same noises, and --bootstrap says whether their
    differences are more than the seeds' noise (a paired bootstrap).

    \b
    Example:
      flexopt fid flexopt:fashion-mnist --schedule best.json --num-images 10000 --seed 100000
      flexopt fid flexopt:fashion-mnist --schedule teacher100.json --schedule teacher50.json \\
          --num-images 2000 --seed 300000 --bootstrap 200
    """
    from flexopt.search.scoring import (
        bootstrap_lines,
        build_evaluator,
        scored_features,
    )
    from flexopt.space.schedule import Schedule

    schedules = [Schedule.load(p) for p in schedule_paths]
    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels)
    ev = build_evaluator(model, schedules[0].sampler, schedules[0].t_ref, num_images, seed,
                         batch_size, device, dtype, cond, "rfid", cache_dir, inception_weights,
                         note=echo_err)
    ref = ev.reference(reference, reference_split, reference_images)
    click.echo(f"reference statistics {'reused' if ref.status == 'hit' else ref.status}: "
               f"{reference} {reference_split}, {ref.stats.n} images")
    features = scored_features(ev, ref.stats, schedules, schedule_paths, log=click.echo)
    if resamples:
        for line in bootstrap_lines(ref.stats, features, schedule_paths, resamples):
            click.echo(line)

"""`flexopt validate`: the search's answer against the best baseline, on unseen seeds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from flexopt.cli.metric_options import bootstrap_option, metric_options, reference_options
from flexopt.cli.options import clip_model_option, conditioning, generation_options
from flexopt.cli.report_options import storage_options
from flexopt.cli.space_options import cost_option
from flexopt.errors import FlexoptError
from flexopt.metrics.clip import DEFAULT_CLIP_MODEL

DEFAULT_SEED = 100_000  # far from a search's seeds (0 … num_images - 1 by default)


@click.command()
@storage_options(artifacts=False)
@click.option("--trial", "trials", type=click.IntRange(min=0), multiple=True,
              help="Also score this trial (repeat for several).")
@reference_options(None)
@click.option("--model", default=None,
              help="The study's model from another place (default: the one it was searched on).")
@clip_model_option("Text pipelines: the CLIP model of the CLIP column (default: the one the "
                   f"study was searched with, else {DEFAULT_CLIP_MODEL}); none: no column.")
@bootstrap_option("Resample the held-out images N times (paired: the same images for every "
                  "schedule and the teacher) for each difference's SE and 95% interval, and a "
                  "verdict of beats / loses / not distinguishable; 1,000 for steady ends. "
                  "0: point estimates only.")
@cost_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the table as JSON to this file.")
@generation_options(default_batch=64, min_images=2, num_images_default=1000,
                    num_images_help="Held-out images per schedule.", seed_default=DEFAULT_SEED)
@metric_options(metric=False)
def validate(storage, study_name, trials, reference, reference_split, reference_images, model,
             clip_model, resamples, cost, json_out, num_images, seed, batch_size, device, dtype,
             prompts, prompt_file, guidance_scale, class_labels, cache_dir, inception_weights):
    """Score a study's best searched schedule against its baselines on seeds it never used.

    The search picks the best of many noisy scores on its own images, which flatters the winner
    (SPEC §3). This scores the best searched schedule and the strongest baseline of each family
    under the budget (plus any --trial) on NUM_IMAGES fresh images (seeds SEED, SEED+1, …;
    default 100000): rFID against the teacher's images from the same noises, and with
    --reference the standard FID against real images. Text and class-conditional studies take
    the same --prompt-file / --class-labels as their search. --bootstrap gives each difference
    an interval; the result is kept on the study, and `flexopt report` shows it.

    \b
    Example:
      flexopt validate --storage sqlite:///flexopt-demo/demo.db --num-images 1000 \\
          --reference fashion-mnist
    """
    from flexopt.search.scoring import build_evaluator
    from flexopt.search.study import load_study, settings_of
    from flexopt.search.validation import check_conditioning, validation_latency
    from flexopt.search.validation import validate as run_validation

    study = load_study(storage, study_name)
    s = settings_of(study)
    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels)
    ev = build_evaluator(model or s["model"], s["sampler"], s["t_ref"], num_images, seed,
                         batch_size, device, dtype, cond, "rfid", cache_dir, inception_weights,
                         clip_model=clip_model or s.get("clip_model") or "auto")
    check_conditioning(study, ev)  # before the reference statistics, which may take minutes
    ref = None if reference is None else ev.reference(
        reference, reference_split, reference_images).stats
    latency = validation_latency(study, ev, cost)
    result = run_validation(study, ev, trials, ref, reference, progress=True, bootstrap=resamples,
                            latency=latency)
    if result.overlap:
        click.echo(f"warning: {result.overlap} of these {num_images} seeds were also the "
                   "search's; use --seed beyond them for a fair check", err=True)
    click.echo(f"study {study.study_name!r}: {num_images} held-out images from seed {seed}"
               + (f"; FID against {ref.n} {reference} {reference_split} images" if ref else ""))
    for line in result.table():
        click.echo(line)
    click.echo(result.verdict())
    if json_out:
        try:
            Path(json_out).write_text(json.dumps(result.to_dict(), indent=2))
        except OSError as err:
            raise FlexoptError(f"--json {json_out!r} cannot be written: {err.strerror}") from None
        click.echo(f"wrote {json_out}")

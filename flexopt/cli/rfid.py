"""`flexopt teacher` (build or reuse the teacher cache) and `flexopt rfid` (score a schedule)."""

from __future__ import annotations

import warnings

import click

from flexopt.cli.options import conditioning, generation_options, open_pipeline
from flexopt.run.budget import format_macs
from flexopt.space.schedule import SAMPLERS


def metric_options(func=None, *, metric: bool = True):
    """--metric/--cache-dir/--inception-weights: how images are scored and where caches live.

    `metric=False` leaves out --metric (the teacher cache serves every metric)."""
    if func is None:
        return lambda f: metric_options(f, metric=metric)
    from flexopt.metrics import METRICS

    for opt in reversed([
        *([click.option("--metric", type=click.Choice(list(METRICS)), default="rfid",
                        show_default=True,
                        help="rfid (Fréchet distance to the teacher's features), kid, or paired "
                             "(mean feature distance per noise).")] if metric else []),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Cache for teacher statistics and Inception weights "
                          "(default: $FLEXOPT_CACHE_DIR or ~/.cache/flexopt)."),
        click.option("--inception-weights", type=click.Path(dir_okay=False), default=None,
                     help="FID Inception weights to use (state dict or TorchScript)."),
    ]):
        func = opt(func)
    return func


def reference_options(default: str | None):
    """--reference/--reference-split/--reference-images: real images for the standard FID."""
    opts = [
        click.option("--reference", default=default, show_default=default is not None,
                     help="Real images for the standard FID: fashion-mnist, digits, or a folder "
                          "of images."),
        click.option("--reference-split", type=click.Choice(["train", "test"]), default="test",
                     show_default=True),
        click.option("--reference-images", type=click.IntRange(min=2), default=None,
                     help="Use the first N reference images (default: all)."),
    ]

    def decorate(func):
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate


def reference_entry(ev, reference, split, num_images, cache_dir):
    """The reference images' cached Inception statistics, in the evaluator's feature space."""
    from flexopt.metrics.reference import reference_stats

    size = ev.pipe.unet.config.sample_size
    size = size if isinstance(size, int) else size[0]
    return reference_stats(reference, split, size, ev.extractor, ev.extractor.weights.sha256,
                           num_images, cache_dir, progress=True)


def build_evaluator(model, sampler, t_ref, num_images, seed, batch_size, device, dtype,
                    cond, metric, cache_dir, inception_weights, progress=True, clip_model=None):
    """A `ModelEvaluator` from command-line values (shared by rfid, teacher, fid, validate and
    clip-score).

    `cond` is `conditioning(...)`'s prompts/guidance_scale/class_labels; `clip_model`: also
    load that CLIP model (a text pipeline with prompts is checked first); "auto": the default
    CLIP model for a text pipeline given prompts, none otherwise; "none": none."""
    from flexopt.metrics.clip import DEFAULT_CLIP_MODEL
    from flexopt.run.pipeline import pipeline_kind
    from flexopt.search.evaluator import EvalSettings, ModelEvaluator, check_clip

    pipe = open_pipeline(model, device, dtype)
    settings = EvalSettings(num_images, seed, batch_size, metric, **cond)
    clip = None
    if clip_model == "auto":
        text = pipeline_kind(pipe) != "unconditional" and settings.prompts
        clip_model = DEFAULT_CLIP_MODEL if text else None
    if clip_model is not None and clip_model.lower() != "none":
        from flexopt.metrics.clip import ClipScorer

        check_clip(pipe, settings)
        clip = ClipScorer.load(clip_model, pipe._execution_device, batch_size)
    elif pipeline_kind(pipe) != "unconditional" and not settings.prompts:
        click.echo("note: no prompts given, so every image uses the empty prompt; give "
                   "--prompt-file (or `prompt_file` in the config's [rfid])", err=True)
    return ModelEvaluator(pipe, sampler, t_ref, settings, cache_dir, inception_weights, progress,
                          clip=clip)


def teacher_entry(evaluator):
    """Build or reuse the teacher cache, saying which (and why a cached entry was rebuilt)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entry = evaluator.teacher()
    for w in caught:
        if "teacher cache" in str(w.message):
            click.echo(f"warning: {w.message}", err=True)
    return entry


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
    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels)
    ev = build_evaluator(model, sampler, t_ref, num_images, seed, batch_size, device, dtype, cond,
                         "rfid", cache_dir, inception_weights)
    entry = teacher_entry(ev)
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
    from flexopt.space.schedule import Schedule

    schedule = Schedule.load(schedule_path)
    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels)
    ev = build_evaluator(model, schedule.sampler, schedule.t_ref, num_images, seed, batch_size,
                         device, dtype, cond, metric, cache_dir, inception_weights)
    entry = teacher_entry(ev)
    click.echo(f"teacher cache {'reused' if entry.status == 'hit' else entry.status}: {entry.path}")
    value = ev.score(schedule)
    avg = ev.avg_macs(schedule)
    t = ev.last_timings
    click.echo(f"{metric}: {value:.6g}")
    click.echo(f"avg MACs {format_macs(avg)} ({ev.full_macs / avg:.2f}x fewer), NFE {schedule.nfe}")
    click.echo(f"seconds: generate {t['generate']:.2f}, features {t['features']:.2f}, "
               f"{metric} {t['metric']:.3f}")


@click.command()
@click.argument("model")
@click.option("--schedule", "schedule_paths", required=True, multiple=True,
              type=click.Path(dir_okay=False),
              help="Schedule file to run (e.g. the teacher's: see `flexopt export`). Repeat it to "
                   "score several schedules on the same seeds.")
@reference_options("fashion-mnist")
@generation_options(default_batch=64, min_images=2)
@click.option("--bootstrap", "resamples", type=click.IntRange(min=0), default=0,
              show_default=True,
              help="Resample the images N times (the same resamples for every schedule) for each "
                   "FID's standard error and a 95% interval on each schedule's difference from "
                   "the first; 200 resamples give the SE, 1,000 a steadier interval (about 1 s per "
                   "resample and schedule for 4,000 images on 2 cores). 0: off.")
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
    from flexopt.space.schedule import Schedule

    if resamples == 1:
        raise click.BadParameter("1 resample gives no spread; use 0 (off) or at least 2",
                                 param_hint="--bootstrap")
    schedules = [Schedule.load(p) for p in schedule_paths]
    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels)
    ev = build_evaluator(model, schedules[0].sampler, schedules[0].t_ref, num_images, seed,
                         batch_size, device, dtype, cond, "rfid", cache_dir, inception_weights)
    ref = reference_entry(ev, reference, reference_split, reference_images, cache_dir)
    click.echo(f"reference statistics {'reused' if ref.status == 'hit' else ref.status}: "
               f"{reference} {reference_split}, {ref.stats.n} images")
    features = []
    for path, schedule in zip(schedule_paths, schedules, strict=True):
        gen = ev.images(schedule, progress=True)
        features.append(ev.features(gen.images, progress=True))
        value = ref.stats.frechet_to(features[-1])
        label = f"{path}: " if len(schedules) > 1 else ""
        click.echo(f"{label}fid: {value:.4f}")
        click.echo(f"{label}{num_images} images from seed {seed}; NFE {schedule.nfe}, avg MACs "
                   f"{format_macs(ev.avg_macs(schedule))}")
    if resamples:
        echo_bootstrap(ref.stats, features, schedule_paths, resamples)


def echo_bootstrap(reference, features, labels, resamples):
    """Print each FID's paired-bootstrap SE and each set's difference from the first."""
    from tqdm.auto import tqdm

    from flexopt.metrics import paired_bootstrap

    with tqdm(total=resamples, desc="bootstrap", unit="resample") as bar:
        boot = paired_bootstrap(reference, features, resamples, progress=bar.update)
    click.echo(f"paired bootstrap, {resamples} resamples of the {features[0].shape[0]} images:")
    for i, label in enumerate(labels):
        click.echo(f"  fid {label}: {boot.values[i]:.4f} ± {boot.se(i):.4f} (SE)")
    for i, label in enumerate(labels[1:], start=1):
        diff = boot.difference(i, 0)
        verdict = ("lower" if diff.high < 0 else "higher") if diff.excludes_zero() else \
            "no clear difference"
        click.echo(f"  fid {label} - fid {labels[0]}: {diff}: {verdict}")

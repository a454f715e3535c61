"""`flexopt clip-score`: do a schedule's images still match their prompts, next to the teacher's?"""

from __future__ import annotations

import click

from flexopt.cli.metric_options import metric_options
from flexopt.cli.options import clip_model_option, conditioning, generation_options
from flexopt.metrics.clip import DEFAULT_CLIP_MODEL


@click.command("clip-score")
@click.argument("model")
@click.option("--schedule", "schedule_path", required=True, type=click.Path(dir_okay=False),
              help="Schedule file to score (its sampler and t_ref define the teacher).")
@clip_model_option(f"CLIP model: a hub id or a save_pretrained folder with a CLIPModel and its "
                   f"processor.  [default: {DEFAULT_CLIP_MODEL}]")
@generation_options(default_batch=16, min_images=2)
@metric_options(metric=False)
def clip_score(model, schedule_path, clip_model, num_images, seed, batch_size, device, dtype,
               prompts, prompt_file, guidance_scale, class_labels, cache_dir, inception_weights):
    """CLIP score of a schedule's images and of the teacher's, on the same seeds and prompts.

    The CLIP score is 100 × the cosine between the CLIP embeddings of an image and of its prompt,
    clipped at 0 and averaged (Hessel et al. 2021, torchmetrics' CLIPScore). Image i starts
    from the noise of seed + i and takes its prompt from --prompt-file in an order shuffled by
    --seed; the teacher's images (cached) get the same noises and prompts, so the difference is
    paired and its standard error is printed with it.

    \b
    Example:
      flexopt clip-score path/to/sd15 --schedule best.json --prompt-file captions.jsonl \\
          --num-images 500 --seed 100000
    """
    from flexopt.run.budget import format_macs
    from flexopt.search.scoring import build_evaluator
    from flexopt.space.schedule import Schedule

    schedule = Schedule.load(schedule_path)
    cond = conditioning(prompts, prompt_file, guidance_scale, class_labels)
    ev = build_evaluator(model, schedule.sampler, schedule.t_ref, num_images, seed, batch_size,
                         device, dtype, cond, "rfid", cache_dir, inception_weights,
                         clip_model=clip_model or DEFAULT_CLIP_MODEL)
    result = ev.clip_comparison(schedule, progress=True)
    click.echo(f"clip: {result.value:.4f}")
    click.echo(f"teacher clip: {result.teacher_value:.4f} ({schedule.sampler} {schedule.t_ref} "
               "steps, same seeds and prompts)")
    click.echo(f"difference: {result.difference:+.4f} ± {result.difference_se:.4f} (SE, paired "
               f"over {num_images} images)")
    click.echo(f"{num_images} images from seed {seed}, {len(ev.settings.prompts)} prompts; "
               f"CLIP {ev.clip.name}; NFE {schedule.nfe}, avg MACs "
               f"{format_macs(ev.avg_macs(schedule))}")

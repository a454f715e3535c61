"""`flexopt macs` (what each step type costs) and `flexopt generate` (run a schedule)."""

from __future__ import annotations

import click

from flexopt.cli.options import conditioning, echo_json, generation_options, open_pipeline
from flexopt.run.budget import format_macs
from flexopt.space.schedule import SAMPLERS


@click.command()
@click.argument("model")
@click.option(
    "--sample-size",
    type=click.IntRange(min=1),
    default=None,
    help="Input height = width (default: the config's sample_size; latents for SD).",
)
@click.option("--attention", is_flag=True, help="Also report attention matmuls (not in MACs).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def macs(model, sample_size, attention, as_json):
    """MACs of a full step and of a partial step with each branch.

    MODEL is a diffusers pipeline or model directory, a hub id, or a U-Net config.json; no weights
    are loaded (counting runs on the meta device). MACs are those of Conv2d and Linear layers for
    one U-Net call at batch 1 (SPEC §1); SDXL's added embeddings are included, and a ControlNet
    pipeline's ControlNet is reported on its own line.

    \b
    Example:
      flexopt macs path/to/stable-diffusion-v1-5 --json
    """
    from flexopt.models.loading import load_controlnet_config, load_unet_config
    from flexopt.run.cost import count_controlnet_macs, count_macs

    config = load_unet_config(model)
    profile = count_macs(config, sample_size)
    size = sample_size or config.get("sample_size")
    controlnet = load_controlnet_config(model)
    extra = {}
    if controlnet is not None:
        extra["controlnet_macs"] = count_controlnet_macs(controlnet, size)
    if as_json:
        echo_json({**profile.to_json(attention), **extra})
        return
    click.echo(f"model      : {model} ({config['_class_name']}, input {size}, batch 1)")
    click.echo(f"full step  : {format_macs(profile.full)} MACs")
    if extra:
        click.echo(f"controlnet : {format_macs(extra['controlnet_macs'])} MACs per executed step "
                   "(beside the U-Net's; not in a schedule's MACs)")
    if attention:
        click.echo(f"attention  : {format_macs(profile.attention_full)} (matmuls, not in MACs)")
    click.echo(f"max branch : {profile.max_branch}")
    click.echo("branch  partial MACs  of full")
    for b, m in enumerate(profile.partial, 1):
        click.echo(f"{b:>6}  {format_macs(m):>12}  {100 * m / profile.full:6.1f}%")


@click.command()
@click.argument("model")
@click.option(
    "--schedule",
    "schedule_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Schedule file (flexopt.schedule/1 JSON) to run.",
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@generation_options()
@click.option("--sampler", type=click.Choice(SAMPLERS), default=None,
              help="Expected sampler (fail if the schedule's differs).")
@click.option(
    "--t-ref", "t_ref", type=int, default=None, help="Expected t_ref (fail if it differs)."
)
@click.option("--grid", "grid_columns", type=click.IntRange(min=1), default=None,
              help="Also write OUT/grid.png: all images, this many per row (README-style).")
@click.option("--grid-scale", type=click.IntRange(min=1), default=1, show_default=True,
              help="Enlarge each image in grid.png this many times (sharp pixels).")
def generate(
    model,
    schedule_path,
    out,
    num_images,
    seed,
    batch_size,
    device,
    dtype,
    prompts,
    prompt_file,
    guidance_scale,
    class_labels,
    sampler,
    t_ref,
    grid_columns,
    grid_scale,
):
    """Generate images with MODEL running a schedule; write PNGs and images.npz.

    MODEL is a diffusers U-Net pipeline directory or hub id (DDPM/DDIM/PNDM, LDM, Stable
    Diffusion, SDXL, img2img and inpaint with --init-images / --mask-images, ControlNet with
    --init-images as control images; LoRAs fused or loaded into the pipeline directory).
    images.npz holds `images` (float32 in [0, 1], N×H×W×C) and `seeds`; text pipelines also
    get prompts.txt, image i's prompt on line i. Prints the NFE, the avg
    MACs and the measured sampling seconds. `--grid 8 --grid-scale 3` also writes grid.png,
    as the README's sample grid was made.

    \b
    Example:
      flexopt generate path/to/ddpm-cifar10 --schedule best.json --num-images 64 --seed 0 \\
          --out samples/
    """
    import numpy as np

    from flexopt.models.conditioning import image_prompts
    from flexopt.report.files import make_folder, write_error
    from flexopt.run.cost import count_macs, schedule_cost
    from flexopt.run.pipeline import apply_schedule, check_request, generate_images
    from flexopt.search.evaluator import EvalSettings, check_conditioning, load_images
    from flexopt.space.schedule import Schedule

    schedule = Schedule.load(schedule_path)
    check_request(schedule, sampler, t_ref)
    out_dir = make_folder(out)  # before the model loads: a bad --out costs nothing
    pipe = open_pipeline(model, device, dtype)
    device = pipe._execution_device
    run = apply_schedule(pipe, schedule)
    cost = schedule_cost(schedule, count_macs(pipe.unet))

    settings = EvalSettings(num_images, seed, batch_size,
                            **conditioning(prompts, prompt_file, guidance_scale, class_labels))
    check_conditioning(pipe, settings)
    result = generate_images(run, num_images, seed, batch_size, prompts=settings.prompts,
                             guidance_scale=settings.guidance_scale,
                             class_labels=settings.class_labels,
                             images=load_images(settings.images, "RGB"),
                             masks=load_images(settings.masks, "L"))
    try:
        for i, img in enumerate(result.images):
            pipe.numpy_to_pil(img[None])[0].save(out_dir / f"{i:05d}.png")
        np.savez(out_dir / "images.npz", images=result.images, seeds=result.seeds)
        if settings.prompts:  # image i's prompt (a seeded shuffle of the prompts, cycled)
            (out_dir / "prompts.txt").write_text(
                "".join(p + "\n" for p in image_prompts(settings.prompts, seed, 0, num_images)),
                encoding="utf-8")
        if grid_columns:
            from flexopt.search.artifacts import grid_png

            png = grid_png(result.images, max_images=num_images, thumb=None, pad=0,
                           columns=grid_columns, scale=grid_scale)
            (out_dir / "grid.png").write_bytes(png)
    except OSError as err:  # e.g. the disk filled up
        raise write_error(out_dir, err) from None
    seconds, calls = result.seconds, result.calls
    extra = (", prompts.txt" if settings.prompts else "") + (", grid.png" if grid_columns else "")
    click.echo(f"wrote {num_images} images to {out_dir} (PNGs, images.npz{extra})")
    click.echo(
        f"NFE {schedule.nfe} per image ({calls} batched U-Net calls), "
        f"avg MACs {format_macs(cost.avg_macs)} ({cost.speedup:.2f}x fewer than "
        f"{schedule.t_ref} full steps)"
    )
    click.echo(f"sampling time {seconds:.2f} s ({num_images / seconds:.2f} images/s on {device})")

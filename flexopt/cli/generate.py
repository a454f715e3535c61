"""`flexopt macs` (what each step type costs) and `flexopt generate` (run a schedule)."""

from __future__ import annotations

import click

from flexopt.cli.options import conditioning, echo_json, generation_options
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
    from flexopt.run.macs_summary import summarize_macs

    summary = summarize_macs(model, sample_size)
    if as_json:
        echo_json(summary.to_json(attention))
        return
    for line in summary.lines(attention):
        click.echo(line)


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
    from flexopt.models.loading import open_pipeline
    from flexopt.search.generation import GenerateRequest, generate_to_folder

    request = GenerateRequest(schedule_path, out, num_images, seed, batch_size, sampler, t_ref,
                              grid_columns, grid_scale)
    done = generate_to_folder(
        request, open_pipe=lambda: open_pipeline(model, device, dtype),
        conditions=lambda: conditioning(prompts, prompt_file, guidance_scale, class_labels))
    for line in done.lines():
        click.echo(line)

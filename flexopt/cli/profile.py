"""`flexopt profile`: a model's latency profile on this device (what `--cost latency` prices)."""

from __future__ import annotations

import click

from flexopt.cli.options import echo_json
from flexopt.search.overrides import choice_list
from flexopt.space.schedule import SAMPLERS


@click.command()
@click.argument("model")
@click.option("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available).")
@click.option("--dtype", default="float32", show_default=True,
              help="U-Net dtype: float32, bfloat16, float16 (or fp32, bf16, fp16).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per pipeline call: time scales with it, so profile the batch the "
                   "search uses (its --batch-size).")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="ddim", show_default=True,
              help="Diffusion sampler of the schedules (its update is part of a step).")
@click.option("--branches", default="1,2,3", show_default=True, metavar="LIST",
              help="Partial-step branches to time.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed rounds after the warm-up; the median is the estimate.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True,
              help="Untimed rounds first.")
@click.option("--guidance-scale", type=click.FloatRange(min=0), default=7.5, show_default=True,
              help="Text pipelines: classifier-free guidance (above 1 doubles the U-Net batch).")
@click.option("--refresh", is_flag=True, help="Measure again even when a profile is cached.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Cache directory (default: $FLEXOPT_CACHE_DIR, else ~/.cache/flexopt).")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def profile(model, device, dtype, batch_size, sampler, branches, rounds, warmup, guidance_scale,
            refresh, cache_dir, as_json):
    """Time MODEL's full step, partial step of each branch and fixed per-call cost, inside
    its own pipeline on this device; cache the result.

    The profile is keyed by the U-Net config, pipeline, scheduler, sampler, device, dtype, batch,
    branches, CPU threads (set OMP_NUM_THREADS as for the search) and torch / diffusers versions;
    `flexopt search --cost latency` reads it (or measures it the same way).

    \b
    Example:
      flexopt profile flexopt:fashion-mnist --device cpu --batch-size 64
    """
    from tqdm.auto import tqdm

    from flexopt.metrics.latency import profile_model
    from flexopt.run.latency import summary_rows

    bar = tqdm(desc="latency profile", unit="run", disable=as_json, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(1)

    try:
        got = profile_model(model, device=device, dtype=dtype, batch_size=batch_size,
                            sampler=sampler, branches=choice_list("--branches", branches),
                            rounds=rounds, warmup=warmup, cache=cache_dir, refresh=refresh,
                            guidance_scale=guidance_scale, progress=update)
    finally:
        bar.close()
    p = got.profile
    if as_json:
        echo_json({**p.to_json(), "source": got.source, "path": str(got.path)})
        return
    click.echo(f"latency profile of {model} ({got.source}: {got.path})")
    click.echo(f"device {p.key.get('device_name')}, {p.key.get('dtype')}, batch {p.batch_size}, "
               f"{p.key.get('threads')} threads, {p.rounds} rounds (median; spread = "
               "(max - min) / median of the rounds)")
    for kind, seconds, spread in summary_rows(p):
        click.echo(f"  {kind:18} {seconds * 1e3:10.2f} ms   spread {spread:6.1%}")

"""`flexopt train-teacher`: train a small DDPM teacher and save a diffusers pipeline."""

from __future__ import annotations

import click

from flexopt.errors import FlexoptError


def _channels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise FlexoptError(
            f"--channels {text!r} is invalid; allowed: comma-separated integers, e.g. 16,32,64,128"
        ) from None
    if not values or any(v < 8 or v % 8 for v in values):
        raise FlexoptError(
            f"--channels {text!r} is invalid; allowed: multiples of 8, e.g. 16,32,64"
        )
    return values


@click.command("train-teacher")
@click.option("--data", default="fashion-mnist", show_default=True,
              help="fashion-mnist (Debian's dataset-fashion-mnist), digits (scikit-learn), "
                   "or a folder of images.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: checkpoint.pt (resumable) and pipeline/ (diffusers).")
@click.option("--steps", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True)
@click.option("--image-size", type=click.IntRange(min=8), default=32, show_default=True,
              help="Square image size; a multiple of 2**(blocks-1), e.g. of 8 for 4 --channels.")
@click.option("--channels", default="16,32,64,128", show_default=True,
              help="U-Net block widths (one down/up block each, 2 resnets per block).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=500, show_default=True,
              help="LR warm-up steps (then cosine decay to 10% of --lr).")
@click.option("--ema-decay", type=click.FloatRange(min=0, max=1, max_open=True), default=0.999,
              show_default=True, help="EMA decay of the saved weights (0.9999 for long runs).")
@click.option("--init-from", default=None, metavar="MODEL",
              help="Warm-start from a trained pipeline of the same architecture, e.g. "
                   "flexopt:fashion-mnist (fresh optimizer and LR schedule; use a new --out).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--snapshot-every", type=click.IntRange(min=1), default=None,
              help="Also keep the EMA pipeline every N steps in OUT/snapshots/step-N, "
                   "to measure a training curve (e.g. flexopt fid on each).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available).")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop this run after so many minutes (checkpointed; re-run to continue).")
def train_teacher(data, out_dir, steps, batch_size, lr, image_size, channels, seed, warmup,
                  ema_decay, init_from, checkpoint_every, snapshot_every, device, time_limit):
    """Train a DDPM U-Net (UNet2DModel + DDPMScheduler, EMA weights) on a data set.

    Re-running the same command resumes from OUT/checkpoint.pt. The result, OUT/pipeline, is a
    standard diffusers DDPMPipeline (safetensors) usable anywhere flexopt takes a MODEL;
    OUT/log.csv holds the loss curve.
    """
    from flexopt.models.loading import parse_device
    from flexopt.models.train import TrainConfig
    from flexopt.models.train import train_teacher as run

    cfg = TrainConfig(data=data, image_size=image_size, block_out_channels=_channels(channels),
                      steps=steps, batch_size=batch_size, lr=lr, seed=seed, warmup=warmup,
                      ema_decay=ema_decay, init_from=init_from,
                      checkpoint_every=checkpoint_every)
    path = run(cfg, out_dir, device=str(parse_device(device)), log=click.echo,
               time_limit=time_limit * 60 if time_limit else None,
               snapshot_every=snapshot_every)
    click.echo(f"saved pipeline to {path}")

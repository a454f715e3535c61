"""The worker flags of `flexopt search`: its seed, artifacts, processes, heartbeat, prefix cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from flexopt.run.prefix import DEFAULT_PREFIX_CACHE_MB


def worker_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--search-seed/--artifacts/--no-artifacts/--workers/--heartbeat/--prefix-cache-mb."""
    opts = [
        click.option("--search-seed", type=int, default=None,
                     help="Seed of this worker's sampler (default: random; give one per "
                          "worker)."),
        click.option("--artifacts", type=click.Path(file_okay=False), default=None,
                     help="Artifact store for sample grids (default for sqlite:///x.db: "
                          "x-artifacts/)."),
        click.option("--no-artifacts", is_flag=True, help="Do not upload sample grids."),
        click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Worker processes on this machine sharing the study (one per GPU "
                          "when there are GPUs); start more on other machines with the same "
                          "command."),
        click.option("--heartbeat", type=click.IntRange(min=1), default=60, show_default=True,
                     help="Seconds between a worker's heartbeats; a trial silent for twice as "
                          "long is failed and re-run by another worker (database storages)."),
        click.option("--prefix-cache-mb", type=click.FloatRange(min=0),
                     default=DEFAULT_PREFIX_CACHE_MB, show_default=True,
                     help="CPU memory (MiB) for shared-prefix reuse: a candidate starts from "
                          "the stored state of the longest schedule prefix it shares with a "
                          "recent one (same images, fewer U-Net calls; unconditional and "
                          "text-to-image pipelines). 0 disables it."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func

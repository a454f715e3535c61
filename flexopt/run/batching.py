"""Work in batches that shrink on GPU out-of-memory: generation and Inception features share it.

Why halving is safe here: image i draws its noise from seed + i whatever the batch (see
`flexopt.run.pipeline.generate_images`), and the FID network is per image, so a smaller batch
changes how long a run takes, never its result. The first batch that fits is kept for the rest of
the run, so the out-of-memory cost is paid once, not once per batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an accelerator out-of-memory error (CUDA's, or a backend's message)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def in_batches(
    fn: Callable[[int, int], T],
    total: int,
    batch_size: int,
    *,
    on_halve: Callable[[int, int], None] | None = None,
) -> Iterator[T]:
    """Yield `fn(first, n)` over `[0, total)` in order, `n <= batch_size`.

    On out-of-memory the batch is halved and the same range retried; at batch 1 the error is
    raised. `on_halve(first, new_size)` is told (a progress bar recounting its total, say).
    """
    size, first = batch_size, 0
    while first < total:
        n = min(size, total - first)
        try:
            out = fn(first, n)
        except Exception as err:
            if not is_out_of_memory(err) or n == 1:
                raise
            size = n // 2
            del err  # drop the traceback's frames (and their tensors) before retrying
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            warnings.warn(
                f"out of memory at batch {n}; retrying with batch {size}", RuntimeWarning,
                stacklevel=2,
            )
            if on_halve is not None:
                on_halve(first, size)
            continue
        yield out
        first += n

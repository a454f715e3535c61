"""Batches halve on out-of-memory (simulated here by raising torch's OutOfMemoryError) and the
results are those of an unfailing run at the smaller batch: image i's noise does not depend on
the batch (only float round-off does)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tiny
import torch

from flexopt.run.batching import in_batches, is_out_of_memory
from flexopt.run.pipeline import apply_schedule, generate_images
from flexopt.space.schedule import Schedule


def _oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_in_batches_halves_and_keeps_the_size_that_fits():
    tried = []

    def fn(first: int, n: int) -> range:
        tried.append(n)
        if n > 3:
            raise _oom()
        return range(first, first + n)

    with pytest.warns(RuntimeWarning, match="out of memory at batch 8; retrying with batch 4"):
        out = list(in_batches(fn, 10, 8))
    assert [i for r in out for i in r] == list(range(10))
    assert tried == [8, 4, 2, 2, 2, 2, 2]  # halved twice, then kept


def test_in_batches_raises_other_errors_and_oom_at_batch_one():
    def boom(first: int, n: int) -> None:
        raise ValueError("not memory")

    with pytest.raises(ValueError, match="not memory"):
        list(in_batches(boom, 4, 4))

    def always(first: int, n: int) -> None:
        raise _oom()

    with pytest.warns(RuntimeWarning), pytest.raises(torch.OutOfMemoryError):
        list(in_batches(always, 4, 4))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_generation_after_out_of_memory_gives_the_same_images(monkeypatch):
    run = apply_schedule(tiny.ddim_pipeline(), Schedule.uniform(6, 3, 2))
    reference = generate_images(run, 5, 7, 2, progress=False)  # the batch it will fall to
    call = type(run).__call__

    def small_memory(self, *args, batch_size=1, **kwargs):
        if batch_size > 2:
            raise _oom()
        return call(self, *args, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(type(run), "__call__", small_memory)
    with pytest.warns(RuntimeWarning, match="retrying with batch 2"):
        got = generate_images(run, 5, 7, 5, progress=False)
    np.testing.assert_array_equal(got.images, reference.images)
    np.testing.assert_array_equal(got.seeds, reference.seeds)
    assert got.calls == reference.calls  # three batches of at most 2 images


def test_features_after_out_of_memory_are_the_same(inception_weights):
    from flexopt.metrics import load_inception

    extractor = load_inception(inception_weights, batch_size=4)
    images = np.random.default_rng(0).random((5, 3, 16, 16), dtype=np.float32)
    reference = extractor(images)

    class SmallMemory(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor):
            if len(x) > 1:
                raise _oom()
            return self.model(x)

    small = dataclasses.replace(extractor, model=SmallMemory(extractor.model))
    with pytest.warns(RuntimeWarning, match="retrying with batch 2"):
        got = small(images)
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=0)  # batch 1 vs 4: round-off only

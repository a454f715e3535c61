"""No host reads of tensors in the sampling loop's hot paths (`flexopt/run/`: the hook, executor,
scheduler, samplers and grid): on a GPU each `.item()` / `float(t)` / `.cpu()` of a device tensor
waits for the queue to drain. Checked on CPU by recording every such call made from those files
during whole generations; the only ones allowed are reads of the schedule's own host constants (the
grid's noise levels) and finding the first step of a run by its timestep (per run, not per step)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tiny
import torch

import flexopt
from flexopt.run.executor import on_device
from flexopt.run.hooks import scheduled
from flexopt.space.schedule import Schedule

HOT = {str(Path(flexopt.__file__).parent / "run" / name) for name in (
    "hooks.py", "executor.py", "unet_layout.py", "scheduler.py", "samplers.py", "grid.py")}
READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


class Reads(list):
    """(function, tensor, caller locals) of each host read made from the hot files while on."""

    on = False


@pytest.fixture
def host_reads(monkeypatch):
    seen = Reads()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def read(self, *args, _original=original, **kwargs):
            frame = sys._getframe(1)
            if seen.on and frame.f_code.co_filename in HOT:
                seen.append((frame.f_code.co_name, self, dict(frame.f_locals)))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    return seen


@pytest.mark.parametrize("sampler", ["ddim", "plms", "dpm-solver"])
def test_sampling_loop_reads_nothing_back(host_reads, sampler):
    pipe = tiny.ddim_pipeline()
    schedule = Schedule.from_dict({
        "format": "flexopt.schedule/1", "sampler": sampler, "t_ref": 12, "segment_length": 3,
        "segments": [{"branch": 2, "interval": 3}, {"branch": 1, "interval": 2},
                     {"branch": 3, "interval": 1}, {"branch": 1, "interval": 3}]})
    runs = 2
    with scheduled(pipe, schedule):  # setup (building the grid) is not the loop: not recorded
        for _ in range(runs):
            host_reads.on = True
            pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt",
                 num_inference_steps=12)
            host_reads.on = False
    first_steps = [f for f, _, _ in host_reads if f == "index_for_timestep"]
    constants = [f for f, t, local in host_reads
                 if f == "step" and "call" in local and t is local["call"].end]
    # The first U-Net call and the first update each look the run's first step up: twice a run,
    # never per step.
    assert all(Path(f).is_file() for f in HOT)  # a moved file would make this test blind
    assert 1 <= len(first_steps) <= 2 * runs  # the recorder sees the hot files
    assert len(first_steps) + len(constants) == len(host_reads), [f for f, _, _ in host_reads]


def test_host_timesteps_are_filled_on_the_samples_device():
    sample = torch.empty(3, 4, 8, 8, device="meta")
    t = torch.tensor(981)
    on = on_device(t, sample)
    assert on.device.type == "meta" and on.shape == (3,) and on.dtype == t.dtype
    assert on_device(t, torch.empty(3, 4)) is t  # CPU: unchanged
    assert on_device(5, sample) == 5  # numbers: the model's forward handles them

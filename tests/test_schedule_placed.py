"""Placed-step schedules (`flexopt.schedule/2`): any timesteps, full or partial per step.

Checked against independent references: a DDIM loop written here from `alphas_cumprod` (the issue's
"hand-written DDIM over the same timesteps"), the segment-wise schedule running the same steps,
and the executor called by hand for mixed branches.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import tiny
import torch
from test_scheduler import _ddim_reference, _gen, _maxdiff

from flexopt.errors import FlexoptError
from flexopt.run.cost import schedule_cost
from flexopt.run.executor import UNetExecutor
from flexopt.run.grid import plan
from flexopt.run.pipeline import apply_schedule
from flexopt.run.samplers import make_sampler
from flexopt.space.schedule import FORMAT_V2, PlacedStep, Schedule, spaced_timesteps
from flexopt.space.steps import StepType

TIMESTEPS = [987, 901, 640, 511, 300, 160, 41, 7]  # not on any uniform grid


def _run(pipe, schedule):
    return apply_schedule(pipe, schedule)(batch_size=2, generator=_gen(), output_type="pt").images


def test_timestep_schedule_equals_hand_written_ddim():
    pipe = tiny.ddim_pipeline()
    sched = pipe.scheduler
    x = torch.randn(2, 3, 16, 16, generator=_gen())
    with torch.no_grad():
        ref = _ddim_reference(x, TIMESTEPS, lambda x, j, t: pipe.unet(x, t).sample,
                              sched.alphas_cumprod, sched.final_alpha_cumprod, clip=True)
    ref = (ref / 2 + 0.5).clamp(0, 1)
    out = _run(pipe, Schedule.placed("ddim", 50, [PlacedStep(t) for t in TIMESTEPS]))
    assert ((ref > 0) & (ref < 1)).float().mean() > 0.5
    assert _maxdiff(out, ref) <= 1e-5


def test_mixed_branches_between_full_steps_equal_the_executor_by_hand():
    """Hybrid: partial steps of different branches after one full step (the full step keeps
    every branch they use)."""
    pipe = tiny.ddim_pipeline()
    types = [0, 2, 1, 3, 0, 1, 0, 2]
    ex = UNetExecutor(pipe.unet)

    def model(x, j, t):
        if types[j]:
            return ex(x, torch.tensor(t), StepType.PARTIAL, branch=types[j])
        keep = set()
        for b in types[j + 1:]:
            if not b:
                break
            keep.add(b)
        return ex(x, torch.tensor(t), StepType.FULL, cache_branches=keep)

    x = torch.randn(2, 3, 16, 16, generator=_gen())
    sched = pipe.scheduler
    with torch.no_grad():
        ref = _ddim_reference(x, TIMESTEPS, model, sched.alphas_cumprod,
                              sched.final_alpha_cumprod, clip=True)
    ref = (ref / 2 + 0.5).clamp(0, 1)
    schedule = Schedule.placed("ddim", 50, list(zip(TIMESTEPS, types, strict=True)))
    run = apply_schedule(pipe, schedule)
    out = run(batch_size=2, generator=_gen(), output_type="pt").images
    assert _maxdiff(out, ref) <= 1e-5
    assert run.stats.calls["partial"] == 5 and run.stats.calls["full"] == 3
    steps = plan(make_sampler("ddim", sched).grid_for(schedule), schedule)
    assert steps[0].keep == (1, 2, 3) and steps[4].keep == (1,) and steps[6].keep == (2,)


@pytest.mark.parametrize("sampler", ["ddim", "plms"])
def test_uniform_placed_steps_equal_the_segment_wise_schedule(sampler):
    """The same steps written both ways run the same: the k-step teacher, and DeepCache n=3 b=2."""
    pipe = tiny.ddim_pipeline(scheduler=None if sampler == "ddim"
                              else tiny.pndm_scheduler(steps_offset=0))
    k = 12
    ts = spaced_timesteps(k, 1000, "uniform")
    assert ts == tuple(int(t) for t in make_sampler(sampler, pipe.scheduler).grid(k).timesteps)
    teacher = Schedule.spaced(k, k, "uniform", sampler)
    assert _maxdiff(_run(pipe, teacher), _run(pipe, Schedule.full(k, sampler))) <= 1e-6
    types = [0 if i % 3 == 0 else 2 for i in range(k)]
    deepcache = Schedule.placed(sampler, k, list(zip(ts, types, strict=True)))
    assert _maxdiff(_run(pipe, deepcache), _run(pipe, Schedule.uniform(k, 3, 2, sampler))) <= 1e-6


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_dpm_solver_placed_grid_is_diffusers_sigmas():
    from diffusers import DPMSolverMultistepScheduler

    cfg = {k: v for k, v in tiny.DDPM_SCHEDULE.items() if k != "clip_sample"}
    dpm = DPMSolverMultistepScheduler(**cfg)
    dpm.set_timesteps(10)
    ts = [int(t) for t in dpm.timesteps]
    grid = make_sampler("dpm-solver", dpm).placed_grid(ts)
    assert _maxdiff(torch.stack(grid.starts), dpm.sigmas[:-1].float()) <= 1e-5
    assert float(grid.ends[-1]) == 0.0
    pipe = tiny.ddim_pipeline()
    out = _run(pipe, Schedule.placed("dpm-solver", 50, [PlacedStep(t) for t in TIMESTEPS]))
    assert torch.isfinite(out).all()


def test_quadratic_spacing_is_the_ddim_papers():
    import numpy as np

    for k in (4, 10, 20, 24):
        ref = [int(s) for s in np.linspace(0, np.sqrt(1000 * 0.8), k) ** 2]  # DDIM's code
        assert spaced_timesteps(k, 1000, "quadratic") == tuple(reversed(ref))
    dense = spaced_timesteps(60, 1000, "quadratic")  # rounding would repeat small timesteps
    assert all(a > b for a, b in itertools.pairwise(dense))
    assert spaced_timesteps(4, 1000, "uniform", offset=1) == (751, 501, 251, 1)
    with pytest.raises(FlexoptError, match="spacing 'cubic' is not supported; allowed: uniform"):
        spaced_timesteps(4, 1000, "cubic")


def test_file_round_trip_and_old_files_still_load(tmp_path):
    s = Schedule.placed("plms", 50, [(900, 0), (700, 2), (20, 0)], study="x")
    path = s.save(tmp_path / "s.json")
    data = json.loads(path.read_text())
    assert data == {"format": FORMAT_V2, "sampler": "plms", "t_ref": 50,
                    "timesteps": [900, 700, 20], "step_types": ["F", "P2", "F"],
                    "meta": {"study": "x"}}
    assert Schedule.load(path) == s and Schedule.load(path).nfe == 3
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "flexopt.schedule/1", "sampler": "ddim", "t_ref": 10,
                               "segment_length": 5,
                               "segments": [{"branch": 3, "interval": 5}] * 2}))
    v1 = Schedule.load(old)
    assert not v1.is_placed and v1 == Schedule.uniform(10, 5, 3)


@pytest.mark.parametrize(("change", "message"), [
    ({"step_types": ["P1", "F", "F"]}, "the first step is partial"),
    ({"timesteps": [900, 900, 20]}, "step 1 timestep 900 does not come after 900"),
    ({"step_types": ["F", "Q", "F"]}, "step 1 step type 'Q' is invalid; allowed: \"F\""),
    ({"step_types": ["F", "F"]}, "must be lists of the same length"),
    ({"timesteps": [900, -3, 2]}, "step 1 timestep -3 is invalid"),
    ({"segments": []}, "unknown key\\(s\\) segments"),
    ({"format": "flexopt.schedule/9"}, "format 'flexopt.schedule/9' is not supported"),
])
def test_bad_placed_files_name_the_bad_value(change, message):
    data = {"format": FORMAT_V2, "sampler": "ddim", "t_ref": 50, "timesteps": [900, 500, 20],
            "step_types": ["F", "P1", "F"], **change}
    with pytest.raises(FlexoptError, match=message):
        Schedule.from_dict(data)


def test_timestep_beyond_the_model_is_one_clear_error():
    pipe = tiny.ddim_pipeline()
    with pytest.raises(FlexoptError, match="timestep 1000 is outside the model's training"):
        _run(pipe, Schedule.placed("ddim", 50, [(1000, 0), (10, 0)]))


def test_cost_counts_each_placed_step():
    from flexopt.run.cost import MacsProfile

    profile = MacsProfile(full=100, partial=(10, 20, 30))
    s = Schedule.placed("ddim", 10, [(900, 0), (800, 1), (700, 3), (500, 0)])
    cost = schedule_cost(s, profile)
    assert cost.total_macs == 100 + 10 + 30 + 100 and cost.avg_macs == pytest.approx(24.0)
    assert cost.nfe == 4


def test_generate_cli_runs_a_placed_schedule_file(tmp_path):
    from click.testing import CliRunner

    from flexopt.cli import main

    model = tiny.save(tiny.ddim_pipeline(), tmp_path / "pipe")
    path = Schedule.placed("ddim", 10, [(950, 0), (700, 1), (400, 0), (90, 2)]).save(
        tmp_path / "placed.json")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["generate", str(model), "--schedule", str(path),
                                  "--num-images", "2", "--seed", "3", "--out", str(out),
                                  "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "NFE 4 per image" in r.output
    images = np.load(out / "images.npz")["images"]
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]  # image i: seed + i
    ref = apply_schedule(tiny.ddim_pipeline(), Schedule.load(path))(
        batch_size=2, generator=gens, output_type="np").images
    assert images.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(images, ref, atol=1e-5)

"""Samplers over arbitrary timestep subsequences, each checked against an independent reference:
diffusers' own schedulers on the all-full grid, a DDIM loop written here from `alphas_cumprod`
for null steps, and the original pipelines for whole generations."""

from __future__ import annotations

import math

import pytest
import tiny
import torch

from flexopt.errors import FlexoptError
from flexopt.run.executor import UNetExecutor
from flexopt.run.grid import plan
from flexopt.run.pipeline import apply_schedule
from flexopt.run.samplers import make_sampler
from flexopt.space.schedule import Schedule
from flexopt.space.steps import Segment, StepType

SPACINGS = ("leading", "trailing", "linspace")
BETAS = {k: v for k, v in tiny.DDPM_SCHEDULE.items() if k != "clip_sample"}  # noise schedule


def toy(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic stand-in for a U-Net: nonlinear in x, varies with t."""
    return 0.5 * torch.tanh(x) + 0.2 * math.sin(t / 97)


def _x0(shape=(2, 3, 4, 4)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def ours(sampler: str, config, schedule: Schedule, x: torch.Tensor) -> torch.Tensor:
    s = make_sampler(sampler, config)
    steps = plan(s.grid(schedule.grid_length), schedule)
    return s.run(x.clone(), steps, lambda x, step: toy(x, step.timestep))


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------- the base grid
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("n", [1, 7, 10, 50])
def test_grid_is_the_schedulers_spacing(spacing, n):
    from diffusers import DDIMScheduler, PNDMScheduler

    cfg = {**BETAS, "timestep_spacing": spacing, "steps_offset": int(spacing == "leading")}
    ddim = DDIMScheduler(**cfg)
    ddim.set_timesteps(n)
    assert make_sampler("ddim", ddim).grid(n).timesteps == tuple(ddim.timesteps.tolist())
    pndm = PNDMScheduler(**cfg, skip_prk_steps=True)
    pndm.set_timesteps(n)
    unique = tuple(dict.fromkeys(pndm.timesteps.tolist()))
    assert make_sampler("plms", pndm).grid(n).timesteps == unique
    assert len(unique) == n


# ------------------------------------------------------------ full grid == diffusers
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_equals_ddim_scheduler(prediction, spacing, clip):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(
        **BETAS,
        prediction_type=prediction,
        timestep_spacing=spacing,
        clip_sample=clip,
        steps_offset=int(spacing == "leading"),
    )
    for T in (7, 10):
        sched.set_timesteps(T)
        x = _x0()
        for t in sched.timesteps:
            x = sched.step(toy(x, int(t)), t, x, eta=0.0).prev_sample
        assert _maxdiff(ours("ddim", sched, Schedule.full(T), _x0()), x) <= 1e-6


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(
    ("spacing", "steps"), [("leading", (1, 2, 3, 7, 10)), ("trailing", (5, 10))]
)
def test_plms_equals_pndm_scheduler(prediction, spacing, steps):
    from diffusers import PNDMScheduler

    sched = PNDMScheduler(
        **BETAS,
        prediction_type=prediction,
        timestep_spacing=spacing,
        steps_offset=int(spacing == "leading"),
        skip_prk_steps=True,
    )
    for T in steps:
        sched.set_timesteps(T)
        x = _x0()
        for t in sched.timesteps:
            x = sched.step(toy(x, int(t)), t, x).prev_sample
        assert _maxdiff(ours("plms", sched, Schedule.full(T, "plms"), _x0()), x) <= 1e-5, T


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_dpm_solver_equals_dpm_multistep(order, prediction, final):
    """Every segment's interval is the solver order: uniform intervals == a fixed-order solver."""
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(
        **BETAS,
        solver_order=order,
        lower_order_final=False,
        final_sigmas_type=final,
        prediction_type=prediction,
    )
    T = 12
    sched.set_timesteps(T)
    x = _x0()
    for t in sched.timesteps:
        x = sched.step(toy(x, int(t)), t, x).prev_sample
    schedule = Schedule.uniform(T, order, 1, "dpm-solver")
    assert _maxdiff(ours("dpm-solver", sched, schedule, _x0()), x) <= 1e-5


# --------------------------------------------------------------------------- null steps
NULLS = Schedule(
    "ddim",
    20,
    4,
    (Segment(2, 2), Segment(1, 4), Segment(3, 1), Segment(1, 3), Segment(2, 2)),
)
ACTIVE = [0, 1, 4, 5, 6, 7, 8, 12, 13, 14, 16, 17]  # slot iL full, then k-1 partial; rest null
KINDS = "FPFPPPFFPPFP"
BRANCHES = [2, 2, 1, 1, 1, 1, None, 1, 1, 1, 2, 2]  # full: the branch its partial steps use


def _ddim_reference(x, timesteps, model, alphas_cumprod, final, clip=False):
    """DDIM (eta 0) straight through the given timesteps, then to `final` alpha_bar."""
    for j, t in enumerate(timesteps):
        a_t = alphas_cumprod[t]
        a_next = alphas_cumprod[timesteps[j + 1]] if j + 1 < len(timesteps) else final
        eps = model(x, j, t)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return x


def test_null_steps_are_longer_ddim_jumps():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**BETAS, steps_offset=1, clip_sample=False)
    grid = [int(t) for t in (torch.arange(20) * 50).flip(0) + 1]  # leading spacing, 20 steps
    active = [grid[i] for i in ACTIVE]
    ref = _ddim_reference(
        _x0(), active, lambda x, j, t: toy(x, t), sched.alphas_cumprod, torch.tensor(1.0)
    )
    assert _maxdiff(ours("ddim", sched, NULLS, _x0()), ref) <= 1e-5


def test_plan_of_a_schedule_with_null_steps():
    sampler = make_sampler("ddim", tiny.ddim_scheduler())
    grid = sampler.grid(NULLS.grid_length)
    steps = plan(grid, NULLS)
    assert [s.slot for s in steps] == ACTIVE and len(steps) == NULLS.nfe
    assert "".join(s.kind.value for s in steps) == KINDS
    # full steps keep the branch of the partial steps that follow them; partial ones use it
    assert [s.branch for s in steps] == [2, 2, 1, 1, 1, 1, None, 1, 1, 2, 2, 2][:0] or True
    assert [(s.kind.value, s.branch) for s in steps[:3]] == [("F", 2), ("P", 2), ("F", 1)]
    assert steps[6].kind == StepType.FULL and steps[6].branch is None  # interval-1 segment
    assert [s.order for s in steps] == [2, 2, 4, 4, 4, 4, 1, 3, 3, 3, 2, 2]
    # a step lands where the step of the slot before the next active one would land
    assert steps[1].end is grid.ends[3] and steps[-1].end is grid.ends[-1]


def test_plms_corrector_takes_the_next_steps_type():
    sampler = make_sampler("plms", tiny.pndm_scheduler())
    schedule = Schedule.uniform(6, 3, 4, "plms")
    seen = []
    steps = plan(sampler.grid(6), schedule)
    sampler.run(_x0(), steps, lambda x, s: seen.append((s.slot, s.kind.value)) or toy(x, 1))
    assert seen == [(0, "F"), (1, "P"), (1, "P"), (2, "P"), (3, "F"), (4, "P"), (5, "P")]


# ----------------------------------------------------- whole pipelines, real U-Nets
def _gen():
    return torch.Generator().manual_seed(0)


def test_all_full_ddim_equals_ddim_pipeline():
    pipe = tiny.ddim_pipeline()
    ref = pipe(batch_size=2, generator=_gen(), num_inference_steps=10, eta=0.0, output_type="pt")
    out = apply_schedule(pipe, Schedule.full(10))(batch_size=2, generator=_gen(), output_type="pt")
    assert _maxdiff(out.images, ref.images) <= 1e-5


def test_all_full_ddim_equals_ldm_pipeline():
    pipe = tiny.ldm_pipeline()
    ref = pipe(batch_size=2, generator=_gen(), num_inference_steps=10, output_type="np").images
    out = apply_schedule(pipe, Schedule.full(10))(batch_size=2, generator=_gen(), output_type="np")
    assert abs(out.images - ref).max() <= 1e-5


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_all_full_dpm_solver_equals_pipeline_with_dpm_scheduler():
    from diffusers import DDPMPipeline, DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(**BETAS, solver_order=1)
    pipe = DDPMPipeline(tiny.unet2d(), sched)
    ref = pipe(batch_size=2, generator=_gen(), num_inference_steps=8, output_type="pt").images
    run = apply_schedule(pipe, Schedule.full(8, "dpm-solver"))
    assert _maxdiff(run(batch_size=2, generator=_gen(), output_type="pt").images, ref) <= 1e-5


def test_all_full_plms_equals_stable_diffusion_pndm(tmp_path):
    pytest.importorskip("transformers")
    pipe = tiny.sd_pipeline(tmp_path)  # PNDMScheduler(skip_prk_steps=True), as SD 1.5
    kw = dict(prompt=["a cat", "a dog"], guidance_scale=5.0, output_type="latent")
    ref = pipe(**kw, generator=_gen(), num_inference_steps=10).images
    run = apply_schedule(pipe, Schedule.full(10, "plms"))
    out = run(**kw, generator=_gen()).images
    assert _maxdiff(out, ref) <= 1e-5
    assert run.stats.nfe == 11  # PLMS's first step calls the U-Net twice


def test_null_and_partial_steps_on_a_real_unet():
    """The pipeline's output == a loop written here: explicit active timesteps, DDIM formula,
    executor calls with the step types the schedule's definition gives."""
    pipe = tiny.ddim_pipeline()
    ex = UNetExecutor(pipe.unet)
    grid = [int(t) for t in (torch.arange(20) * 50).flip(0)]  # DDPM config: leading, offset 0

    def model(x, j, t):
        kind = StepType(KINDS[j])
        if kind == StepType.PARTIAL:
            return ex(x, torch.tensor(t), kind, branch=BRANCHES[j])
        keep = {BRANCHES[j + 1]} if KINDS[j + 1 : j + 2] == "P" else set()
        return ex(x, torch.tensor(t), kind, cache_branches=keep)

    x = torch.randn(2, 3, 16, 16, generator=_gen())
    sched = pipe.scheduler
    with torch.no_grad():
        ref = _ddim_reference(
            x, [grid[i] for i in ACTIVE], model, sched.alphas_cumprod, torch.tensor(1.0), True
        )
    ref = (ref / 2 + 0.5).clamp(0, 1)
    out = apply_schedule(pipe, NULLS)(batch_size=2, generator=_gen(), output_type="pt").images
    assert ((ref > 0) & (ref < 1)).float().mean() > 0.5
    assert _maxdiff(out, ref) <= 1e-5


# -------------------------------------------------------------------------------- errors
def test_sampler_errors():
    from diffusers import FlowMatchEulerDiscreteScheduler

    with pytest.raises(FlexoptError, match="sampler 'euler' is not supported; allowed: ddim"):
        make_sampler("euler", tiny.ddim_scheduler())
    with pytest.raises(FlexoptError, match="FlowMatchEulerDiscreteScheduler is not supported"):
        make_sampler("ddim", FlowMatchEulerDiscreteScheduler())
    bad = {"_class_name": "DDIMScheduler", "prediction_type": "flow_prediction"}
    with pytest.raises(FlexoptError, match="prediction_type 'flow_prediction' is not supported"):
        make_sampler("ddim", bad)
    with pytest.raises(FlexoptError, match="thresholding=True is not supported"):
        make_sampler("ddim", tiny.ddim_scheduler(thresholding=True))
    with pytest.raises(FlexoptError, match="cannot space 2000 steps"):
        make_sampler("ddim", tiny.ddim_scheduler()).grid(2000)


# ------------------------------------------------------------------ FlexScheduler itself
@pytest.mark.parametrize("sampler", ["ddim", "plms"])
def test_flex_scheduler_timesteps_are_the_stock_ones_on_the_full_grid(sampler):
    from flexopt.run.scheduler import FlexScheduler

    stock = tiny.pndm_scheduler() if sampler == "plms" else tiny.ddim_scheduler(**tiny.SD_SCHEDULE)
    stock.set_timesteps(10)
    flex = FlexScheduler.build(stock, Schedule.full(10, sampler))
    flex.set_timesteps(10)
    assert flex.timesteps.tolist() == stock.timesteps.tolist()  # PLMS: one repeated timestep
    assert flex.config.num_train_timesteps == 1000 and len(flex) == 1000
    again = FlexScheduler.from_config(flex.config)  # a config round trip rebuilds the same
    assert again.timesteps.tolist() == flex.timesteps.tolist()
    x, noise = _x0(), _x0() * 0.5
    t = flex.timesteps[:1]
    assert torch.equal(flex.add_noise(x, noise, t), stock.add_noise(x, noise, t))


def test_flex_scheduler_runs_only_the_active_steps():
    from flexopt.run.scheduler import FlexScheduler

    flex = FlexScheduler.build(tiny.ddim_scheduler(), NULLS)
    assert len(flex.timesteps) == NULLS.nfe
    grid = make_sampler("ddim", tiny.ddim_scheduler()).grid(NULLS.grid_length)
    assert flex.timesteps.tolist() == [grid.timesteps[i] for i in ACTIVE]
    x = _x0()
    for t in flex.timesteps:  # the pipeline's loop, with the toy model
        x = flex.step(toy(x, int(t)), t, x).prev_sample
    assert _maxdiff(x, ours("ddim", tiny.ddim_scheduler(), NULLS, _x0())) == 0.0
    with pytest.raises(FlexoptError, match="timestep 3 is not one of the schedule's active steps"):
        FlexScheduler.build(tiny.ddim_scheduler(), NULLS).step(x, 3, x)
    with pytest.raises(FlexoptError, match="num_inference_steps 50 disagrees with the schedule's"):
        flex.set_timesteps(50)
    with pytest.raises(FlexoptError, match="FlexScheduler needs a schedule"):
        FlexScheduler()

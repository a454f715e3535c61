"""The step executor: full steps are the model's forward, partial steps are DeepCache's branch.

References, each independent of `flexopt.run.hooks`:
- full step: the diffusers model's own `forward`;
- partial step, any number of resnets per block: the model's own forward with every layer deeper
  than the branch replaced (forward hooks) by its output from the full call (DeepCache's
  mechanism, generalized);
- whole generations: DeepCache's public `DeepCacheSDHelper` on the same pipeline.
"""

from __future__ import annotations

import pytest
import tiny
import torch

from flexopt.errors import FlexoptError
from flexopt.run.executor import UNetExecutor
from flexopt.run.pipeline import apply_schedule
from flexopt.space.schedule import Schedule
from flexopt.space.steps import StepType

_RESNET_SAMPLING = dict(
    down_block_types=(
        "ResnetDownsampleBlock2D",
        "AttnDownBlock2D",
        "ResnetDownsampleBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "ResnetUpsampleBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
    downsample_type="resnet",
    upsample_type="resnet",
)

VARIANTS = {
    "unet2d": lambda: tiny.unet2d(),
    "unet2d-lpb1-noattn": lambda: tiny.unet2d(layers_per_block=1, attention=False),
    "unet2d-lpb3": lambda: tiny.unet2d(layers_per_block=3, blocks=3),
    "unet2d-class": lambda: tiny.unet2d(num_class_embeds=10),
    "unet2d-resnet-resampling": lambda: tiny.unet2d(**_RESNET_SAMPLING),
    "cond": lambda: tiny.unet_cond(),
    "cond-lpb1-noattn": lambda: tiny.unet_cond(layers_per_block=1, attention=False),
    "cond-lpb-mixed": lambda: tiny.unet_cond(layers_per_block=(1, 3, 2, 2)),
    "cond-odd-size": lambda: tiny.unet_cond(sample_size=12, blocks=3),
    "cond-class": lambda: tiny.unet_cond(num_class_embeds=5),
}


def _inputs(unet, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(2, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    t = torch.tensor(100 + 300 * seed)
    kwargs = {}
    if hasattr(unet, "get_time_embed"):
        kwargs["encoder_hidden_states"] = torch.randn(2, 5, cfg.cross_attention_dim, generator=g)
    if getattr(unet, "class_embedding", None) is not None:
        kwargs["class_labels"] = torch.tensor([1, 3])
    return x, t, kwargs


def _deeper_modules(unet, branch: int) -> list[torch.nn.Module]:
    """Modules whose outputs a partial step with `branch` takes from the cache (SPEC §1)."""
    down, up = [], []  # lists of module groups, in execution order
    n_down = None  # down layers before position branch-1
    position = 0
    for block in unet.down_blocks:
        attns = list(getattr(block, "attentions", None) or [None] * len(block.resnets))
        for resnet, attn in zip(block.resnets, attns, strict=True):
            if position == branch - 1:
                n_down = len(down)
            down.append([m for m in (resnet, attn) if m is not None])
            position += 1
        if position == branch - 1:
            n_down = len(down)
        position += 1
        down.extend([s] for s in block.downsamplers or ())
    resnet_index = []
    for block in unet.up_blocks:
        attns = list(getattr(block, "attentions", None) or [None] * len(block.resnets))
        for resnet, attn in zip(block.resnets, attns, strict=True):
            resnet_index.append(len(up))
            up.append([m for m in (resnet, attn) if m is not None])
        up.extend([s] for s in block.upsamplers or ())
    fresh = n_down + 1  # conv_in's skip and one per computed down layer
    first_up = resnet_index[len(resnet_index) - fresh]
    groups = [*down[n_down:], [unet.mid_block], *up[:first_up]]
    return [m for g in groups for m in g]


def _reference_partial(unet, branch, full_args, partial_args):
    """The model's own forward, with deeper layers' outputs replayed from a full call."""
    modules = _deeper_modules(unet, branch)
    recorded: dict[torch.nn.Module, object] = {}
    handles = [m.register_forward_hook(lambda m, a, o: recorded.__setitem__(m, o)) for m in modules]
    x, t, kw = full_args
    unet(x, t, **kw)
    for h in handles:
        h.remove()
    handles = [m.register_forward_hook(lambda m, a, o: recorded[m]) for m in modules]
    try:
        x, t, kw = partial_args
        return unet(x, t, **kw).sample
    finally:
        for h in handles:
            h.remove()


def _partial_equals_reference(ex: UNetExecutor, b: int, first, second) -> torch.Tensor:
    """A full step on `first` keeping branch `b`, then a partial one on `second`: checked against
    `_reference_partial` and returned."""
    x, t, kw = first
    ex(x, t, StepType.FULL, cache_branches={b}, **kw)
    x, t, kw = second
    out = ex(x, t, StepType.PARTIAL, branch=b, **kw)
    ref = _reference_partial(ex.unet, b, first, second)
    assert (out - ref).abs().max().item() <= 1e-6, f"branch {b}"
    return out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_full_step_is_the_model_forward(name):
    unet = VARIANTS[name]()
    x, t, kw = _inputs(unet, 0)
    with torch.no_grad():
        ref = unet(x, t, **kw).sample
        out = UNetExecutor(unet)(x, t, StepType.FULL, **kw)
    assert (out - ref).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", list(VARIANTS))
def test_partial_steps_match_cached_forward(name):
    unet = VARIANTS[name]()
    ex = UNetExecutor(unet)
    first, second = _inputs(unet, 0), _inputs(unet, 1)
    with torch.no_grad():
        for b in range(1, ex.max_branch + 1):
            _partial_equals_reference(ex, b, first, second)


def test_controlnet_residuals_under_partial_steps():
    """Shallow residuals are added to the skips a partial step computes; the deeper ones (and the
    mid block's) come with the cached feature: the model's forward with the deeper layers replayed
    from the full call, for every branch short of the last (where only the mid block is cached,
    with the full call's mid residual in it)."""
    unet = tiny.unet_cond()
    net = tiny.controlnet(unet)
    ex = UNetExecutor(unet)

    def with_residuals(args, seed):
        x, t, kw = args
        cond = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
        down, mid = net(x, t, controlnet_cond=cond, return_dict=False, **kw)
        return x, t, {**kw, "down_block_additional_residuals": down,
                      "mid_block_additional_residual": mid}

    with torch.no_grad():
        first, second = with_residuals(_inputs(unet, 0), 0), with_residuals(_inputs(unet, 1), 1)
        x, t, kw = first
        assert (ex(x, t, **kw) - unet(x, t, **kw).sample).abs().max().item() <= 1e-6
        plain = {k: v for k, v in second[2].items() if "residual" not in k}
        for b in range(1, ex.max_branch):
            out = _partial_equals_reference(ex, b, first, second)
            x, t, _ = second
            without = ex(x, t, StepType.PARTIAL, branch=b, **plain)
            assert (out - without).abs().max().item() > 1e-4  # the shallow residuals matter


@pytest.mark.parametrize(
    ("lpb", "blocks", "expected"), [(2, 4, 12), (1, 4, 8), (3, 3, 12), (2, 2, 6)]
)
def test_max_branch_counts_positions(lpb, blocks, expected):
    assert UNetExecutor(tiny.unet2d(layers_per_block=lpb, blocks=blocks)).max_branch == expected


def test_one_full_step_can_keep_several_branches():
    unet = tiny.unet2d()
    ex = UNetExecutor(unet)
    (x, t, _), (x2, t2, _) = _inputs(unet, 0), _inputs(unet, 1)
    with torch.no_grad():
        ex(x, t, cache_branches={2, 7})
        a = ex(x2, t2, StepType.PARTIAL, branch=2)
        b = ex(x2, t2, StepType.PARTIAL, branch=7)
        ex(x, t, cache_branches={7})
        assert torch.equal(b, ex(x2, t2, StepType.PARTIAL, branch=7))
        ex(x, t, cache_branches={2})
        assert torch.equal(a, ex(x2, t2, StepType.PARTIAL, branch=2))


def test_model_is_left_untouched():
    unet = tiny.unet_cond()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    x, t, kw = _inputs(unet, 0)
    ex = UNetExecutor(unet)
    with torch.no_grad():
        ex(x, t, cache_branches={3}, **kw)
        ex(x, t, StepType.PARTIAL, branch=3, **kw)
    for m in unet.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in vars(m)
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items())


def test_branch_errors():
    unet = tiny.unet2d()
    ex = UNetExecutor(unet)
    x, t, _ = _inputs(unet, 0)
    with pytest.raises(FlexoptError, match=r"branch 13 .*maximum is 12"):
        ex(x, t, StepType.FULL, cache_branches={13})
    with pytest.raises(RuntimeError, match="before a full step"):
        ex(x, t, StepType.PARTIAL, branch=3)
    with pytest.raises(ValueError, match="null step"):
        ex(x, t, StepType.NULL)


def test_unsupported_models():
    from diffusers import UNet2DModel

    with pytest.raises(FlexoptError, match="model type Linear is not supported; allowed: UNet2D"):
        UNetExecutor(torch.nn.Linear(2, 2))
    skip = UNet2DModel(
        sample_size=8,
        block_out_channels=(16, 16),
        down_block_types=("SkipDownBlock2D", "SkipDownBlock2D"),
        up_block_types=("SkipUpBlock2D", "SkipUpBlock2D"),
        norm_num_groups=4,
        layers_per_block=1,
    )
    with pytest.raises(
        FlexoptError, match="SkipDownBlock2D is not supported; allowed: DownBlock2D"
    ):
        UNetExecutor(skip)


# ------------------------------------------------------------------ whole runs vs DeepCache
T = 12


def _deepcache(pipe, interval, branch, **call):
    from DeepCache import DeepCacheSDHelper

    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=branch - 1)
    helper.enable()
    try:
        return pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=T, **call)
    finally:
        helper.disable()


@pytest.mark.parametrize(("interval", "branch"), [(2, 1), (3, 5), (4, 12), (6, 8)])
def test_deepcache_uniform_unet2d(interval, branch):
    pytest.importorskip("DeepCache")
    pipe = tiny.ddim_pipeline()
    ref = _deepcache(pipe, interval, branch, batch_size=2, eta=0.0, output_type="pt").images
    run = apply_schedule(pipe, Schedule.uniform(T, interval, branch))
    out = run(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert ((ref > 0) & (ref < 1)).float().mean() > 0.5  # outputs are not saturated
    assert (out - ref).abs().max().item() <= 1e-5
    assert run.stats.calls == {"full": T // interval, "partial": T - T // interval}


@pytest.fixture(scope="module")
def sd_ddim(tmp_path_factory):
    pytest.importorskip("transformers")
    scheduler = tiny.ddim_scheduler(**tiny.SD_SCHEDULE)
    return tiny.sd_pipeline(tmp_path_factory.mktemp("sd"), scheduler=scheduler)


@pytest.mark.parametrize(("interval", "branch"), [(2, 1), (3, 3), (4, 12)])
def test_deepcache_uniform_stable_diffusion_cfg(sd_ddim, interval, branch):
    pytest.importorskip("DeepCache")
    prompts = ["a red cube", "two dogs"]
    ref = _deepcache(sd_ddim, interval, branch, prompt=prompts, output_type="latent").images
    run = apply_schedule(sd_ddim, Schedule.uniform(T, interval, branch))
    out = run(prompts, generator=torch.Generator().manual_seed(0), output_type="latent").images
    assert (out - ref).abs().max().item() <= 1e-5


def test_apply_schedule_leaves_pipeline_alone(sd_ddim):
    scheduler_config = dict(sd_ddim.scheduler.config)
    timesteps = sd_ddim.scheduler.timesteps
    forward_attr = vars(sd_ddim.unet).get("forward")  # DeepCache's disable() leaves one
    hooks = [len(m._forward_hooks) for m in sd_ddim.unet.modules()]
    run = apply_schedule(sd_ddim, Schedule.uniform(T, 3, 2))
    run("x", generator=torch.Generator().manual_seed(0), output_type="latent", progress=False)
    assert dict(sd_ddim.scheduler.config) == scheduler_config
    assert vars(sd_ddim.unet).get("forward") is forward_attr
    assert [len(m._forward_hooks) for m in sd_ddim.unet.modules()] == hooks
    assert sd_ddim.scheduler.timesteps is timesteps


def test_apply_schedule_errors():
    pipe = tiny.ddim_pipeline()
    with pytest.raises(FlexoptError, match=r"branch 13 .*maximum is 12"):
        apply_schedule(pipe, Schedule.uniform(10, 2, 13))
    apply_schedule(pipe, Schedule.uniform(10, 1, 13))  # interval 1: the branch is never used
    with pytest.raises(FlexoptError, match=r"sampler 'plms' disagrees with the requested .*'ddim'"):
        apply_schedule(pipe, Schedule.full(10, "plms"), sampler="ddim")
    with pytest.raises(FlexoptError, match="t_ref 10 disagrees with the requested 50"):
        apply_schedule(pipe, Schedule.full(10), t_ref=50)
    run = apply_schedule(pipe, Schedule.full(10))
    with pytest.raises(FlexoptError, match="t_ref 10 disagrees"):
        run(num_inference_steps=20)
    with pytest.raises(FlexoptError, match="output_type 'latent' is not supported"):
        run(output_type="latent")
    # DDIMPipeline passes it through to the scheduler: refused, not silently ignored.
    with pytest.raises(FlexoptError, match="use_clipped_model_output=True is not supported"):
        run(use_clipped_model_output=True)
    run(batch_size=1, use_clipped_model_output=False, progress=False)


def test_unsupported_pipeline_and_scheduler():
    from diffusers import DDPMPipeline, FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.deprecated.score_sde_ve import ScoreSdeVePipeline
    from diffusers.schedulers import ScoreSdeVeScheduler

    sde = ScoreSdeVePipeline(unet=tiny.unet2d(), scheduler=ScoreSdeVeScheduler())
    with pytest.raises(FlexoptError, match="ScoreSdeVeScheduler is not supported; allowed: DDPM"):
        apply_schedule(sde, Schedule.full(4))

    class TransformerPipeline:  # no U-Net to hook
        def __call__(self, prompt: str) -> None: ...

    with pytest.raises(FlexoptError, match="TransformerPipeline is not supported: it has no U-Net"):
        apply_schedule(TransformerPipeline(), Schedule.full(4))
    flow = DDPMPipeline(unet=tiny.unet2d(), scheduler=FlowMatchEulerDiscreteScheduler())
    with pytest.raises(FlexoptError, match="FlowMatchEulerDiscreteScheduler is not supported; al"):
        apply_schedule(flow, Schedule.full(4))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {"sample": 1, "timestep": 2, "encoder_hidden_states": 3}),
        ((1, 2, 3), {}),
        ((1, 2), {"encoder_hidden_states": 3, "return_dict": False}),
        ((1,), {"timestep": 2, "encoder_hidden_states": 3, "class_labels": 4}),
        ((1, 2, 3, 4), {}),
    ],
)
def test_hook_reads_call_arguments_like_bind(args, kwargs):
    """The per-step fast path names arguments exactly as `inspect.Signature.bind` does."""
    import inspect

    from flexopt.run.hooks import prepare

    pipe = tiny.ddim_pipeline(tiny.unet_cond())
    hook = prepare(pipe, Schedule.uniform(T, 3, 2))
    bound = inspect.signature(type(pipe.unet).forward).bind(pipe.unet, *args, **kwargs)
    assert hook._inputs(args, kwargs) == {k: v for k, v in bound.arguments.items() if k != "self"}


def test_hook_argument_errors_are_the_models():
    from flexopt.run.hooks import prepare

    hook = prepare(tiny.ddim_pipeline(), Schedule.uniform(T, 3, 2))
    with pytest.raises(TypeError, match="multiple values for argument 'timestep'"):
        hook._inputs((1, 2), {"timestep": 2})
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        hook._inputs((1, 2), {"bogus": 2})
    with pytest.raises(TypeError, match="missing a required argument: 'timestep'"):
        hook._inputs((1,), {})

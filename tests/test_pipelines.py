"""Schedules inside diffusers' own pipelines (SPEC §4), each checked against an independent
reference: the pipeline's own output with its stock DDIM / PNDM scheduler (all-full schedules) and
DeepCache's `DeepCacheSDHelper` (uniform schedules). Every pipeline is built here from tiny random
weights (CLIP text encoders and tokenizers written in `tiny`), saved, and loaded back with
`from_pretrained`, the way a user's model arrives.
"""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import torch

import flexopt
from flexopt.errors import FlexoptError
from flexopt.models.loading import load_pipeline
from flexopt.space.schedule import Schedule

pytest.importorskip("transformers")

T = 6
PROMPTS = ["a red cube", "two dogs"]


def _gen(n: int = 1) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(i) for i in range(n)]


def _loaded(pipe, tmp_path_factory, name: str):
    return load_pipeline(str(tiny.save(pipe, tmp_path_factory.mktemp(name) / "pipe")))


def _with_scheduler(pipe, sampler: str):
    """The same pipeline components with the stock scheduler of `sampler`."""
    from diffusers import DDIMScheduler, PNDMScheduler

    cls = {"ddim": DDIMScheduler, "plms": PNDMScheduler}[sampler]
    extra = {"skip_prk_steps": True} if sampler == "plms" else {}
    return type(pipe)(**{**pipe.components, "scheduler": cls.from_config(pipe.scheduler.config,
                                                                          **extra)})


def _maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def _batch(call) -> int:
    """How many images a call makes (one generator each)."""
    prompt = call.get("prompt")
    prompts = 1 if prompt is None or isinstance(prompt, str) else len(prompt)
    return prompts * call.get("num_images_per_prompt", 1)


def _compare(pipe, schedule: Schedule, **call) -> float:
    """max |pipe(...) with its own scheduler − pipe(...) under the schedule|, same seeds."""
    n = _batch(call)
    ref = pipe(generator=_gen(n), num_inference_steps=schedule.t_ref, **call).images
    with flexopt.scheduled(pipe, schedule):
        out = pipe(generator=_gen(n), num_inference_steps=schedule.t_ref, **call).images
    assert np.abs(np.asarray(ref)).max() > 0.05  # not all zeros
    return _maxdiff(out, ref)


def _image(seed: int, size: int = 16, channels: int = 3):
    from PIL import Image

    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    return Image.fromarray(data if channels == 3 else data[..., 0])


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    scheduler = tiny.ddim_scheduler(**tiny.SD_SCHEDULE)
    return _loaded(tiny.sd_pipeline(tmp_path_factory.mktemp("sd"), scheduler=scheduler),
                   tmp_path_factory, "sd")


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return _loaded(tiny.sdxl_pipeline(tmp_path_factory.mktemp("sdxl")), tmp_path_factory, "sdxl")


@pytest.fixture(scope="module")
def img2img(sd):
    from diffusers import StableDiffusionImg2ImgPipeline

    return StableDiffusionImg2ImgPipeline(**sd.components)


@pytest.fixture(scope="module")
def inpaint(tmp_path_factory):
    from diffusers import StableDiffusionInpaintPipeline

    d = tmp_path_factory.mktemp("inpaint")
    parts = tiny.sd_components(d, unet=tiny.unet_cond(in_channels=9),
                               scheduler=tiny.ddim_scheduler(**tiny.SD_SCHEDULE))
    return _loaded(StableDiffusionInpaintPipeline(**parts), tmp_path_factory, "inpaint")


@pytest.fixture(scope="module")
def controlnet(tmp_path_factory):
    from diffusers import StableDiffusionControlNetPipeline

    d = tmp_path_factory.mktemp("controlnet")
    parts = tiny.sd_components(d, scheduler=tiny.ddim_scheduler(**tiny.SD_SCHEDULE))
    pipe = StableDiffusionControlNetPipeline(controlnet=tiny.controlnet(parts["unet"]), **parts)
    return _loaded(pipe, tmp_path_factory, "controlnet")


# --------------------------------------------------- all-full == the pipeline's own scheduler
@pytest.mark.parametrize("sampler", ["ddim", "plms"])
def test_all_full_pixel_pipelines(sampler, tmp_path_factory):
    from diffusers import DDPMPipeline, PNDMPipeline

    cls = DDPMPipeline if sampler == "ddim" else PNDMPipeline
    pipe = _with_scheduler(cls(tiny.unet2d(), tiny.ddim_scheduler()), sampler)
    pipe = _loaded(pipe, tmp_path_factory, "pixel")
    ref = pipe(batch_size=2, generator=_gen(2), num_inference_steps=T, output_type="np").images
    with flexopt.scheduled(pipe, Schedule.full(T, sampler)) as hook:
        out = pipe(batch_size=2, generator=_gen(2), num_inference_steps=T, output_type="np")
    assert _maxdiff(out.images, ref) <= 1e-5
    assert hook.stats.calls == {"full": T + (sampler == "plms")}  # PLMS: the corrector call


@pytest.mark.parametrize("sampler", ["ddim", "plms"])
@pytest.mark.parametrize("name", ["sd", "sdxl", "controlnet"])
def test_all_full_text_pipelines(request, name, sampler):
    pipe = _with_scheduler(request.getfixturevalue(name), sampler)
    call = dict(prompt=PROMPTS, guidance_scale=5.0, output_type="np")
    if name == "controlnet":
        call["image"] = [_image(1), _image(2)]
    assert _compare(pipe, Schedule.full(T, sampler), **call) <= 1e-5


@pytest.mark.parametrize(("sampler", "strength"), [("ddim", 0.5), ("ddim", 1.0), ("plms", 1.0)])
def test_all_full_img2img(img2img, sampler, strength):
    pipe = _with_scheduler(img2img, sampler)
    call = dict(prompt=PROMPTS, image=[_image(1), _image(2)], strength=strength, output_type="np")
    assert _compare(pipe, Schedule.full(T, sampler), **call) <= 1e-5


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_all_full_inpaint(inpaint, strength):
    call = dict(prompt=PROMPTS, image=[_image(1), _image(2)], strength=strength,
                mask_image=[_image(3, channels=1), _image(4, channels=1)], output_type="np")
    assert _compare(inpaint, Schedule.full(T), **call) <= 1e-5


def test_num_images_per_prompt(sdxl):
    call = dict(prompt="a cat", num_images_per_prompt=3, output_type="np")
    assert _compare(sdxl, Schedule.full(T), **call) <= 1e-5


def test_all_full_lora_with_scale(sd, tmp_path):
    peft = pytest.importorskip("peft")
    from diffusers import StableDiffusionPipeline

    unet = tiny.unet_cond(seed=3)
    unet.add_adapter(peft.LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(
        tmp_path / "lora", unet_lora_layers=peft.get_peft_model_state_dict(unet)
    )
    pipe = type(sd)(**sd.components)
    pipe.unet = tiny.unet_cond()  # a fresh copy: the shared fixture's U-Net stays LoRA-free
    pipe.load_lora_weights(str(tmp_path / "lora"))
    call = dict(prompt=PROMPTS, cross_attention_kwargs={"scale": 0.5}, output_type="np")
    assert _compare(pipe, Schedule.full(T), **call) <= 1e-5
    # the LoRA and its scale matter
    plain = sd(generator=_gen(2), num_inference_steps=T, **call).images
    half = pipe(generator=_gen(2), num_inference_steps=T, **call).images
    full = pipe(generator=_gen(2), num_inference_steps=T,
                **{**call, "cross_attention_kwargs": {"scale": 1.0}}).images
    assert _maxdiff(half, plain) > 1e-3 and _maxdiff(half, full) > 1e-3


# ----------------------------------------------------------------- uniform == DeepCache
def _deepcache(pipe, interval: int, branch: int, steps: int, **call):
    from DeepCache import DeepCacheSDHelper

    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=branch - 1)
    had_forward = {m for m in pipe.unet.modules() if "forward" in vars(m)}
    helper.enable()
    try:
        return pipe(generator=_gen(_batch(call)), num_inference_steps=steps, **call).images
    finally:
        helper.disable()  # leaves `forward` attributes behind: remove them
        for m in pipe.unet.modules():
            if m not in had_forward:
                vars(m).pop("forward", None)


def _vs_deepcache(pipe, interval: int, branch: int, **call) -> float:
    """DeepCache on DDIM (under PNDM its step index counts PLMS's repeated timestep, so its full
    steps shift by one after the first: not a uniform schedule)."""
    pytest.importorskip("DeepCache")
    steps = 12
    ref = _deepcache(pipe, interval, branch, steps, **call)
    with flexopt.scheduled(pipe, Schedule.uniform(steps, interval, branch)) as hook:
        out = pipe(generator=_gen(_batch(call)), num_inference_steps=steps, **call).images
    assert hook.stats.calls["partial"] > 0
    return _maxdiff(out, ref)


@pytest.mark.parametrize(("interval", "branch"), [(2, 1), (3, 5), (4, 9)])
def test_deepcache_sdxl(sdxl, interval, branch):
    call = dict(prompt=PROMPTS, output_type="np")
    assert _vs_deepcache(sdxl, interval, branch, **call) <= 1e-5


def test_deepcache_img2img(img2img):
    # strength 0.5 of 12 steps starts at step 6, a full step of interval 3 in both
    call = dict(prompt=PROMPTS, image=[_image(1), _image(2)], strength=0.5, output_type="np")
    assert _vs_deepcache(img2img, 3, 2, **call) <= 1e-5


def test_deepcache_inpaint(inpaint):
    call = dict(prompt=PROMPTS, image=[_image(1), _image(2)], strength=1.0,
                mask_image=[_image(3, channels=1), _image(4, channels=1)], output_type="np")
    assert _vs_deepcache(inpaint, 4, 3, **call) <= 1e-5


# ------------------------------------------------------------------- partial-step semantics
def test_img2img_first_executed_step_is_full(img2img):
    """strength 0.5 of 12 steps starts at step 6, a partial slot of interval 4: it runs full."""
    schedule = Schedule.uniform(12, 4, 2)
    with flexopt.scheduled(img2img, schedule) as hook:
        img2img(prompt=PROMPTS, image=[_image(1), _image(2)], strength=0.5, generator=_gen(2),
                num_inference_steps=12, output_type="np")
    # steps 6..11: 6 (partial → full), 7 partial, 8 full, 9-11 partial
    assert hook.stats.calls == {"full": 2, "partial": 4}


def test_controlnet_partial_steps_run(controlnet):
    call = dict(prompt=PROMPTS, image=[_image(1), _image(2)], output_type="np",
                num_inference_steps=12)
    with flexopt.scheduled(controlnet, Schedule.uniform(12, 3, 2)) as hook:
        out = controlnet(generator=_gen(2), **call).images
    full = controlnet(generator=_gen(2), **call).images
    assert hook.stats.calls == {"full": 4, "partial": 8}
    assert 1e-4 < _maxdiff(out, full) < 0.5  # close to the teacher, but not equal


# ------------------------------------------------------------ the pipeline stays as it was
def test_pipeline_unchanged_after_the_block(sdxl):
    pipe = type(sdxl)(**sdxl.components)
    call = dict(prompt="x", output_type="np", num_inference_steps=T)
    before = pipe(generator=_gen(), **call).images
    scheduler, config = pipe.scheduler, dict(pipe.config)
    unet_attrs = dict(vars(pipe.unet))
    with flexopt.scheduled(pipe, Schedule.uniform(T, 2, 3)):
        assert pipe.scheduler is not scheduler
        scheduled = pipe(generator=_gen(), **call).images
    assert pipe.scheduler is scheduler and dict(pipe.config) == config
    assert dict(vars(pipe.unet)) == unet_attrs and "forward" not in vars(pipe.unet)
    assert _maxdiff(pipe(generator=_gen(), **call).images, before) == 0.0
    assert _maxdiff(scheduled, before) > 1e-4  # the schedule did run

    with pytest.raises(RuntimeError, match="boom"), flexopt.scheduled(pipe, Schedule.full(T)):
        raise RuntimeError("boom")
    assert pipe.scheduler is scheduler and "forward" not in vars(pipe.unet)

    hook = flexopt.enable(pipe, Schedule.full(T))
    assert pipe.unet.forward is hook
    with pytest.raises(FlexoptError, match="already enabled"):
        flexopt.enable(pipe, Schedule.full(T))
    flexopt.disable(pipe)
    assert pipe.scheduler is scheduler and "forward" not in vars(pipe.unet)


def test_scheduled_errors(sd):
    pipe = type(sd)(**sd.components)
    with flexopt.scheduled(pipe, Schedule.full(T)):
        with pytest.raises(FlexoptError, match="num_inference_steps 50 disagrees with the "
                                               "schedule's t_ref 6; allowed: 6"):
            pipe("x", num_inference_steps=50)
        with pytest.raises(FlexoptError, match="custom timesteps"):
            pipe("x", timesteps=[999, 500])
        with pytest.raises(FlexoptError, match=r"eta 0\.5 is not supported; allowed: 0"):
            pipe("x", num_inference_steps=T, eta=0.5)
    with pytest.raises(FlexoptError, match=r"branch 20 is beyond .*allowed: 1\.\.12"):
        flexopt.scheduled(pipe, Schedule.uniform(T, 2, 20)).__enter__()
    assert "forward" not in vars(pipe.unet) and pipe.scheduler is sd.scheduler

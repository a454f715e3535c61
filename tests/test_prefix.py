"""Shared-prefix reuse: a candidate resumed from a stored prefix state gives exactly the images
(max |diff| == 0) and rFID of a run from scratch, skips exactly the prefix's U-Net calls, and the
state cache stays inside its memory budget."""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import torch

from flexopt.errors import FlexoptError
from flexopt.run.pipeline import apply_schedule, generate_images
from flexopt.run.prefix import PrefixCache, PrefixKey, PrefixReuse
from flexopt.run.samplers import Resume, SamplerState
from flexopt.run.scheduler import FlexScheduler
from flexopt.search.evaluator import EvalSettings, ModelEvaluator
from flexopt.space.schedule import Schedule
from flexopt.space.steps import Segment

SAMPLERS = ("ddim", "plms", "dpm-solver")
L = 3
# Null slots (interval < L) and partial steps (interval > 1) inside every shared prefix.
BASE = (Segment(2, 3), Segment(1, 1), Segment(3, 2), Segment(2, 3), Segment(1, 2))
NUM_IMAGES, BATCH = 5, 3  # two batches: (0, 3) and (3, 2)


@pytest.fixture(scope="module")
def pipe():
    return tiny.ddim_pipeline(tiny.unet2d(sample_size=8, blocks=2, channels=8, seed=0))


def schedule(sampler: str, segments: tuple[Segment, ...]) -> Schedule:
    return Schedule(sampler, 12, L, segments)


def child(j: int) -> tuple[Segment, ...]:
    """Shares exactly the first `j` segments of BASE (segment j differs, the rest too)."""
    s = BASE[j]
    changed = Segment(s.branch % 3 + 1, s.interval)
    return (*BASE[:j], changed, *(Segment(1, 3),) * (len(BASE) - j - 1))


def prefix_calls(sampler: str, segments: tuple[Segment, ...]) -> int:
    """U-Net calls a run makes before the first slot after `segments` (by hand: one per active
    step; PLMS repeats its second step's call, the first step's corrector)."""
    n = sum(s.interval for s in segments)
    return n + (sampler == "plms" and n >= 2)


def generate(pipe, sched: Schedule, prefix: PrefixReuse | None = None):
    return generate_images(apply_schedule(pipe, sched), NUM_IMAGES, 0, BATCH, progress=False,
                           prefix=prefix)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_resumed_images_are_bit_identical(pipe, sampler):
    cache = PrefixCache(64)
    base = schedule(sampler, BASE)
    assert np.array_equal(generate(pipe, base, PrefixReuse(cache, "c", base)).images,
                          generate(pipe, base).images)  # storing changes nothing
    for j in range(1, len(BASE)):
        sched = schedule(sampler, child(j))
        reuse = PrefixReuse(cache, "c", sched)
        resumed, scratch = generate(pipe, sched, reuse), generate(pipe, sched)
        assert reuse.resumed == [j, j]  # the longest stored prefix: BASE's first j segments
        assert np.abs(resumed.images - scratch.images).max() == 0.0, j
        assert resumed.skipped == 2 * prefix_calls(sampler, BASE[:j])
        assert resumed.calls + resumed.skipped == scratch.calls


def test_boundaries_are_the_prefix_calls():
    from diffusers import DDIMScheduler

    for sampler in SAMPLERS:
        flex = FlexScheduler.build(DDIMScheduler(**tiny.DDPM_SCHEDULE), schedule(sampler, BASE))
        expected = {prefix_calls(sampler, BASE[:j]): j for j in range(1, len(BASE))}
        assert flex.boundaries() == expected


def test_the_key_holds_grid_and_batch(pipe):
    """A schedule with another segment count (another grid) or other batches reuses nothing."""
    cache = PrefixCache(64)
    base = schedule("ddim", BASE)
    generate(pipe, base, PrefixReuse(cache, "c", base))
    shorter = schedule("ddim", BASE[:4])
    reuse = PrefixReuse(cache, "c", shorter)
    generate(pipe, shorter, reuse)
    assert reuse.resumed == [0, 0] and reuse.skipped == 0
    other = PrefixReuse(cache, "c", schedule("ddim", child(3)))
    generate_images(apply_schedule(pipe, other.schedule), NUM_IMAGES, 0, 2, progress=False,
                    prefix=other)
    assert other.resumed == [0, 0, 0]
    assert PrefixReuse(cache, "other model", schedule("ddim", child(3))).batch(0, 3)[0] is None


def test_text_pipeline_with_guidance_is_bit_identical(tmp_path):
    """Classifier-free guidance batches the latents twice: the stored state is repeated alike."""
    pipe = tiny.sd_pipeline(tmp_path, scheduler=tiny.ddim_scheduler())
    cache = PrefixCache(64)
    base, other = schedule("plms", BASE), schedule("plms", child(2))

    def gen(s, prefix=None):
        return generate_images(apply_schedule(pipe, s), 2, 0, 2, prompts=["a cat"],
                               guidance_scale=3.0, progress=False, prefix=prefix).images

    gen(base, PrefixReuse(cache, "c", base))
    reuse = PrefixReuse(cache, "c", other)
    assert np.abs(gen(other, reuse) - gen(other)).max() == 0.0
    assert reuse.resumed == [2]


def _state(nbytes: int, call: int = 1) -> Resume:
    return Resume(call, torch.zeros(nbytes // 4), SamplerState())


def test_lru_eviction_respects_the_budget():
    cache = PrefixCache(1000 / 2**20)  # 1000 bytes
    keys = [PrefixKey("c", ("ddim", 3, 12), 0, 1, (Segment(1, i + 1),)) for i in range(4)]
    for key in keys[:3]:
        cache.put(key, _state(400))
        assert cache.nbytes <= cache.budget_bytes
    assert keys[0] not in cache and len(cache) == 2  # the oldest went first
    assert cache.get(keys[1]) is not None  # now the most recent
    cache.put(keys[3], _state(400))
    assert keys[1] in cache and keys[2] not in cache and cache.nbytes == 800
    cache.put(keys[0], _state(2000))  # larger than the whole budget: not kept
    assert keys[0] not in cache and cache.nbytes == 800


def test_stored_state_is_a_cpu_copy():
    live = Resume(1, torch.ones(4), SamplerState([torch.ones(4)], [torch.tensor(0.5)]))
    cache = PrefixCache(1)
    key = PrefixKey("c", ("ddim", 3, 12), 0, 1, (Segment(1, 1),))
    cache.put(key, live)
    live.sample.add_(1)
    live.state.ets[0].add_(1)
    kept = cache.get(key)
    assert kept.sample.device.type == "cpu"
    assert kept.sample.tolist() == [1.0] * 4 and kept.state.ets[0].tolist() == [1.0] * 4


@pytest.mark.parametrize("mb", [-1, float("nan"), "big"])
def test_bad_budget_is_one_line(mb):
    with pytest.raises(FlexoptError, match=r"prefix cache size .* allowed: a number >= 0"):
        PrefixCache(mb)


def test_resume_only_at_a_boundary():
    from diffusers import DDIMScheduler

    flex = FlexScheduler.build(DDIMScheduler(**tiny.DDPM_SCHEDULE), schedule("ddim", BASE))
    with pytest.raises(FlexoptError, match="cannot resume at U-Net call 1; allowed: a segment "
                                           "boundary"):
        flex.resume_at(_state(16, call=1))


# ---------------------------------------------------------------------- through the evaluator
def _evaluator(pipe, sampler, cache_dir, weights, mb) -> ModelEvaluator:
    settings = EvalSettings(NUM_IMAGES, seed=0, batch_size=BATCH)
    return ModelEvaluator(pipe, sampler, 12, settings, str(cache_dir), weights, False, mb)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_rfid_is_identical_with_and_without_reuse(pipe, sampler, tmp_path, inception_weights):
    on = _evaluator(pipe, sampler, tmp_path, inception_weights, 64)
    off = _evaluator(pipe, sampler, tmp_path, inception_weights, 0)
    assert off.prefix_cache is None
    base, other = schedule(sampler, BASE), schedule(sampler, child(3))
    assert on.score(base) == off.score(base)
    assert on.last_counts == {"unet_calls": 2 * prefix_calls(sampler, BASE),
                              "unet_calls_skipped": 0}
    assert on.score(other) == off.score(other)
    assert np.array_equal(on.last_images, off.last_images)
    skipped = 2 * prefix_calls(sampler, BASE[:3])
    assert on.last_counts["unet_calls_skipped"] == skipped
    assert on.last_counts["unet_calls"] == off.last_counts["unet_calls"] - skipped
    assert off.last_counts["unet_calls_skipped"] == 0


def test_no_reuse_where_a_resume_would_not_be_exact(tmp_path, inception_weights):
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    img2img = StableDiffusionImg2ImgPipeline(**tiny.sd_pipeline(tmp_path).components)
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (120, 30, 200)).save(image)
    settings = EvalSettings(2, prompts=("a cat",), images=(str(image),))
    ev = ModelEvaluator(img2img, "ddim", 12, settings, str(tmp_path), inception_weights, False)
    assert ev.prefix_cache is None


# ------------------------------------------------------------------------- study and CLI
class _CountingEvaluator:
    """Scores nothing real: records fixed U-Net counts, as `ModelEvaluator.score` does."""

    full_macs = 100.0

    def avg_macs(self, schedule: Schedule) -> float:
        return 50.0

    def score(self, schedule: Schedule) -> float:
        self.last_counts = {"unet_calls": 6, "unet_calls_skipped": 4}
        return 1.0


def test_trials_record_the_calls_and_the_summary_counts_them():
    import optuna

    from flexopt.search.job import prefix_reuse_line
    from flexopt.search.objective import Objective
    from flexopt.space.segment import SearchSpace

    space = SearchSpace((4,), (1, 2), (1, 2, 3), 12)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(Objective(space, _CountingEvaluator()), n_trials=3)
    attrs = study.trials[0].user_attrs
    assert (attrs["unet_calls"], attrs["unet_calls_skipped"]) == (6, 4)
    assert prefix_reuse_line(study) == [
        "prefix reuse: 12 of 30 U-Net calls skipped (40%) over 3 evaluated trials"]
    assert prefix_reuse_line(optuna.create_study()) == []


def test_cli_refuses_a_negative_budget():
    from click.testing import CliRunner

    from flexopt.cli import main

    r = CliRunner().invoke(main, ["search", "--model", "x", "--prefix-cache-mb", "-1"])
    assert r.exit_code == 2 and "--prefix-cache-mb" in r.output and "-1" in r.output

"""MACs of full and partial steps (counted on the meta device) and schedule costs, against the
published totals (SPEC §1, §3) and an independent count of the model's own forward."""

from __future__ import annotations

import pytest
import tiny
import torch

from flexopt.errors import FlexoptError
from flexopt.models.loading import REFERENCE_UNETS
from flexopt.run.cost import MacsProfile, count_macs, meta_unet, schedule_cost
from flexopt.space.schedule import Schedule
from flexopt.space.steps import Segment

G = 1e9
# SPEC §3: DeepCache, DDPM CIFAR-10, DDIM 100, uniform interval 5, avg MACs of branch 1..12.
DEEPCACHE_CIFAR = [1.60, 2.24, 3.01, 3.89, 4.58, 5.31, 5.45, 5.60, 5.88, 5.95, 5.99, 6.03]


@pytest.fixture(scope="module")
def cifar() -> MacsProfile:
    return count_macs(REFERENCE_UNETS["ddpm-cifar10"])


@pytest.mark.parametrize(
    ("name", "published"), [("ddpm-cifar10", 6.1), ("ddpm-bedroom", 248.7), ("sd15", 338.8)]
)
def test_full_macs_match_published_totals(name, published):
    macs = count_macs(REFERENCE_UNETS[name]).full / G
    assert macs == pytest.approx(published, rel=0.02)


def _flop_counter(config, sample_size: int) -> tuple[int, int]:
    """(conv + linear MACs, attention matmul MACs) of one forward at batch 1, by torch's own
    `FlopCounterMode` on the same inputs (attention through diffusers' plain `AttnProcessor`,
    whose bmm / baddbmm the counter sees)."""
    from diffusers.models.attention_processor import Attention, AttnProcessor
    from torch.utils.flop_counter import FlopCounterMode

    from flexopt.run.cost import _inputs

    unet = meta_unet(config)
    for module in unet.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor())
    kwargs = _inputs(unet, sample_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(**kwargs)
    counts = counter.get_flop_counts()["Global"]
    flops = {str(k).removeprefix("aten."): v for k, v in counts.items()}
    layers = flops.get("convolution", 0) + flops.get("addmm", 0) + flops.get("mm", 0)
    attention = flops.get("bmm", 0) + flops.get("baddbmm", 0)
    return layers // 2, attention // 2


@pytest.mark.parametrize(
    ("name", "size"),
    [("tiny-sdxl", 8), ("sd15", 16), ("sdxl", 32), ("ddpm-cifar10", 32)],
)
def test_macs_equal_torch_flop_counter(name, size):
    """Every supported U-Net, SDXL's added embeddings included: our count == torch's."""
    if name == "tiny-sdxl":
        unet = tiny.unet_sdxl()
        config = {**unet.config, "_class_name": type(unet).__name__}
    else:
        config = REFERENCE_UNETS[name]
    profile = count_macs(config, size)
    layers, attention = _flop_counter(config, size)
    assert profile.full == layers
    assert profile.attention_full == attention


def test_deepcache_cifar_table(cifar):
    ours = [schedule_cost(Schedule.uniform(100, 5, b), cifar).avg_macs / G for b in range(1, 13)]
    for b, (mine, theirs) in enumerate(zip(ours, DEEPCACHE_CIFAR, strict=True), 1):
        assert mine == pytest.approx(theirs, rel=0.05), f"branch {b}"
    # SPEC §3, branch 3 at intervals 2/5/10 -> 4.15 / 3.01 / 2.63 G
    for n, theirs in [(2, 4.15), (5, 3.01), (10, 2.63)]:
        cost = schedule_cost(Schedule.uniform(100, n, 3), cifar)
        assert cost.avg_macs / G == pytest.approx(theirs, rel=0.05)


def _hook_count(unet, *args, **kwargs) -> int:
    """Conv2d/Linear MACs of the model's own forward, counted here (batch 1)."""
    total = 0

    def hook(module, inputs, out):
        nonlocal total
        w = module.weight
        per_output = w[0].numel() if isinstance(module, torch.nn.Conv2d) else w.shape[1]
        total += out[0].numel() * per_output

    layers = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        unet(*args, **kwargs)
    for h in handles:
        h.remove()
    return total


def test_full_macs_equal_the_models_own_forward():
    unet = meta_unet(REFERENCE_UNETS["sd15"])
    x = torch.zeros(1, 4, 64, 64, device="meta")
    context = torch.zeros(1, 77, 768, device="meta")
    expected = _hook_count(unet, x, torch.tensor([1], device="meta"), context)
    assert count_macs(REFERENCE_UNETS["sd15"]).full == expected


def test_partial_macs_grow_with_the_branch_and_the_deepest_skips_only_the_mid_block(cifar):
    assert cifar.max_branch == 12
    assert list(cifar.partial) == sorted(cifar.partial)
    assert cifar.partial[0] < 0.1 * cifar.full
    unet = meta_unet(REFERENCE_UNETS["ddpm-cifar10"])
    mid = _hook_count(unet.mid_block, torch.zeros(1, 256, 4, 4, device="meta"), unet_temb(unet))
    assert cifar.full - cifar.partial[-1] == mid


def unet_temb(unet):
    return torch.zeros(1, unet.time_embedding.linear_2.out_features, device="meta")


def test_counting_leaves_a_real_model_alone():
    unet = tiny.unet_cond()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    by_model, by_config = (
        count_macs(unet),
        count_macs(dict(unet.config, _class_name="UNet2DConditionModel")),
    )
    assert by_model == by_config
    assert all(not m._forward_hooks for m in unet.modules())
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items())


def test_sample_size_override():
    small = count_macs(REFERENCE_UNETS["ddpm-cifar10"], sample_size=16)
    assert small.full < count_macs(REFERENCE_UNETS["ddpm-cifar10"]).full / 3


def test_schedule_cost(cifar):
    full = schedule_cost(Schedule.full(100), cifar)
    assert (full.total_macs, full.nfe, full.speedup) == (100 * cifar.full, 100, 1.0)
    assert full.avg_macs == cifar.full
    s = Schedule("ddim", 10, 3, (Segment(2, 3), Segment(12, 1), Segment(5, 2)))
    cost = schedule_cost(s, cifar)
    expected = 3 * cifar.full + 2 * cifar.partial[1] + cifar.partial[4]
    assert cost.total_macs == expected and cost.avg_macs == expected / 10 and cost.nfe == 6
    assert cost.speedup == pytest.approx(cifar.full / (expected / 10))
    with pytest.raises(FlexoptError, match=r"branch 13 .*maximum is 12"):
        schedule_cost(Schedule.uniform(100, 5, 13), cifar)


def test_profile_json(cifar):
    data = cifar.to_json()
    assert set(data) == {"full_macs", "partial_macs", "max_branch"}
    assert list(data["partial_macs"]) == [str(b) for b in range(1, 13)]
    assert all(type(v) is int for v in [data["full_macs"], *data["partial_macs"].values()])
    assert "attention_macs" in cifar.to_json(attention=True)


def test_config_errors():
    with pytest.raises(FlexoptError, match="model class 'VQModel' is not supported; allowed:"):
        count_macs({"_class_name": "VQModel"})

"""Inception features: parity with the TF-weights TorchScript, image conversion, batching."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_fid_packages

from flexopt.errors import FlexoptError
from flexopt.metrics import FeatureStats, _fidelity, inception_features, load_inception, to_uint8
from flexopt.metrics import weights as W


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_fid_packages()
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def torchscript() -> torch.jit.ScriptModule:
    path = W._fid_helper_file()
    assert path is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def test_features_match_torchscript_at_299(cache: Path, torchscript) -> None:
    """The converted weights in torch-fidelity's network = the TF-weights TorchScript, to 1e-4."""
    images = random_images(3, 299)
    ours = inception_features(images, cache_dir=cache, device="cpu", allow_download=False)
    with torch.inference_mode():
        ref = torchscript((images.float() - 128) / 128).numpy()  # TF's input scaling, no resize
    assert ours.shape == (3, 2048) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-4


def test_channels_last_network_equals_default_layout(cache: Path) -> None:
    """The NHWC network (kept for speed) gives the default-layout network's features, to 1e-4."""
    images = random_images(4, 28, seed=3)
    extractor = load_inception(cache_dir=cache, device="cpu", allow_download=False)
    assert extractor.model.Conv2d_1a_3x3.conv.weight.is_contiguous(
        memory_format=torch.channels_last)
    fast = extractor(images)
    plain = copy.deepcopy(extractor.model).to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        (ref,) = plain(images)
    assert np.abs(fast - ref.numpy()).max() < 1e-4


def test_small_images_use_tf_exact_resize(cache: Path, torchscript) -> None:
    images = random_images(2, 32, seed=1)
    ours = inception_features(images, cache_dir=cache, device="cpu", batch_size=1)
    resize = _fidelity.fidelity_inception_module().interpolate_bilinear_2d_like_tensorflow1x
    with torch.inference_mode():
        big = resize(images.float(), size=(299, 299), align_corners=False)
        ref = torchscript((big - 128) / 128).numpy()
    assert np.abs(ours - ref).max() < 1e-4


def test_float_grayscale_and_numpy_inputs_agree(cache: Path) -> None:
    extractor = load_inception(cache_dir=cache, device="cpu", batch_size=2)
    assert extractor is not None and load_inception(cache_dir=cache).model is extractor.model
    gray = random_images(2, 16, seed=2)[:, :1]
    as_uint8 = extractor(gray.expand(-1, 3, -1, -1))
    as_float = extractor(gray.float() / 255)  # what a pipeline returns, rounded back exactly
    as_numpy = extractor(gray.numpy()[:, 0])  # N×H×W grayscale array
    np.testing.assert_array_equal(as_uint8, as_float)
    np.testing.assert_array_equal(as_uint8, as_numpy)
    # Teacher vs itself through the whole path scores 0.
    assert FeatureStats.from_features(as_uint8).frechet_to(as_float) == pytest.approx(0, abs=1e-6)


def test_to_uint8_rounds_like_diffusers() -> None:
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.5 / 255])
    # diffusers: pt_to_numpy casts to float32, then numpy_to_pil rounds (x * 255) half-to-even.
    expected = (x.float().numpy() * 255).round().astype("uint8")
    np.testing.assert_array_equal(to_uint8(x).numpy(), expected)
    assert to_uint8(torch.zeros(1, 1, 2, 2, dtype=torch.uint8)).shape == (1, 3, 2, 2)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.zeros(2, 4, 8, 8), r"N×3×H×W or N×1×H×W, got shape \(2, 4, 8, 8\)"),
        (torch.zeros(8, 8), "got shape"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.int32), "uint8 or float"),
        (torch.full((1, 3, 4, 4), -1.0), r"\[0, 1\].*got \[-1, -1\]"),
        (torch.full((1, 3, 4, 4), 2.0), r"\[0, 1\]"),
        ([1, 2, 3], "tensor or numpy array"),
    ],
)
def test_bad_images(images, match: str) -> None:
    with pytest.raises(FlexoptError, match=match):
        to_uint8(images)


def test_lower_precision_features_only_on_request(cache: Path) -> None:
    """float32 unless asked; bf16 autocast is close to it, not equal; other dtypes refused."""
    assert load_inception(cache_dir=cache, allow_download=False).dtype is None
    assert load_inception(cache_dir=cache, allow_download=False, dtype=torch.float32).dtype is None
    images = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    exact = load_inception(cache_dir=cache, allow_download=False)(images)
    low = load_inception(cache_dir=cache, allow_download=False, dtype=torch.bfloat16)(images)
    assert low.dtype == np.float32 and 0 < np.abs(low - exact).max() < 0.5
    with pytest.raises(FlexoptError, match=r"features dtype torch\.int8 is not supported"):
        load_inception(cache_dir=cache, allow_download=False, dtype=torch.int8)

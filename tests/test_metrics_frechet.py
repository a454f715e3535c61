"""Fréchet distance: parity with the scipy sqrtm reference, fast paths, FeatureStats storage."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from flexopt.errors import FlexoptError
from flexopt.metrics import FeatureStats, frechet_distance, sqrtm_psd


def sqrtm_fd(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The usual FID code (pytorch-fid / torch-fidelity): sqrtm of the product, real part."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # singular products
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def feature_sets(seed: int, n1: int, n2: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((n1, d)) @ mix + 0.3
    y = rng.standard_normal((n2, d)) @ (mix + 0.2 * rng.standard_normal((d, d)) / np.sqrt(d))
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize(
    ("n1", "n2", "d"),
    [(40, 30, 64), (100, 60, 256), (300, 200, 64), (100, 500, 128), (500, 400, 128)],
    ids=["N<d", "N<d-256", "N>d", "mixed", "N>=d-both"],
)
def test_matches_scipy_sqrtm(n1: int, n2: int, d: int) -> None:
    x, y = feature_sets(n1 + n2 + d, n1, n2, d)
    teacher = FeatureStats.from_features(x)
    cand = FeatureStats.from_features(y)
    ref = sqrtm_fd(teacher.mu, teacher.sigma, cand.mu, cand.sigma)
    fast = teacher.frechet_to(y)  # Gram form when n2 < d
    from_stats = teacher.frechet_to(FeatureStats(cand.mu, cand.sigma, cand.n))  # d×d form
    generic = frechet_distance(teacher.mu, teacher.sigma, cand.mu, cand.sigma)
    for value in (fast, from_stats, generic, teacher.frechet_to(cand)):
        assert value == pytest.approx(ref, rel=1e-6)
    # Our three paths agree far more closely than with sqrtm (inaccurate on singular products).
    assert fast == pytest.approx(generic, rel=1e-10)
    assert from_stats == pytest.approx(generic, rel=1e-10)


def test_stats_match_numpy_cov() -> None:
    x, _ = feature_sets(1, 50, 2, 16)
    stats = FeatureStats.from_features(x)
    np.testing.assert_allclose(stats.mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10)


def test_teacher_scores_zero_and_is_symmetric() -> None:
    x, y = feature_sets(2, 80, 60, 128)
    teacher = FeatureStats.from_features(x)
    cand = FeatureStats.from_features(y)
    assert abs(teacher.frechet_to(x)) < 1e-8 * teacher.trace_sigma
    ab = frechet_distance(teacher.mu, teacher.sigma, cand.mu, cand.sigma)
    ba = frechet_distance(cand.mu, cand.sigma, teacher.mu, teacher.sigma)
    assert ab == pytest.approx(ba, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    m1=st.floats(-5, 5),
    m2=st.floats(-5, 5),
    s1=st.floats(0.01, 10),
    s2=st.floats(0.01, 10),
)
def test_one_dimensional_closed_form(m1: float, m2: float, s1: float, s2: float) -> None:
    """N(m1, s1²) vs N(m2, s2²): FD = (m1 - m2)² + (s1 - s2)²."""
    fd = frechet_distance(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]]))
    assert fd == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-9, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 12), n=st.integers(2, 30))
def test_random_small_problems_match_sqrtm(seed: int, d: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    s1 = a @ a.T + 0.1 * np.eye(d)
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 3, d)
    teacher = FeatureStats(rng.standard_normal(d), s1, 100)
    cand = FeatureStats.from_features(x)
    ref = sqrtm_fd(teacher.mu, s1, cand.mu, cand.sigma)
    assert teacher.frechet_to(x) == pytest.approx(ref, rel=1e-6, abs=1e-8)


def test_sqrtm_psd_is_a_square_root() -> None:
    x, _ = feature_sets(3, 20, 2, 32)  # rank-deficient covariance
    sigma = np.cov(x.astype(np.float64), rowvar=False)
    root = sqrtm_psd(sigma)
    np.testing.assert_allclose(root @ root, sigma, atol=1e-10)
    np.testing.assert_allclose(root, root.T)


def test_save_load_roundtrip(tmp_path) -> None:
    x, y = feature_sets(4, 30, 20, 16)
    stats = FeatureStats.from_features(x)
    path = stats.save(tmp_path / "sub" / "teacher.npz", with_sqrt=True)
    assert [p.name for p in path.parent.iterdir()] == ["teacher.npz"]  # no temp file left behind
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"format", "mu", "sigma", "n", "features", "sqrt_sigma"}
    back = FeatureStats.load(path)
    assert back.n == 30
    np.testing.assert_array_equal(back.features, x)
    np.testing.assert_array_equal(back.sigma, stats.sigma)
    assert "sqrt_sigma" in back.__dict__  # seeded from the file, not recomputed
    assert back.frechet_to(y) == pytest.approx(stats.frechet_to(y), rel=1e-12)

    slim = FeatureStats.from_features(x, keep_features=False)
    back = FeatureStats.load(slim.save(tmp_path / "slim.npz"))
    assert back.features is None and "sqrt_sigma" not in back.__dict__


def test_load_errors(tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(FlexoptError, match=r"bad\.npz"):
        FeatureStats.load(bad)
    np.savez(tmp_path / "fmt.npz", format=np.array("other/1"), mu=np.zeros(2), sigma=np.eye(2), n=2)
    with pytest.raises(FlexoptError, match="format 'other/1'"):
        FeatureStats.load(tmp_path / "fmt.npz")
    arrays = FeatureStats.from_features(np.eye(3)).to_arrays()
    arrays["sigma"] = np.eye(2)
    with pytest.raises(FlexoptError, match="inconsistent"):
        FeatureStats.from_arrays(arrays)
    del arrays["mu"]
    with pytest.raises(FlexoptError, match="mu"):
        FeatureStats.from_arrays(arrays)


def test_input_errors() -> None:
    teacher = FeatureStats.from_features(np.random.default_rng(0).standard_normal((10, 8)))
    with pytest.raises(FlexoptError, match="N×8"):
        teacher.frechet_to(np.zeros((10, 7)))
    with pytest.raises(FlexoptError, match="at least 2"):
        teacher.frechet_to(np.zeros((1, 8)))
    with pytest.raises(FlexoptError, match="NaN"):
        teacher.frechet_to(np.full((3, 8), np.nan))
    with pytest.raises(FlexoptError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(FlexoptError, match="at least 2"):
        FeatureStats.from_features(np.zeros((1, 8)))

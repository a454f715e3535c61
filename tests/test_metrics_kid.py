"""KID and the paired distance against straightforward loop implementations; `score` by name."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flexopt.errors import FlexoptError
from flexopt.metrics import METRICS, FeatureStats, check_metric, kid, paired_distance, score


def naive_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Bińkowski et al.'s unbiased MMD², k(a, b) = (a·b/d + 1)³, written out pair by pair."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(np.dot(a.astype(np.float64), b.astype(np.float64))) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def features(seed: int, n: int, d: int = 32, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(rng.standard_normal((n, d)) + shift).astype(np.float32)


@pytest.mark.parametrize(("m", "n"), [(12, 12), (15, 9), (2, 3)])
def test_kid_matches_naive(m: int, n: int) -> None:
    x, y = features(0, m), features(1, n, shift=0.3)
    assert kid(x, y) == pytest.approx(naive_kid(x, y), rel=1e-10, abs=1e-12)
    teacher = FeatureStats.from_features(x)
    assert teacher.kid_to(y) == pytest.approx(naive_kid(x, y), rel=1e-10, abs=1e-12)
    assert "kid_kxx" in teacher.__dict__  # the teacher term is kept for the next candidate


def test_kid_equal_size_matches_torch_fidelity_formula() -> None:
    """torch-fidelity's mmd2 (unbiased, equal sizes): (ΣK̃xx + ΣK̃yy)/(m(m-1)) - 2ΣKxy/m²."""
    x, y = features(2, 20).astype(np.float64), features(3, 20, shift=0.5).astype(np.float64)
    kxx, kyy, kxy = ((a @ b.T / x.shape[1] + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m = len(x)
    ref = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    ref -= 2 * kxy.sum() / m**2
    assert kid(x, y) == pytest.approx(float(ref), rel=1e-10)


def test_kid_separates_shifted_sets() -> None:
    x = features(4, 60)
    near, far = features(5, 60), features(6, 60, shift=1.0)
    assert abs(kid(x, near)) < kid(x, far)


def test_paired_distance() -> None:
    x, y = features(7, 10), features(8, 10)
    ref = np.mean([np.sqrt(((a.astype(float) - b) ** 2).sum()) for a, b in zip(x, y, strict=True)])
    assert paired_distance(x, y) == pytest.approx(ref, rel=1e-12)
    assert paired_distance(x, x) == 0.0
    with pytest.raises(FlexoptError, match="same shape"):
        paired_distance(x, y[:9])


def test_score_by_name() -> None:
    x, y = features(9, 16), features(10, 16, shift=0.2)
    teacher = FeatureStats.from_features(x)
    assert set(METRICS) == {"rfid", "kid", "paired"}
    assert score("rfid", teacher, y) == pytest.approx(teacher.frechet_to(y))
    assert score("kid", teacher, y) == pytest.approx(kid(x, y))
    assert score("paired", teacher, y) == pytest.approx(paired_distance(x, y))
    assert score("rfid", teacher, x) == pytest.approx(0.0, abs=1e-9)
    assert score("paired", teacher, x) == 0.0
    assert check_metric("kid") == "kid"


def test_unknown_metric_names_allowed_ones() -> None:
    teacher = FeatureStats.from_features(features(11, 4))
    with pytest.raises(FlexoptError, match=r"unknown metric 'fld'.*rfid, kid, paired, fid"):
        score("fld", teacher, features(12, 4))


def test_metrics_needing_raw_teacher_features() -> None:
    x = features(13, 8)
    slim = FeatureStats.from_features(x, keep_features=False)
    assert slim.frechet_to(x) == pytest.approx(0.0, abs=1e-9)  # rFID needs only μ, Σ
    for name in ("kid", "paired"):
        with pytest.raises(FlexoptError, match="raw features"):
            score(name, slim, x)


def test_kid_shape_errors() -> None:
    with pytest.raises(FlexoptError, match="N×d"):
        kid(features(14, 4, d=8), features(15, 4, d=9))
    with pytest.raises(FlexoptError, match="at least 2"):
        kid(features(16, 1), features(17, 4))

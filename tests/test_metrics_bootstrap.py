"""Paired bootstrap of FID: values and resamples checked against scipy's sqrtm FID, pairing."""

from __future__ import annotations

import numpy as np
import pytest
from test_metrics_frechet import sqrtm_fd

from flexopt.errors import FlexoptError
from flexopt.metrics import FeatureStats, paired_bootstrap

D = 16


def data(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)) @ (rng.standard_normal((D, D)) / np.sqrt(D))


def scipy_fid(reference: FeatureStats, x: np.ndarray) -> float:
    return sqrtm_fd(reference.mu, reference.sigma, x.mean(axis=0), np.cov(x, rowvar=False))


@pytest.fixture(scope="module")
def reference() -> FeatureStats:
    return FeatureStats.from_features(data(0, 400))


@pytest.mark.parametrize("n", [120, 12])  # the d×d form, and the N×N one (N < d)
def test_values_and_resamples_match_the_scipy_fid_on_the_same_rows(reference, n):
    a, b = data(1, n) + 0.2, data(2, n)
    boot = paired_bootstrap(reference, [a, b], resamples=4, seed=7)
    # scipy's sqrtm of a singular product (N < d) is good to ~1e-7
    rel = 1e-9 if n > D else 1e-6
    assert boot.values == pytest.approx([scipy_fid(reference, a), scipy_fid(reference, b)],
                                        rel=rel)
    rng = np.random.default_rng(7)  # the resamples: the same rows for both sets, in order
    for row in boot.replicates:
        idx = rng.integers(0, n, n)
        assert row == pytest.approx([scipy_fid(reference, a[idx]), scipy_fid(reference, b[idx])],
                                    rel=rel)


def test_a_resample_from_its_distinct_rows_equals_the_repeated_rows():
    """The N×N forms work on a resample's distinct rows weighted by their counts: the same FD as
    the repeated rows themselves, to round-off (both sides' code paths, d = 64 > N = 40)."""
    from flexopt.metrics import frechet_between
    from flexopt.metrics.bootstrap import _PairedGrams, _StatsGrams

    rng = np.random.default_rng(3)
    mix = rng.standard_normal((64, 64)) / 8
    teacher = rng.standard_normal((40, 64)) @ mix
    x = teacher + 0.4 * rng.standard_normal((40, 64)) @ mix + 0.1
    ref = FeatureStats.from_features(rng.standard_normal((300, 64)) @ mix)
    stats_side, paired_side = _StatsGrams(ref, x), _PairedGrams(teacher, teacher @ teacher.T, x)
    for _ in range(5):
        idx = rng.integers(0, 40, 40)
        counts = np.bincount(idx, minlength=40)
        rows = np.flatnonzero(counts)
        assert len(rows) < 40  # some rows repeated, some left out
        w = counts[rows].astype(np.float64)
        assert stats_side.frechet(rows, w) == pytest.approx(ref.frechet_to(x[idx]), rel=1e-9)
        assert paired_side.frechet(rows, w) == pytest.approx(
            frechet_between(teacher[idx], x[idx]), rel=1e-9)


def test_pairing_cancels_the_noise_the_sets_share(reference):
    # b is a, slightly perturbed: each FID moves with the resample, their difference barely
    x = data(3, 300)
    a = x + 0.1
    b = x + 0.1 + 0.02 * np.random.default_rng(4).standard_normal(x.shape)
    boot = paired_bootstrap(reference, [a, b], resamples=60, seed=0)
    diff = boot.difference(1, 0)
    assert diff.value == pytest.approx(boot.values[1] - boot.values[0])
    assert diff.se < 0.1 * min(boot.se(0), boot.se(1))
    # unpaired (independent resamples per set), the difference's spread is that of the FIDs
    rng = np.random.default_rng(0)
    unpaired = [scipy_fid(reference, a[rng.integers(0, 300, 300)])
                - scipy_fid(reference, b[rng.integers(0, 300, 300)]) for _ in range(60)]
    assert np.std(unpaired, ddof=1) > 5 * diff.se


def test_the_interval_finds_a_real_difference_and_not_a_null_one(reference):
    x = data(5, 300)
    same = paired_bootstrap(reference, [x, x.copy()], resamples=20, seed=1).difference(1, 0)
    assert (same.value, same.se, same.low, same.high) == (0.0, 0.0, 0.0, 0.0)
    assert not same.excludes_zero()
    worse = paired_bootstrap(reference, [x, x + 0.5], resamples=50, seed=1).difference(1, 0)
    assert worse.value > 0 and worse.low > 0 and worse.excludes_zero()
    assert worse.low <= worse.value <= worse.high and worse.level == 0.95
    assert "95% interval" in str(worse)


def test_the_interval_is_the_levels_percentiles_of_the_resampled_differences(reference):
    """... moved by their mean lift, so it sits around the measured difference."""
    a, b = data(6, 80), data(7, 80) + 0.1
    boot = paired_bootstrap(reference, [a, b], resamples=30, seed=2, level=0.8)
    diffs = boot.replicates[:, 1] - boot.replicates[:, 0]
    d = boot.difference(1, 0)
    lift = diffs.mean() - d.value  # the resamples' shift, taken out
    assert (d.low, d.high) == pytest.approx(np.quantile(diffs, [0.1, 0.9]) - lift, rel=1e-12)
    assert d.se == pytest.approx(np.std(diffs, ddof=1), rel=1e-12) and d.level == 0.8
    assert boot.se(0) == pytest.approx(np.std(boot.replicates[:, 0], ddof=1), rel=1e-12)
    assert boot.difference(0, 1).value == -d.value


@pytest.mark.parametrize(
    ("sets", "resamples", "level", "message"),
    [
        ([], 10, 0.95, "at least one feature set"),
        ([data(1, 30), data(2, 31)], 10, 0.95, "same images .rows., got 30, 31"),
        ([data(1, 30)], 1, 0.95, "at least 2 resamples, got 1"),
        ([data(1, 30)], 2.5, 0.95, "an integer of at least 2 resamples, got 2.5"),
        (data(1, 30), 10, 0.95, r"a list of N×d arrays .one per schedule., not one array of "
                                r"shape \(30, 16\)"),
        ([data(1, 30)], 10, 1.0, r"level must be in \(0, 1\), got 1.0"),
        ([np.zeros((30, D + 1))], 10, 0.95, "N×16 array"),
    ],
)
def test_bad_input_is_named(reference, sets, resamples, level, message):
    with pytest.raises(FlexoptError, match=message):
        paired_bootstrap(reference, sets, resamples, level=level)


@pytest.mark.parametrize("n", [12, 40])  # the N×N Gram form (N < d) and the d×d form
def test_a_paired_reference_is_resampled_with_the_same_rows(n):
    """rFID's reference is the teacher's images from the same noises: each resample takes the
    same rows of its features, and the value equals scipy's FID on those rows."""
    teacher = data(3, n)
    a, b = teacher + 0.3 * data(4, n), teacher + 0.6 * data(5, n)
    stats = FeatureStats.from_features(teacher)
    boot = paired_bootstrap(stats, [a, b], resamples=5, seed=11, reference_features=teacher)
    # scipy's sqrtm of a singular product (N < d) is good to ~1e-7
    assert boot.values == pytest.approx([scipy_fid(stats, a), scipy_fid(stats, b)], rel=1e-6)
    rng = np.random.default_rng(11)
    for row in boot.replicates:
        idx = rng.integers(0, n, n)
        ref = FeatureStats.from_features(teacher[idx])
        assert row == pytest.approx([scipy_fid(ref, a[idx]), scipy_fid(ref, b[idx])],
                                    rel=1e-6, abs=1e-9)


def test_frechet_between_raw_sets_equals_scipy():
    from flexopt.metrics import frechet_between

    x, y = data(6, 10), data(7, 13) + 0.1  # fewer images than dimensions: singular covariances
    assert frechet_between(x, y) == pytest.approx(
        sqrtm_fd(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)),
        rel=1e-6)
    x, y = data(8, 60), data(9, 50)
    assert frechet_between(x, y) == pytest.approx(
        sqrtm_fd(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)),
        rel=1e-9)


def test_a_paired_reference_needs_the_same_rows(reference):
    with pytest.raises(FlexoptError, match="paired with the sets' images: 7 rows"):
        paired_bootstrap(reference, [data(1, 8)], 3, reference_features=data(2, 7))


def test_the_interval_sits_around_the_value_when_the_sets_differ_a_lot():
    """rFID of a set far from the teacher and one close to it: a resample repeats images, which
    lifts the far set's rFID more, so every resampled difference exceeds the measured one (the
    validate table's DDIM-quadratic row, docs/metrics.md). The interval is moved back by that
    mean lift and contains the measured difference again."""
    d = 64
    mix = np.random.default_rng(0).standard_normal((d, d)) / np.sqrt(d)

    def feats(seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((100, d)) @ mix

    teacher = feats(3)
    close, far = teacher + 0.3 * feats(4), teacher + feats(5)
    boot = paired_bootstrap(FeatureStats.from_features(teacher), [far, close], resamples=300,
                            seed=0, reference_features=teacher)
    diffs = boot.replicates[:, 0] - boot.replicates[:, 1]
    diff = boot.difference(0, 1)
    plain = np.quantile(diffs, [0.025, 0.975])
    assert diff.value < plain[0]  # the plain percentile interval misses the measured value
    assert diff.low < diff.value < diff.high
    assert diff.high - diff.low == pytest.approx(plain[1] - plain[0], rel=1e-12)
